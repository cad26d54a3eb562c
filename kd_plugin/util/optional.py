"""Optional dependencies: imported only where needed, and a one-line 'what to install' when missing."""
import importlib

from .errors import KDPluginError

EXTRAS = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "safetensors": "export",
          "matplotlib": "plots"}


def require(module, purpose):
    """Import MODULE or raise a KDPluginError naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = f"pip install 'kd-plugin[{extra}]'" if extra else f"pip install {top}"
        raise KDPluginError(f"{purpose} needs the {top} package: {how}") from None
