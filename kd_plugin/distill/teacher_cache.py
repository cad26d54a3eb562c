"""Exact teacher-output cache: the teacher's logits per (training image, augmented view), fp16, kept on disk.

Augmentation "y" gives each image exactly 162 views (kd_plugin.data.augment), "n" one. The cache keys every
row by (index in the training split, view id), so a student always meets the teacher's logits for the very
view it trains on; a per-image cache would pair a new crop with an old view's logits. A frozen teacher in
eval mode is a pure function of its input (BatchNorm uses running statistics, dropout is off), so a cached
row equals a recomputed one up to the fp16 rounding of storage: at most 2**-11 of each logit's magnitude.
Rows are filled lazily (a miss runs the teacher on the missing rows only) or up front with ``precompute``.

The file name is a digest of everything the logits depend on: the teacher's weights and buffers, the
training images and labels actually used (after the validation split), normalization, augmentation and the
teacher's autocast precision. Another teacher checkpoint or split therefore never reads a stale file.
"""
import hashlib
import os

import torch

from ..util.normalization import normalization_of

from ..data.augment import NUM_VIEWS
from ..util.errors import KDPluginError
from ..util.fileio import atomic_write
from .teacher import TeacherRunner

FORMAT = 1
FP16_RELATIVE_ERROR = 2.0 ** -11  # round-to-nearest fp16 has an 11-bit significand


