"""What a shipped file must say about the network so that a user feeds it correctly."""
from ..data import CLASS_NAMES, default_classes, list_datasets
from ..models import dataset_of
from ..util.normalization import normalization_of

INPUT_SIZE = (3, 32, 32)


def classes_of(model, arch):
    """The class names MODEL was trained on: its own (from the dataset or checkpoint), else the names of the
    dataset its architecture is named for."""
    own = getattr(getattr(model, "module", model), "classes", None)
    if own is not None:
        return tuple(own)
    implied = dataset_of(arch)
    return default_classes(implied) if implied in list_datasets() else CLASS_NAMES


def model_identity(model, arch, classes=None):
    """The network's identity for a shipped file; its input normalization is the one the network itself expects
    (the checkpoint's record or --normalization, as loaded), x = (pixel / 255 - mean) / std per RGB channel."""
    norm = normalization_of(model)
    input_size = getattr(model, "pretrained_cfg", {}).get("input_size", INPUT_SIZE)
    return {"arch": arch, "classes": list(classes or classes_of(model, arch)),
            "input": "float32 NCHW RGB, (pixel / 255 - mean) / std", "input_size": list(input_size),
            "normalization": norm.name, "mean": list(norm.mean), "std": list(norm.std)}


def as_strings(identity):
    """Flat string key/values for ONNX metadata_props and safetensors headers (lists as comma lists)."""
    return {k: ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v) for k, v in identity.items()}
