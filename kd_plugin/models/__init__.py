"""The model zoo. Importing this package registers every network."""
from . import cifar100_zoo, cnn5_cifar, ensembles, resnet_cifar, vgg_cifar  # noqa: F401  (registration side effects)
from .registry import (
    create_model,
    dataset_of,
    default_cfg,
    is_model,
    list_aliases,
    list_models,
    register_model,
    resolve_arch,
)

__all__ = ["create_model", "dataset_of", "default_cfg", "is_model", "list_aliases", "list_models", "register_model",
           "resolve_arch"]
