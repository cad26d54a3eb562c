"""What a shipped file must say about the network so that a user feeds it correctly."""
from ..data import CLASS_NAMES
from ..data.augment import MEAN, STD

INPUT_SIZE = (3, 32, 32)


def normalization(model=None):
    """The model's input normalization, x = (pixel / 255 - mean) / std per RGB channel.

    The one place exports read it from: today every kd-plugin network uses the original's constants.
    """
    return {"mean": [float(v) for v in MEAN], "std": [float(v) for v in STD]}


def model_identity(model, arch, classes=CLASS_NAMES):
    norm = normalization(model)
    return {"arch": arch, "classes": list(classes), "input": "float32 NCHW RGB, (pixel / 255 - mean) / std",
            "input_size": list(INPUT_SIZE), "mean": norm["mean"], "std": norm["std"]}


def as_strings(identity):
    """Flat string key/values for ONNX metadata_props and safetensors headers (lists as comma lists)."""
    return {k: ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v) for k, v in identity.items()}