def _tensor_bytes(tensor):
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def cache_key(teacher, image_set, normalizer, augment, autocast_dtype=None):
    """Hex digest of what the cached logits depend on."""
    digest = hashlib.sha256()
    digest.update(f"format {FORMAT}|{type(teacher).__qualname__}|augment {augment}|{normalizer.key()}|"
                  f"teacher normalization {normalization_of(teacher).record()}|autocast {autocast_dtype}".encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    digest.update(_tensor_bytes(image_set.images))
    digest.update(_tensor_bytes(image_set.labels))
    return digest.hexdigest()


class TeacherCache:
    """fp16 logits (images, views, classes) with a filled mask; allocated once the class count is known."""

    def __init__(self, num_images, num_views, key, device="cpu"):
        self.num_images, self.num_views, self.key = int(num_images), int(num_views), key
        self.device = torch.device(device)
        self.logits = None
        self.filled = torch.zeros(self.num_images, self.num_views, dtype=torch.bool, device=self.device)
        self.num_filled = 0  # host-side count: a full cache is read without a device->host sync
        self.dirty = False

    @property
    def size(self):
        return self.num_images * self.num_views

    @property
    def complete(self):
        return self.num_filled == self.size

    def lookup(self, indices, views):
        """(fp16 logits or None, positions of the rows not cached yet: None when all are)."""
        if self.logits is None:
            return None, torch.arange(len(indices), device=indices.device)
        rows = self.logits[indices, views]
        if self.complete:
            return rows, None
        missing = (~self.filled[indices, views]).nonzero().squeeze(1)
        return rows, (missing if len(missing) else None)

    def store(self, indices, views, logits):
        if self.logits is None:
            self.logits = torch.zeros(self.num_images, self.num_views, logits.shape[1], dtype=torch.float16,
                                      device=self.device)
        self.logits[indices, views] = logits.to(torch.float16)
        self.filled[indices, views] = True
        self.num_filled = int(self.filled.sum())
        self.dirty = True

    def payload(self):
        return {"format": FORMAT, "key": self.key, "num_images": self.num_images, "num_views": self.num_views,
                "logits": self.logits.cpu() if self.logits is not None else None, "filled": self.filled.cpu()}

    def merge(self, payload):
        """Take the rows another run saved under the same key (sweeps running side by side share one file)."""
        if payload is None or payload["logits"] is None:
            return
        theirs = payload["filled"].to(self.device) & ~self.filled
        if not bool(theirs.any()):
            return
        if self.logits is None:
            self.logits = torch.zeros(payload["logits"].shape, dtype=torch.float16, device=self.device)
        self.logits[theirs] = payload["logits"].to(self.device)[theirs]
        self.filled |= theirs
        self.num_filled = int(self.filled.sum())


class CacheFile:
    """Where a TeacherCache lives on disk: ``<dir>/teacher-<key prefix>.pt``, written atomically."""

    def __init__(self, directory, key):
        self.directory = directory
        self.path = os.path.join(directory, f"teacher-{key[:24]}.pt")
        self.key = key

    def read(self, num_images, num_views):
        """The saved payload, or None (no file, or a file that does not match: it is rebuilt and replaced)."""
        if not os.path.exists(self.path):
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file is only a cold cache; it gets rewritten
            return None
        valid = (isinstance(payload, dict) and payload.get("format") == FORMAT and payload.get("key") == self.key
                 and payload.get("num_images") == num_images and payload.get("num_views") == num_views
                 and isinstance(payload.get("filled"), torch.Tensor)
                 and tuple(payload["filled"].shape) == (num_images, num_views))
        logits = payload.get("logits") if valid else None
        if valid and logits is not None and (logits.dtype != torch.float16 or tuple(logits.shape[:2]) !=
                                             (num_images, num_views)):
            valid = False
        return payload if valid else None

    def write(self, cache):
        os.makedirs(self.directory, exist_ok=True)
        cache.merge(self.read(cache.num_images, cache.num_views))
        payload = cache.payload()
        atomic_write(self.path, lambda fh: torch.save(payload, fh))
        cache.dirty = False


class CachedTeacher:
    """Drop-in for a KD policy's ``teacher_outputs``: serves the current batch's rows from the cache.

    ``set_batch`` (the training loop's batch hook) names the (indices, views) of the next forward; the cache
    is used only when the forward's input is that very batch tensor, otherwise the teacher runs as before.
    Every returned row is fp16-rounded, hit or miss, so a run's losses do not depend on what was cached.
    """

    def __init__(self, runner, cache, cache_file=None):
        self.runner = runner
        self.cache = cache
        self.cache_file = cache_file
        self.hits = self.misses = 0
        self._batch = None

    def set_batch(self, batch):
        self._batch = batch

    def __call__(self, inputs):
        batch, self._batch = self._batch, None
        if batch is None or inputs is not batch.inputs:
            return self.runner(inputs)
        indices, views = batch.indices.to(self.cache.device), batch.views.to(self.cache.device)
        rows, missing = self.cache.lookup(indices, views)
        if missing is not None:
            computed = self.runner(inputs[missing.to(inputs.device)])
            if not isinstance(computed, torch.Tensor) or computed.dim() != 2:
                raise KDPluginError("the teacher cache needs a teacher that returns a (batch, classes) tensor; "
                                    "run with --no-teacher-cache")
            self.cache.store(indices[missing], views[missing], computed)
            rows = self.cache.logits[indices, views] if rows is None else rows.index_put((missing,), computed.half())
            self.misses += len(missing)
        self.hits += len(indices) - (0 if missing is None else len(missing))
        return rows.to(device=inputs.device, dtype=torch.float32)

    def epoch_counters(self):
        """Hits and misses since the last call (one epoch's worth when the trainer asks once per epoch)."""
        counters = {"teacher cache hits": self.hits, "teacher cache misses": self.misses}
        self.hits = self.misses = 0
        return counters

    def save(self):
        """Persist new rows (the trainer calls this with every checkpoint, so a resumed run sees the cache
        exactly as the interrupted run had it at that checkpoint)."""
        if self.cache_file is None or not self.cache.dirty:
            return False
        self.cache_file.write(self.cache)
        return True


def cache_directory(setting, out_dir):
    """Where a run keeps its cache files: 'auto' -> <out_dir>/teacher_cache, 'off' -> None, else the path."""
    if setting in (None, "off"):
        return None
    return os.path.join(out_dir, "teacher_cache") if setting == "auto" else setting


def open_cache(runner, image_set, normalizer, augment, directory=None, device="cpu"):
    """A CachedTeacher for one training split, loading the matching file under ``directory`` if there is one."""
    key = cache_key(runner.teacher, image_set, normalizer, augment, runner.autocast_dtype)
    cache = TeacherCache(len(image_set), NUM_VIEWS[augment], key, device)
    cache_file = CacheFile(directory, key) if directory else None
    if cache_file is not None:
        cache.merge(cache_file.read(cache.num_images, cache.num_views))
        cache.dirty = False
    return CachedTeacher(runner, cache, cache_file)


def install_teacher_caches(policies, train_loader, setting, out_dir):
    """Serve each KD policy's teacher outputs from a cache for ``train_loader``'s split; returns the caches.

    ``setting`` is RunSettings.teacher_cache. Only policies whose teacher runs through a TeacherRunner
    (frozen, eval mode: exact) get one.
    """
    if setting == "off":
        return []
    directory = cache_directory(setting, out_dir)
    caches = []
    for policy in policies:
        if isinstance(policy.teacher_outputs, TeacherRunner):
            policy.teacher_outputs = open_cache(policy.teacher_outputs, train_loader.image_set,
                                                train_loader.normalizer, train_loader.augment, directory,
                                                train_loader.device)
            caches.append(policy.teacher_outputs)
    return caches


@torch.no_grad()
def precompute(cached, loader, views=None, batch_size=512):
    """Fill every (image, view) of ``loader``'s split (or only the given view ids) that is not cached yet."""
    view_ids = torch.arange(cached.cache.num_views) if views is None else torch.as_tensor(views)
    for view in view_ids.tolist():
        for start in range(0, loader.num_images, batch_size):
            indices = torch.arange(start, min(start + batch_size, loader.num_images), device=loader.device)
            batch = loader.make_batch(indices, torch.full_like(indices, view))
            cached.set_batch(batch)
            cached(batch.inputs)
    cached.epoch_counters()
    return cached
