"""Reader for CIFAR-10's python format (``cifar-10-batches-py``), without the official checksums.

The batch files are pickles; they are read with an unpickler that only resolves the few numpy names a
CIFAR batch needs, so a crafted file cannot run code. Everything read is validated and a problem names
the file.
"""
import io
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from ..util.errors import KDPluginError

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = 10
IMAGE_BYTES = 3 * 32 * 32
MAX_BATCH_FILE_BYTES = 512 * 2**20

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@dataclass
class ImageSet:
    """A split held as one uint8 tensor (N,3,32,32) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple = CLASS_NAMES
    source: str = ""

    def __len__(self):
        return int(self.labels.shape[0])

    def subset(self, indices):
        return ImageSet(self.images[indices], self.labels[indices], self.classes, self.source)


def find_batches_dir(data_dir):
    """The folder holding the batch files: DATA itself or DATA/cifar-10-batches-py."""
    if data_dir is None or not os.path.exists(data_dir):
        raise KDPluginError(f"data directory {data_dir!r} does not exist")
    if not os.path.isdir(data_dir):
        raise KDPluginError(f"{data_dir}: is a file, not a data directory (a folder with CIFAR-10's python batches)")
    for candidate in (data_dir, os.path.join(data_dir, BATCHES_DIR)):
        if os.path.isfile(os.path.join(candidate, TEST_FILES[0])) or os.path.isfile(
                os.path.join(candidate, TRAIN_FILES[0])):
            return candidate
    raise KDPluginError(f"{data_dir}: no CIFAR-10 python batches found (expected {BATCHES_DIR}/data_batch_1..5 and "
                        f"test_batch; use --download to fetch CIFAR-10 once)")


def _unpickle(path):
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise KDPluginError(f"{path}: cannot read ({err.strerror})") from None
    if size == 0:
        raise KDPluginError(f"{path}: file is empty")
    if size > MAX_BATCH_FILE_BYTES:
        raise KDPluginError(f"{path}: {size} bytes is too large for a CIFAR batch file")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, OverflowError) as err:
        raise KDPluginError(f"{path}: not a readable CIFAR batch (truncated or corrupt: {err})") from None
    if not isinstance(obj, dict):
        raise KDPluginError(f"{path}: expected a dict, found {type(obj).__name__}")
    decoded = {}
    for key, value in obj.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if name in decoded:  # both 'labels' and b'labels': which one is meant cannot be known
            raise KDPluginError(f"{path}: holds both {name!r} and {name.encode()!r}; keep one")
        decoded[name] = value
    return decoded


def read_batch(path):
    """(uint8 array (N,3,32,32), int64 array (N,)) from one batch file, validated."""
    batch = _unpickle(path)
    if "data" not in batch or "labels" not in batch:
        raise KDPluginError(f"{path}: missing 'data' or 'labels' entry")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = getattr(data, "dtype", type(data).__name__)
        raise KDPluginError(f"{path}: 'data' must be a uint8 array, found {kind}")
    if data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise KDPluginError(f"{path}: 'data' must have shape (N, {IMAGE_BYTES}), found {tuple(data.shape)}")
    labels = _integer_labels(path, labels)
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise KDPluginError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise KDPluginError(f"{path}: labels out of range 0..{NUM_CLASSES - 1} "
                            f"(found {int(labels.min())}..{int(labels.max())})")
    return data.reshape(-1, 3, 32, 32), labels


def _integer_labels(path, labels):
    """LABELS as int64, refusing anything a cast would silently change: floats, bools, strings, objects."""
    if isinstance(labels, np.ndarray):
        kind = labels.dtype.kind
    elif isinstance(labels, (list, tuple)):
        wrong = next((v for v in labels if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))),
                     None)
        kind = "i" if wrong is None else None
    else:
        kind, wrong = None, labels
    if kind not in ("i", "u"):
        found = labels.dtype if isinstance(labels, np.ndarray) else type(wrong).__name__
        raise KDPluginError(f"{path}: 'labels' must be integers, found {found}")
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise KDPluginError(f"{path}: labels out of range 0..{NUM_CLASSES - 1}") from None


def read_class_names(batches_dir):
    path = os.path.join(batches_dir, META_FILE)
    if not os.path.exists(path):
        return CLASS_NAMES
    names = _unpickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise KDPluginError(f"{path}: 'label_names' must list {NUM_CLASSES} names")
    try:
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except UnicodeDecodeError as err:
        raise KDPluginError(f"{path}: 'label_names' are not UTF-8 text ({err.reason} at byte {err.start})") from None


def load_split(data_dir, split):
    """Load 'train' (data_batch_1..5) or 'test' (test_batch) as an ImageSet."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    batches_dir = find_batches_dir(data_dir)
    images, labels = [], []
    for name in TRAIN_FILES if split == "train" else TEST_FILES:
        path = os.path.join(batches_dir, name)
        if os.path.isdir(path):
            raise KDPluginError(f"{path}: is a directory, not a CIFAR batch file")
        if not os.path.isfile(path):
            raise KDPluginError(f"{path}: batch file missing")
        data, lab = read_batch(path)
        images.append(data)
        labels.append(lab)
    images = torch.from_numpy(np.concatenate(images))
    labels = torch.from_numpy(np.concatenate(labels))
    if len(labels) == 0:
        raise KDPluginError(f"{batches_dir}: the {split} split holds no images")
    return ImageSet(images.contiguous(), labels, read_class_names(batches_dir), os.path.abspath(batches_dir))


def download_cifar10(data_dir):
    """Opt-in: fetch the official CIFAR-10 with torchvision into DATA/cifar-10-batches-py."""
    import torchvision

    try:
        torchvision.datasets.CIFAR10(data_dir, train=True, download=True)
    except Exception as err:  # network errors come in many types
        raise KDPluginError(f"download of CIFAR-10 into {data_dir} failed: {err}") from None
    return os.path.join(data_dir, BATCHES_DIR)


def validation_split(train, fraction, seed=0):
    """(train, validation) carved from the training set by a seeded permutation, as Distiller's --vs does."""
    if not 0 <= fraction < 1:
        raise KDPluginError(f"validation split must be in [0, 1), got {fraction}")
    n_valid = int(np.floor(fraction * len(train)))
    if n_valid == 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[n_valid:]), train.subset(order[:n_valid])
