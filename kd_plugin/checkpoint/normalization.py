"""The one resolver of the input normalization a network is fed (timm's ``resolve_data_config``: the user's
argument, else what the weights were trained with, else the model's default)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..data import get_dataset
from ..models import dataset_of, default_cfg, resolve_arch
from ..util.normalization import Normalization, parse_normalization

if TYPE_CHECKING:
    from .files import Checkpoint


def resolve_normalization(flag: str | None = None, checkpoint: Checkpoint | None = None, arch: str | None = None,
                          dataset: str | None = None) -> tuple[Normalization, str]:
    """(Normalization, why) for every command that feeds a network (training, evaluate, export and its ONNX
    check, the Distiller bridge): FLAG (--normalization, a name or mean,std), else the CHECKPOINT's record (or the
    documented assumption for a file without one), else the ARCH's registered default on the dataset it is named
    for, else the DATASET's default (a ``_cifar`` network trained on CIFAR-100)."""
    if flag is not None:
        return parse_normalization(flag), "--normalization"
    if checkpoint is not None:
        return checkpoint.recorded_normalization()
    if arch is None:
        raise ValueError("resolve_normalization needs a flag, a checkpoint or an architecture")
    arch = resolve_arch(arch)
    if dataset is not None and dataset not in (dataset_of(arch), None):
        default = get_dataset(dataset).default_normalization
        if default is not None:
            return default, f"the default of {dataset}"
    return default_cfg(arch)["normalization"], f"the default of {arch}"
