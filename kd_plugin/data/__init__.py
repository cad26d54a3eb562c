from .augment import MEAN, NUM_VIEWS, STD, Normalizer, apply_views
from .cifar10 import CLASS_NAMES, ImageSet, download_cifar10, load_split, validation_split
from .loader import Batch, TensorLoader
from .renormalize import Renormalizer, install_input_adapter, to_model_input
from .synthetic import existing_dataset_files, write_synthetic_cifar

__all__ = ["MEAN", "STD", "NUM_VIEWS", "Normalizer", "apply_views", "CLASS_NAMES", "ImageSet", "download_cifar10",
           "load_split", "validation_split", "Batch", "TensorLoader", "existing_dataset_files", "write_synthetic_cifar", "Renormalizer",
           "install_input_adapter", "to_model_input"]
