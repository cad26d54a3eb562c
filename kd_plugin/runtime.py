"""Where a training run's Distiller-protocol classes come from: kd-plugin's own runtime or Distiller's.

The engine (data, model, loop, checkpoints) is the same either way; only the scheduler, the schedule parser
and the policy classes differ. ``--backend builtin`` uses ``kd_plugin.scheduler``/``config``/``policy``;
``--backend distiller`` uses ``distiller.CompressionScheduler``, ``distiller.config.dict_config`` and
Distiller's policy base classes, with kd-plugin's KD logic on top (``kd_plugin.bridge``); ``auto`` picks
Distiller when it is importable.
"""
import importlib.util
import sys
from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import config, policy, scheduler
from .errors import KDPluginError
from .knowledge_distillation import KnowledgeDistillationPolicy

BACKENDS = ("auto", "builtin", "distiller")


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


BUILTIN = Runtime("builtin", scheduler.CompressionScheduler, policy.ScheduledTrainingPolicy, policy.PolicyLoss,
                  policy.LossComponent, KnowledgeDistillationPolicy, config.read_schedule, config.dict_config)


def select_runtime(backend="builtin"):
    """The runtime for BACKEND; ``auto`` falls back to the built-in one when Distiller cannot be imported."""
    if backend not in BACKENDS:
        raise KDPluginError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "builtin" or (backend == "auto" and importlib.util.find_spec("distiller") is None):
        return BUILTIN
    from .bridge import DistillerUnavailable, distiller_runtime

    try:
        return distiller_runtime()
    except DistillerUnavailable as err:
        if backend == "distiller":
            raise DistillerUnavailable(f"--backend distiller: {err}") from None
        print(f"compress_classifier: {err}; using the built-in runtime", file=sys.stderr)
        return BUILTIN


def schedule_reader(backend):
    """How to read a schedule before the runtime exists (flags default from its ``training:`` section)."""
    return config.read_schedule if backend == "builtin" else partial(config.read_schedule, distiller_components=True)
