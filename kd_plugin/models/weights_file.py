"""Weights as safetensors: tensors only (nothing executes on load), the architecture in the file's header.

Written by ``kd-plugin export --format safetensors``; read by ``create_model(arch, weights=PATH)``.
"""
import json

from ..util.errors import KDPluginError
from ..util.fileio import atomic_write
from ..util.normalization import Normalization, from_record
from ..util.optional import require

ARCH_KEY = "arch"
CONFIG_KEY = "model_config"  # JSON of the factory's arguments, for networks that have them (ensemble_cifar)


def save_safetensors(model, path, metadata):
    """The model's state_dict (contiguous CPU copies) with string METADATA (must include the arch)."""
    torch_io = require("safetensors.torch", "safetensors export")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if hasattr(model, "model_config"):
        metadata = {**metadata, CONFIG_KEY: json.dumps(model.model_config())}
    payload = torch_io.save(state, metadata={k: str(v) for k, v in metadata.items()})
    return atomic_write(path, lambda fh: fh.write(payload))  # a full disk keeps any earlier file, one line


def read_safetensors(path):
    """(state_dict, metadata) of a safetensors file; a one-line error for anything unreadable."""
    torch_io = require("safetensors.torch", "reading safetensors weights")
    safetensors = require("safetensors", "reading safetensors weights")
    try:
        with safetensors.safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
        return torch_io.load_file(path), metadata
    except FileNotFoundError:
        raise KDPluginError(f"{path}: weights file not found") from None
    except Exception as err:  # safetensors raises its own SafetensorError, OSError, ...
        raise KDPluginError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from None


def recorded_config(path: str) -> dict:
    """The factory arguments a safetensors file records (CONFIG_KEY), or {}."""
    text = read_safetensors(path)[1].get(CONFIG_KEY)
    try:
        config = json.loads(text) if text else {}
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise KDPluginError(f"{path}: its {CONFIG_KEY} entry is not a JSON mapping")
    from .registry import check_model_config

    return check_model_config(config, f"{path}: {CONFIG_KEY}")


def recorded_normalization(metadata: dict[str, str], path: str) -> Normalization | None:
    """The input normalization a file's header records (``kd-plugin export`` writes mean and std as comma lists),
    or None for a file without one."""
    if "mean" not in metadata and "std" not in metadata:
        return None
    try:
        record = {"name": metadata.get("normalization", "custom"),
                  "mean": [float(v) for v in metadata.get("mean", "").split(",")],
                  "std": [float(v) for v in metadata.get("std", "").split(",")]}
    except ValueError:
        raise KDPluginError(f"{path}: malformed mean/std in the file's header") from None
    return from_record(record, path)


def load_safetensors(model, path):
    """Load PATH strictly into MODEL, refusing weights recorded for another architecture; returns the input
    normalization the file records (None when it records none)."""
    state, metadata = read_safetensors(path)
    recorded = metadata.get(ARCH_KEY)
    if recorded and recorded != model.arch:
        raise KDPluginError(f"{path}: weights are a {recorded}, not the requested {model.arch}")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
    if missing or unexpected:
        raise KDPluginError(f"{path}: weights do not fit {model.arch} (missing {missing}, unexpected {unexpected})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise KDPluginError(f"{path}: weights do not fit {model.arch} ({str(err).splitlines()[-1].strip()})") from None
    return recorded_normalization(metadata, path)
