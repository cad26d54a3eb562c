from .augment import MEAN, NUM_VIEWS, STD, Normalizer, apply_views
from .cifar10 import CLASS_NAMES, ImageSet, download_cifar10, validation_split
from .datasets import (
    DEFAULT_DATASET,
    Dataset,
    add_dataset_arg,
    default_classes,
    detect_datasets,
    download_dataset,
    get_dataset,
    list_datasets,
    load_split,
    register_dataset,
    resolve_dataset,
    write_synthetic,
)
from .loader import Batch, TensorLoader
from .renormalize import Renormalizer, install_input_adapter, to_model_input
from .synthetic import write_synthetic_cifar

__all__ = ["MEAN", "STD", "NUM_VIEWS", "Normalizer", "apply_views", "CLASS_NAMES", "ImageSet", "download_cifar10",
           "load_split", "validation_split", "Batch", "TensorLoader", "write_synthetic_cifar", "Renormalizer",
           "install_input_adapter", "to_model_input", "DEFAULT_DATASET", "Dataset", "default_classes",
           "detect_datasets", "download_dataset", "get_dataset", "list_datasets", "register_dataset",
           "resolve_dataset", "write_synthetic", "add_dataset_arg"]
