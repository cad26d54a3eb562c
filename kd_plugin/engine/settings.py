"""Devices a run may use. What a run is asked to do is its spec (kd_plugin.spec.RunSpec)."""
from ..util.errors import KDPluginError


def check_device(name):
    """NAME ('cpu', 'cuda', 'cuda:N'), refused when it names a GPU this machine does not have."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KDPluginError(f"--device {name}: no CUDA device is available")
    return name


def pick_device(cpu=False, gpus=None):
    """Distiller's --cpu/--gpus: the first listed GPU, any GPU, or the CPU."""
    import torch

    if cpu or not torch.cuda.is_available():
        return "cpu"
    if gpus:
        try:
            return f"cuda:{int(gpus.split(',')[0])}"
        except ValueError:
            raise KDPluginError(f"--gpus must be comma-separated integers, got {gpus!r}") from None
    return "cuda"
