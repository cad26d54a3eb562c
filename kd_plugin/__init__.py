"""kd-plugin: knowledge distillation for CIFAR-10 classifiers, as an IntelLabs Distiller plugin."""
from . import distill  # noqa: F401  (registers the builtin backend and KD's schedule components)
from .bridge import register_with_distiller  # also registers the distiller backend
from .models import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "register_with_distiller", "__version__"]
