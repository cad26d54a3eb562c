"""An image folder as a dataset: one subfolder per class (its name is the class name), images in any format
Pillow reads, resized to the network's 32x32 input and held in memory like CIFAR.

Layouts: ``DATA/train/<class>/...`` with ``DATA/val/<class>/...`` (or ``DATA/test/``) as the test split; or
``DATA/<class>/...`` alone, split here: in each class's sorted file list every fifth image (the 5th, 10th, ...)
is a test image, so the split never changes between runs. Class names are the sorted training subfolders; the
test split must hold the same ones. An empty class folder, an unreadable image or a test folder with other
classes is refused with one line naming it.
"""
import os

import numpy as np
import torch

from ..util.errors import KDPluginError
from .cifar10 import ImageSet, check_split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
TEST_FOLDERS = ("val", "test")
TEST_EVERY = 5  # without a test folder: every fifth image of each class is a test image
SIZE = 32


def _images_in(folder):
    return sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, name)))


def _class_folders(folder):
    return sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))
                  and not name.startswith("."))


def detect(data_dir):
    """Whether DATA_DIR is an image folder: a train/ folder of class folders, or class folders holding images."""
    if data_dir is None or not os.path.isdir(data_dir):
        return False
    train = os.path.join(data_dir, "train")
    if os.path.isdir(train):
        return bool(_class_folders(train))
    return any(_images_in(os.path.join(data_dir, name)) for name in _class_folders(data_dir))


def layout(data_dir):
    """(training root, test root or None): None means the split is carved from the training root."""
    train = os.path.join(data_dir, "train")
    if not os.path.isdir(train):
        return data_dir, None
    test = next((os.path.join(data_dir, name) for name in TEST_FOLDERS if os.path.isdir(os.path.join(data_dir, name))),
                None)
    if test is None:
        raise KDPluginError(f"{data_dir}: an image folder with train/ needs val/ (or test/) beside it")
    return train, test


def read_image(path, size=SIZE):
    """PATH as a uint8 (3, SIZE, SIZE) RGB array, resized bilinearly."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise KDPluginError(f"{path}: not a readable image ({err})") from None


def _read_classes(root, classes, keep=None):
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            raise KDPluginError(f"{root}: class folder {name!r} is missing (the training split has it)")
        files = _images_in(folder)
        if not files:
            raise KDPluginError(f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        chosen = [f for i, f in enumerate(files) if keep is None or keep(i)]
        images += [read_image(os.path.join(folder, f)) for f in chosen]
        labels += [label] * len(chosen)
    return images, labels


def load_imagefolder_split(data_dir, split):
    """The 'train' or 'test' split of an image folder as an ImageSet with the folder's class names."""
    check_split(split)
    if data_dir is None or not os.path.isdir(data_dir):
        raise KDPluginError(f"data directory {data_dir!r} does not exist")
    train_root, test_root = layout(data_dir)
    classes = tuple(_class_folders(train_root))
    if not classes:
        raise KDPluginError(f"{train_root}: no class folders (expected one subfolder of images per class)")
    if test_root is not None and split == "test":
        extra = sorted(set(_class_folders(test_root)) - set(classes))
        if extra:
            raise KDPluginError(f"{test_root}: class folder {extra[0]!r} is not one of the training split's")
        images, labels = _read_classes(test_root, classes)
    else:
        keep = None if test_root is not None else (lambda i: (i % TEST_EVERY == TEST_EVERY - 1) == (split == "test"))
        images, labels = _read_classes(train_root, classes, keep)
    if not images:
        raise KDPluginError(f"{data_dir}: the {split} split holds no images")
    return ImageSet(torch.from_numpy(np.stack(images)).contiguous(), torch.tensor(labels, dtype=torch.int64),
                    classes, os.path.abspath(data_dir))


def write_synthetic_imagefolder(root, train_images=100, test_images=40, seed=0, names=None):
    """A generated image folder (ROOT/train/<class>/*.png, ROOT/val/<class>/*.png) of 40x40 PNGs in five
    classes, from the CIFAR generator's templates (so a network learns them); returns ROOT."""
    from PIL import Image

    from .synthetic import _images, _templates

    names = names or ("amber", "basalt", "cobalt", "dune", "ember")
    if min(train_images, test_images) < len(names):
        raise KDPluginError(f"--train-images and --test-images must be >= {len(names)} (one per generated class)")
    rng = np.random.default_rng(seed)
    templates = _templates(rng, len(names))
    for split, count in (("train", train_images), ("val", test_images)):
        labels = np.arange(count) % len(names)
        pixels = _images(rng, templates, labels, 40.0).reshape(-1, 3, 32, 32)
        for index, (label, image) in enumerate(zip(labels, pixels, strict=True)):
            folder = os.path.join(root, split, names[label])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).resize((40, 40), Image.BILINEAR).save(
                os.path.join(folder, f"{index:05d}.png"))
    return root
