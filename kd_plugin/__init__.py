"""kd-plugin: knowledge distillation for CIFAR-10 classifiers, as an IntelLabs Distiller plugin."""
from .models import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "__version__"]
