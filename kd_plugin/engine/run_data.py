"""The data of a training run, the same for a single-model run and a mutual-learning group: the splits, their
fingerprint (part of the identity a resume must share) and the loaders."""
import hashlib
from dataclasses import dataclass

from ..data import ImageSet, TensorLoader, download_cifar10, load_split, validation_split
from .guards import check_trainable


@dataclass
class RunData:
    train: ImageSet
    valid: ImageSet  # None without a validation split
    test: ImageSet
    classes: list
    train_hash: str


def data_fingerprint(image_set):
    """A short hash of a split's images and labels: a resume on other data with the same size is caught too."""
    digest = hashlib.blake2b(image_set.labels.cpu().numpy().tobytes(), digest_size=8)
    digest.update(image_set.images.cpu().numpy().tobytes())
    return digest.hexdigest()


def load_run_data(settings, seed):
    """SETTINGS' training split (less the seeded validation split), validation split and test split."""
    if settings.download:
        download_cifar10(settings.data)
    train = load_split(settings.data, "train")
    test = load_split(settings.data, "test")
    trained, valid = validation_split(train, settings.validation_split, seed=seed)
    return RunData(trained, valid, test, train.classes, data_fingerprint(trained))


def run_loaders(settings, data, seed, device, normalization=None):
    """(training loader, validation loader or None). The training order and augmentation derive from (SEED, epoch);
    a last training batch of one image is dropped (BatchNorm cannot train on it)."""
    train_loader = TensorLoader(data.train, settings.batch_size, settings.augment, shuffle=True, seed=seed,
                                device=device, channels_last=settings.channels_last, drop_single_last=True,
                                normalization=normalization)
    check_trainable(train_loader, settings.validation_split)
    valid_loader = TensorLoader(data.valid, 1024, "n", device=device, channels_last=settings.channels_last,
                                normalization=normalization) if data.valid is not None else None
    return train_loader, valid_loader
