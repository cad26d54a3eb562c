"""Batched CIFAR augmentation on uint8 tensors: no per-image PIL work, runs on whatever device holds the data.

The original's "y" augmentation (RandomCrop(32, padding=4) + RandomHorizontalFlip) has exactly 162 views
of an image: 9 x 9 crop offsets times 2 flips. A view is an integer ``(dy * 9 + dx) * 2 + flip`` so the
same view can be produced again exactly (what the teacher-output cache relies on).
"""
import torch

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
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
    """uint8 -> float normalized with the original's mean/std; constants cached per device and dtype."""

    def __init__(self, mean=MEAN, std=STD):
        self.mean, self.std = tuple(mean), tuple(std)
        self._cache = {}

    def __call__(self, images, dtype=torch.float32):
        key = (images.device, dtype)
        if key not in self._cache:
            mean = torch.tensor(self.mean, dtype=dtype, device=images.device).view(1, 3, 1, 1) * 255
            inv_std = 1 / (torch.tensor(self.std, dtype=dtype, device=images.device).view(1, 3, 1, 1) * 255)
            self._cache[key] = (mean, inv_std)
        mean, inv_std = self._cache[key]
        return (images.to(dtype) - mean) * inv_std

    def key(self):
        return {"mean": self.mean, "std": self.std}
