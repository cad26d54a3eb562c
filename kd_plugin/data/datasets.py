"""The dataset registry: one entry per dataset (reader, classes, default normalization, input size,
augmentation, generator, download), chosen by name (``--dataset NAME``, ``training: {dataset: NAME}``) or
inferred where that is unambiguous, as Distiller infers it from the architecture's name.

Inference (``resolve_dataset``): an explicit name wins (and must agree with what the folder holds); else the
folder's layout names it (CIFAR-10 batches, CIFAR-100 files, an image folder); a folder that matches none
takes the dataset the architecture's name implies (``resnet8x4_cifar100`` -> cifar100), else cifar10. A folder
whose layout contradicts the architecture's dataset, or that matches two layouts, is refused with one line.

Adding a dataset is one ``register_dataset`` call (here or in the dataset's own module) plus its tests.
"""
from collections.abc import Callable
from dataclasses import dataclass

from ..util.errors import KDPluginError
from ..util.normalization import Normalization, get_normalization
from . import cifar10, cifar100, imagefolder
from .augment import NUM_VIEWS
from .cifar10 import ImageSet
from .synthetic import write_synthetic_cifar


@dataclass(frozen=True)
class Dataset:
    """One registered dataset. CLASSES is None where the data names them (an image folder's subfolders)."""

    name: str
    description: str
    load: Callable[[str, str], ImageSet]  # (data directory, "train" | "test") -> ImageSet
    detect: Callable[[str], bool]  # does a directory hold this dataset's files?
    normalization: str  # registered name (kd_plugin.util.normalization) of the default input normalization
    classes: tuple = None
    input_size: tuple = (3, 32, 32)
    augmentations: tuple = tuple(NUM_VIEWS)  # "y": crop 32 with 4 pixels of padding + flip; "n": none
    download: Callable[[str], str] = None
    write_synthetic: Callable[..., str] = None  # (root, train_images, test_images, seed) -> root

    @property
    def default_normalization(self) -> Normalization:
        return get_normalization(self.normalization)

    @property
    def num_classes(self):
        return len(self.classes) if self.classes is not None else None


_datasets = {}
DEFAULT_DATASET = "cifar10"


def register_dataset(dataset: Dataset) -> Dataset:
    if dataset.name in _datasets:
        raise ValueError(f"dataset {dataset.name!r} registered twice")
    _datasets[dataset.name] = dataset
    return dataset


def list_datasets() -> list:
    return sorted(_datasets)


def get_dataset(name: str) -> Dataset:
    if name not in _datasets:
        raise KDPluginError(f"unknown dataset {name!r} (known: {', '.join(list_datasets())})")
    return _datasets[name]


def detect_datasets(data_dir: str) -> list:
    """The registered datasets whose files DATA_DIR holds (usually one; none for a missing folder)."""
    return [name for name, dataset in sorted(_datasets.items()) if dataset.detect(data_dir)]


def resolve_dataset(data_dir: str, name: str = None, arch_dataset: str = None) -> str:
    """The dataset a run on DATA_DIR uses: NAME when given, else inferred (module docstring). ARCH_DATASET is
    the dataset the network's name implies (``kd_plugin.models.dataset_of``); only registered ones count."""
    found = detect_datasets(data_dir)
    if name is not None:
        get_dataset(name)
        if found and name not in found:
            raise KDPluginError(f"{data_dir} holds {' and '.join(found)} data, not {name}")
        return name
    if len(found) > 1:
        raise KDPluginError(f"{data_dir} holds {' and '.join(found)} data; say which with --dataset")
    implied = arch_dataset if arch_dataset in _datasets else None
    if found and implied and implied != found[0] and implied != DEFAULT_DATASET:
        raise KDPluginError(f"{data_dir} holds {found[0]} data but the network is a {implied} one; pass "
                            f"--dataset {found[0]} to train it on {found[0]} anyway")
    return found[0] if found else implied or DEFAULT_DATASET


def load_split(data_dir: str, split: str, dataset: str = None) -> ImageSet:
    """The 'train' or 'test' split of DATA_DIR, read by DATASET's reader (inferred from the folder when None)."""
    return get_dataset(resolve_dataset(data_dir, dataset)).load(data_dir, split)


def download_dataset(data_dir: str, name: str) -> str:
    dataset = get_dataset(name)
    if dataset.download is None:
        raise KDPluginError(f"--download: {name} cannot be downloaded; point DATASET_DIR at its files")
    return dataset.download(data_dir)


def write_synthetic(root: str, train_images: int, test_images: int, seed: int = 0, dataset: str = DEFAULT_DATASET):
    """A small generated dataset in DATASET's on-disk format (kd-plugin make-data)."""
    chosen = get_dataset(dataset)
    if chosen.write_synthetic is None:
        raise KDPluginError(f"make-data cannot generate {dataset} data")
    return chosen.write_synthetic(root, train_images, test_images, seed)


def add_dataset_arg(parser, flag="--dataset"):
    """The one --dataset flag of every command that reads a dataset folder."""
    parser.add_argument(flag, dest="dataset", default=None, choices=list_datasets(),
                        help="which dataset the folder holds (default: inferred from the folder, else from the "
                             "network's name, e.g. resnet8x4_cifar100 -> cifar100, else cifar10)")
    return parser


def default_classes(name: str):
    """The class names a dataset fixes (None where the data names them)."""
    return get_dataset(name).classes


def _has_cifar10(data_dir):
    try:
        cifar10.find_batches_dir(data_dir)
        return True
    except KDPluginError:
        return False


def _synthetic(dataset):
    return lambda root, train, test, seed=0: write_synthetic_cifar(root, train, test, seed, dataset=dataset)


register_dataset(Dataset("cifar10", "CIFAR-10 python batches (cifar-10-batches-py), 10 classes",
                         cifar10.load_cifar10_split, _has_cifar10, "cifar", cifar10.CLASS_NAMES,
                         download=cifar10.download_cifar10, write_synthetic=_synthetic("cifar10")))
register_dataset(Dataset("cifar100", "CIFAR-100 python files (cifar-100-python), 100 fine classes (20 coarse kept)",
                         cifar100.load_cifar100_split, lambda d: cifar100.find_folder(d) is not None, "cifar100",
                         cifar100.CLASS_NAMES, download=cifar100.download_cifar100,
                         write_synthetic=_synthetic("cifar100")))
register_dataset(Dataset("imagefolder", "a folder of class subfolders (train/ and val/, or split here), resized to "
                         "32x32", imagefolder.load_imagefolder_split, imagefolder.detect, "imagenet",
                         write_synthetic=imagefolder.write_synthetic_imagefolder))
