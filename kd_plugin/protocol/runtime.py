"""Where a training run's Distiller-protocol classes come from: a registry of backends.

The engine (data, model, loop, checkpoints) is the same either way; only the scheduler, the schedule parser
and the policy classes differ. ``kd_plugin.distill`` registers ``builtin`` (kd-plugin's own scheduler, parser
and policies with its KD policy), ``kd_plugin.bridge`` registers ``distiller`` (Distiller's own classes with
kd-plugin's KD logic on top); ``auto`` picks Distiller when it is importable. This module imports neither.
"""
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..util.errors import KDPluginError

BACKENDS = ("auto", "builtin", "distiller")
DEFAULT_BACKEND = "auto"  # every entry point's --backend default


class BackendUnavailable(KDPluginError):
    """The backend's library cannot be imported (Distiller, for ``distiller``)."""


@dataclass(frozen=True)
class Runtime:
    name: str
    CompressionScheduler: type
    ScheduledTrainingPolicy: type
    PolicyLoss: type
    LossComponent: type
    KnowledgeDistillationPolicy: type
    read_schedule: Callable  # (path) -> validated schedule dict
    dict_config: Callable  # (model, optimizer, sched_dict, scheduler, resumed_epoch, overrides, source) -> scheduler


_FACTORIES = {}  # backend name -> () -> Runtime (may raise BackendUnavailable)
_PROBES = {}  # backend name -> () -> bool: importable without importing it


def register_backend(name, factory, available=lambda: True):
    _FACTORIES[name] = factory
    _PROBES[name] = available


def distiller_importable():
    return importlib.util.find_spec("distiller") is not None


def select_runtime(backend=DEFAULT_BACKEND):
    """The runtime for BACKEND; ``auto`` falls back to the built-in one when Distiller cannot be imported."""
    if backend not in BACKENDS:
        raise KDPluginError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    builtin = _FACTORIES["builtin"]
    if backend == "builtin" or (backend == "auto" and not _PROBES["distiller"]()):
        return builtin()
    try:
        return _FACTORIES["distiller"]()
    except BackendUnavailable as err:
        if backend == "distiller":
            raise BackendUnavailable(f"--backend distiller: {err}") from None
        print(f"compress_classifier: {err}; using the built-in runtime", file=sys.stderr)
        return builtin()


def uses_distiller_components(backend):
    """Whether a schedule may hold Distiller-only sections (pruners, ...): any backend but ``builtin``."""
    return backend != "builtin"
