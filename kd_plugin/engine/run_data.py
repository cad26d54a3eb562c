"""The data of a training run, the same for a single-model run and a mutual-learning group: the splits, their
fingerprint (part of the identity a resume must share) and the loaders."""
import hashlib
from dataclasses import dataclass

from ..data import ImageSet, TensorLoader, download_dataset, get_dataset, resolve_dataset, validation_split
from ..models import dataset_of
from ..util.errors import KDPluginError
from ..util.normalization import Normalization
from .guards import check_trainable


@dataclass
class RunData:
    train: ImageSet
    valid: ImageSet  # None without a validation split
    test: ImageSet
    classes: list
    train_hash: str
    dataset: str = "cifar10"  # the registered dataset's name (kd_plugin.data.datasets)
    normalization: Normalization | None = None  # the dataset's default input normalization

def data_fingerprint(image_set):
    """A short hash of a split's images and labels: a resume on other data with the same size is caught too."""
    digest = hashlib.blake2b(image_set.labels.cpu().numpy().tobytes(), digest_size=8)
    digest.update(image_set.images.cpu().numpy().tobytes())
    return digest.hexdigest()


def load_run_data(settings, seed):
    """SETTINGS' training split (less the seeded validation split), validation split and test split, of the dataset
    --dataset names or the folder and the architecture imply (kd_plugin.data.resolve_dataset)."""
    name = run_dataset(settings)
    if settings.data.download:
        download_dataset(settings.data.path, name)
    dataset = get_dataset(name)
    train = dataset.load(settings.data.path, "train")
    test = dataset.load(settings.data.path, "test")
    if tuple(test.classes) != tuple(train.classes):
        raise KDPluginError(f"{settings.data.path}: the test split's classes differ from the training split's")
    trained, valid = validation_split(train, settings.data.validation_split, seed=seed)
    return RunData(trained, valid, test, train.classes, data_fingerprint(trained), name, dataset.default_normalization)


def run_dataset(settings):
    """The name of the dataset a run trains on (--dataset, else inferred from the folder and the network)."""
    return resolve_dataset(settings.data.path, settings.data.dataset, dataset_of(settings.first_arch()))


def run_loaders(settings, data, seed, device, normalization=None):
    """(training loader, validation loader or None). The training order and augmentation derive from (SEED, epoch);
    a last training batch of one image is dropped (BatchNorm cannot train on it)."""
    train_loader = TensorLoader(data.train, settings.data.batch_size, settings.data.augment, shuffle=True, seed=seed,
                                device=device, channels_last=settings.runtime.channels_last, drop_single_last=True,
                                normalization=normalization)
    check_trainable(train_loader, settings.data.validation_split)
    valid_loader = TensorLoader(data.valid, 1024, "n", device=device, channels_last=settings.runtime.channels_last,
                                normalization=normalization) if data.valid is not None else None
    return train_loader, valid_loader
