"""The checks of a run spec that need the registries (datasets, losses, models) or relate fields to each other."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..data import get_dataset
from ..distill.losses import check_temperature, create_loss
from ..distill.teacher import teacher_members
from ..util.errors import KDPluginError
from ..util.normalization import parse_normalization
from ..util.rundir_names import check_run_name

if TYPE_CHECKING:
    from .run import RunSpec


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def max_threads() -> int:
    """More threads than this only slow a run down; far more end in a crash inside OpenMP (segfault)."""
    return 4 * usable_cores()


def check_meaning(spec: RunSpec) -> None:
    """KDPluginError, with the flag's name, for the first setting that cannot work."""
    data, kd, runtime = spec.data, spec.distillation, spec.runtime
    if data.dataset is not None:
        get_dataset(data.dataset)
    if data.normalization is not None:
        parse_normalization(data.normalization)
    if runtime.name is not None:
        check_run_name(runtime.name)
    if runtime.threads is not None and runtime.threads > max_threads():
        raise KDPluginError(f"--threads must be an integer from 1 to {max_threads()} (4 x the {usable_cores()} CPU "
                            f"cores this process may use), got {runtime.threads!r}")
    if kd.temperature is not None:
        check_temperature(kd.temperature, "--kd-temperature")
    if kd.loss is not None or not spec.schedule.file:  # else the schedule's loss is checked with its file
        create_loss(kd.loss or "kd", temperature=kd.temperature, logit_standardize=bool(kd.logit_standardize),
                    **(kd.loss_args or {}))
    if kd.teacher_arch:
        teacher_members(kd.teacher_arch, kd.teacher_checkpoint, kd.teacher_weights)
    if kd.start_epoch is not None and kd.start_epoch >= spec.schedule.epochs:
        raise KDPluginError(f"--kd-start-epoch must be in 0..{spec.schedule.epochs - 1}, got {kd.start_epoch!r}")
    peers = spec.mutual.peers
    if peers is not None:
        if len(peers) < 2:
            raise KDPluginError(f"--mutual needs two or more peers, got {peers!r}")
        if kd.teacher_arch or kd.teacher_checkpoint:
            raise KDPluginError("--mutual trains its peers together from scratch; it does not take "
                                "--kd-teacher/--kd-resume")
        if spec.model.load_weights_from:
            raise KDPluginError("--exp-load-weights-from loads one model; it does not go with --mutual")
        given = kd.declared()
        if given:
            raise KDPluginError(f"--mutual trains its peers with mutual learning's own loss (--mutual-temperature); "
                                f"it does not take {', '.join(given)}")
