"""Reader for CIFAR-100's python format (``cifar-100-python``: ``train``, ``test``, ``meta``), as torchvision
lays it out: the same batch layout as CIFAR-10, with 100 fine labels (``fine_labels``, what is trained on) and
20 superclasses (``coarse_labels``, kept in the ImageSet). Read with CIFAR-10's safe, validating reader."""
import os

from ..util.errors import KDPluginError
from .cifar10 import check_split, image_set, read_class_names, read_images, read_labels, torchvision_download, unpickle

FOLDER = "cifar-100-python"
SPLIT_FILES = {"train": "train", "test": "test"}
META_FILE = "meta"
FINE_LABELS, COARSE_LABELS = "fine_labels", "coarse_labels"
# The official meta file's order (label i is CLASS_NAMES[i]).
CLASS_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
COARSE_CLASS_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)


def find_folder(data_dir):
    """The folder holding CIFAR-100's files: DATA itself or DATA/cifar-100-python; None when neither does."""
    if data_dir is None or not os.path.isdir(data_dir):
        return None
    for candidate in (data_dir, os.path.join(data_dir, FOLDER)):
        if any(os.path.isfile(os.path.join(candidate, name)) for name in SPLIT_FILES.values()):
            return candidate
    return None


def load_cifar100_split(data_dir, split):
    """Load 'train' or 'test' as an ImageSet of fine labels (coarse labels alongside)."""
    if data_dir is None or not os.path.isdir(data_dir):
        raise KDPluginError(f"data directory {data_dir!r} does not exist")
    folder = find_folder(data_dir)
    if folder is None:
        raise KDPluginError(f"{data_dir}: no CIFAR-100 python files found (expected {FOLDER}/train and test; "
                            f"use --download to fetch CIFAR-100 once)")
    path = os.path.join(folder, SPLIT_FILES[check_split(split)])
    if not os.path.isfile(path):
        raise KDPluginError(f"{path}: batch file missing")
    batch = unpickle(path)
    images = read_images(path, batch)
    labels = read_labels(path, batch, FINE_LABELS, len(CLASS_NAMES), len(images))
    coarse = read_labels(path, batch, COARSE_LABELS, len(COARSE_CLASS_NAMES), len(labels)) \
        if COARSE_LABELS in batch else None
    return image_set(folder, split, [images], [labels], read_class_names(folder, META_FILE, "fine_label_names",
                                                                         CLASS_NAMES),
                     [coarse] if coarse is not None else None,
                     read_class_names(folder, META_FILE, "coarse_label_names", COARSE_CLASS_NAMES)
                     if coarse is not None else None)


def download_cifar100(data_dir):
    """Opt-in: fetch the official CIFAR-100 with torchvision into DATA/cifar-100-python."""
    return torchvision_download("CIFAR100", data_dir, FOLDER)
