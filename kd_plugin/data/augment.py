"""Batched CIFAR augmentation on uint8 tensors: no per-image PIL work, runs on whatever device holds the data.

The original's "y" augmentation (RandomCrop(32, padding=4) + RandomHorizontalFlip) has exactly 162 views
of an image: 9 x 9 crop offsets times 2 flips. A view is an integer ``(dy * 9 + dx) * 2 + flip`` so the
same view can be produced again exactly (what the teacher-output cache relies on).
"""
import torch

from ..util.normalization import DEFAULT, Normalization

MEAN, STD = DEFAULT.mean, DEFAULT.std
PAD = 4
OFFSETS = 2 * PAD + 1
NUM_VIEWS = {"y": OFFSETS * OFFSETS * 2, "n": 1}
IDENTITY_VIEW = {"y": (PAD * OFFSETS + PAD) * 2, "n": 0}


def check_augment(augment):
    if augment not in NUM_VIEWS:
        raise ValueError(f"augmentation must be 'y' or 'n', not {augment!r}")
    return augment


def decode_views(views):
    """(dy, dx, flip) integer tensors of a view-id tensor."""
    flip = views % 2
    offset = views // 2
    return offset // OFFSETS, offset % OFFSETS, flip


def encode_views(dy, dx, flip):
    return (dy * OFFSETS + dx) * 2 + flip


def sample_views(count, augment, generator):
    if NUM_VIEWS[check_augment(augment)] == 1:
        return torch.zeros(count, dtype=torch.int64)
    return torch.randint(0, NUM_VIEWS[augment], (count,), generator=generator)


def _view_index_table(height, width, device):
    """(NUM_VIEWS['y'], height*width) flat indices into a padded image, one row per view id."""
    views = torch.arange(NUM_VIEWS["y"], device=device)
    dy, dx, flip = decode_views(views)
    cols = torch.arange(width, device=device)
    cols = torch.where(flip[:, None].bool(), cols.flip(0), cols) + dx[:, None]
    rows = dy[:, None] + torch.arange(height, device=device)
    return (rows[:, :, None] * (width + 2 * PAD) + cols[:, None, :]).reshape(len(views), height * width)


_INDEX_TABLES = {}


def apply_views(images, views):
    """Crop/flip a uint8 (N,3,H,W) batch to the given views (N,), zero padding as torchvision pads.

    One gather over the padded batch with a per-view index table: no per-image work, any device.
    """
    n, c, h, w = images.shape
    key = (images.device, h, w)
    if key not in _INDEX_TABLES:
        _INDEX_TABLES[key] = _view_index_table(h, w, images.device)
    flat = _INDEX_TABLES[key].index_select(0, views.to(images.device)).view(n, 1, h * w).expand(n, c, h * w)
    padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD))
    return padded.view(n, c, -1).gather(2, flat).view(n, c, h, w)


class Normalizer:
    """uint8 -> float normalized with a mean/std (the original's by default); constants cached per device
    and dtype. ``Normalizer.of(normalization)`` for a network's own (``kd_plugin.util.normalization``)."""

    def __init__(self, mean=MEAN, std=STD, name="custom"):
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalization = Normalization(name if (self.mean, self.std) != (MEAN, STD) else DEFAULT.name,
                                           self.mean, self.std)
        self._cache = {}

    @classmethod
    def of(cls, normalization):
        return cls(normalization.mean, normalization.std, normalization.name)

    def constants(self, device, dtype):
        key = (device, dtype)
        if key not in self._cache:
            mean = torch.tensor(self.mean, dtype=dtype, device=device).view(1, 3, 1, 1) * 255
            inv_std = 1 / (torch.tensor(self.std, dtype=dtype, device=device).view(1, 3, 1, 1) * 255)
            self._cache[key] = (mean, inv_std)
        return self._cache[key]

    def __call__(self, images, dtype=torch.float32):
        mean, inv_std = self.constants(images.device, dtype)
        return (images.to(dtype) - mean) * inv_std

    def pixels(self, inputs):
        """The 0..255 pixel values that normalized INPUTS came from (exact for float32 inputs of 8-bit images)."""
        mean, inv_std = self.constants(inputs.device, inputs.dtype)
        return (inputs / inv_std + mean).round_().clamp_(0, 255)

    def key(self):
        return {"mean": self.mean, "std": self.std}
