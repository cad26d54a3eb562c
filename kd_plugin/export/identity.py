"""What a shipped file must say about the network so that a user feeds it correctly."""
from ..data import CLASS_NAMES
from ..util.normalization import normalization_of

INPUT_SIZE = (3, 32, 32)


def model_identity(model, arch, classes=CLASS_NAMES):
    """The network's identity for a shipped file; its input normalization is the one the network itself expects
    (the checkpoint's record or --normalization, as loaded), x = (pixel / 255 - mean) / std per RGB channel."""
    norm = normalization_of(model)
    return {"arch": arch, "classes": list(classes), "input": "float32 NCHW RGB, (pixel / 255 - mean) / std",
            "input_size": list(INPUT_SIZE), "normalization": norm.name, "mean": list(norm.mean),
            "std": list(norm.std)}


def as_strings(identity):
    """Flat string key/values for ONNX metadata_props and safetensors headers (lists as comma lists)."""
    return {k: ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v) for k, v in identity.items()}
