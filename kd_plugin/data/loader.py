"""Mini-batches straight from a uint8 tensor: the epoch's order and views derive from (seed, epoch) alone,
so a resumed run sees exactly the batches an uninterrupted one would, with no loader state to save."""
from collections import namedtuple

import torch

from .augment import IDENTITY_VIEW, Normalizer, apply_views, check_augment, sample_views

Batch = namedtuple("Batch", ["inputs", "labels", "indices", "views"])


def epoch_generator(seed, epoch, stream):
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) * 7 + stream)


class TensorLoader:
    """Batches of (normalized inputs, labels, dataset indices, view ids) for one ImageSet.

    ``drop_single_last`` (training): when the epoch's last batch would hold exactly one image, it is dropped,
    as torch's ``drop_last=True`` would, but only then (a batch of one cannot train BatchNorm layers; every
    other split keeps ``drop_last=False`` semantics). The dropped image is the last of that epoch's (seed,
    epoch) order, so a different one each epoch, and resume stays exact."""

    def __init__(self, image_set, batch_size, augment="n", shuffle=False, seed=0, device="cpu",
                 normalizer=None, dtype=torch.float32, channels_last=False, drop_single_last=False,
                 normalization=None):
        self.image_set = image_set
        self.images = image_set.images.to(device)
        self.labels = image_set.labels.to(device)
        self.batch_size = int(batch_size)
        self.augment = check_augment(augment)
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        # NORMALIZATION: the network's own (kd_plugin.util.normalization.normalization_of); default: the zoo's
        self.normalizer = normalizer or (Normalizer.of(normalization) if normalization else Normalizer())
        self.dtype = dtype
        self.channels_last = channels_last
        self.drop_single_last = drop_single_last

    @property
    def images_per_epoch(self):
        n = len(self.image_set)
        return n - 1 if self.drop_single_last and self.batch_size > 1 and n % self.batch_size == 1 else n

    def __len__(self):
        return (self.images_per_epoch + self.batch_size - 1) // self.batch_size

    @property
    def normalization(self):
        return self.normalizer.normalization

    @property
    def num_images(self):
        return len(self.image_set)

    def plan(self, epoch):
        """(order, views) for an epoch: which image goes where, and which augmented view of it."""
        n = len(self.image_set)
        order = torch.randperm(n, generator=epoch_generator(self.seed, epoch, 0)) if self.shuffle else torch.arange(n)
        if self.shuffle and self.augment == "y":
            views = sample_views(n, self.augment, epoch_generator(self.seed, epoch, 1))
        else:
            views = torch.full((n,), IDENTITY_VIEW[self.augment], dtype=torch.int64)
        return order, views

    def epoch(self, epoch=0, start_batch=0):
        order, views = self.plan(epoch)
        order, views = order.to(self.device), views.to(self.device)
        for start in range(start_batch * self.batch_size, self.images_per_epoch, self.batch_size):
            idx = order[start:start + self.batch_size]
            view = views[start:start + self.batch_size]
            yield self.make_batch(idx, view)

    def make_batch(self, indices, views):
        raw = self.images.index_select(0, indices)  # advanced indexing on uint8 is ~20x slower on CPU
        if self.augment == "y":
            raw = apply_views(raw, views)
        inputs = self.normalizer(raw, self.dtype)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return Batch(inputs, self.labels.index_select(0, indices), indices, views)

    def __iter__(self):
        return self.epoch(0)
