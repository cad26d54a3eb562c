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
Every file is verified when read (kd_plugin.distill.cache_check); one that fails is set aside, never merged.
"""
import hashlib
import os

import torch

from ..checkpoint import verify_archive
from ..data import TensorLoader
from ..data.augment import NUM_VIEWS
from ..util.errors import KDPluginError
from ..util.fileio import atomic_write
from ..util.normalization import normalization_of
from .cache_check import payload_digest, recheck_slack, rows_mismatch, sample_rows, set_aside
from .teacher import TeacherRunner, tensor_bytes, update_with_weights

FORMAT = 2  # 2: the payload carries the digest of its logits and filled mask
FP16_RELATIVE_ERROR = 2.0 ** -11  # round-to-nearest fp16 has an 11-bit significand


def cache_key(teacher, image_set, normalizer, augment, autocast_dtype=None):
    """Hex digest of what the cached logits depend on."""
    digest = hashlib.sha256()
    digest.update(f"format {FORMAT}|{type(teacher).__qualname__}|augment {augment}|{normalizer.key()}|"
                  f"teacher normalization {normalization_of(teacher).record()}|autocast {autocast_dtype}".encode())
    update_with_weights(digest, teacher)
    digest.update(tensor_bytes(image_set.images))
    digest.update(tensor_bytes(image_set.labels))
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
        logits = self.logits.cpu() if self.logits is not None else None
        filled = self.filled.cpu()
        return {"format": FORMAT, "key": self.key, "num_images": self.num_images, "num_views": self.num_views,
                "logits": logits, "filled": filled, "digest": payload_digest(logits, filled)}

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

    def __init__(self, directory, key, warn=None):
        self.directory = directory
        self.path = os.path.join(directory, f"teacher-{key[:24]}.pt")
        self.key = key
        self.warn = warn
        self.set_aside_as = []  # where files that failed a check went, for the run log

    def read(self, num_images, num_views, check_rows=None):
        """The saved payload, verified, or None: no file, or one that failed a check (zip CRCs, format, key,
        shapes, digest, or ``check_rows(payload)`` returning a reason), which is renamed aside."""
        if not os.path.exists(self.path):
            return None
        payload, reason = self._load(num_images, num_views)
        if reason is None and check_rows is not None:
            reason = check_rows(payload)
        if reason is None:
            return payload
        target = set_aside(self.path, reason, self.warn)
        if target:
            self.set_aside_as.append(target)
        return None

    def _load(self, num_images, num_views):
        """(payload, None) or (None, why the file cannot be trusted)."""
        try:
            verify_archive(self.path, "teacher cache")
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except KDPluginError as err:
            return None, str(err).removeprefix(f"{self.path}: ")
        except Exception as err:  # noqa: BLE001 (any unreadable file is a cold cache, set aside for inspection)
            return None, f"not loadable ({type(err).__name__})"
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            return None, f"format {found!r}, expected {FORMAT}"
        filled, logits = payload.get("filled"), payload.get("logits")
        if payload.get("key") != self.key or payload.get("num_images") != num_images or \
                payload.get("num_views") != num_views:
            return None, "key or size does not match its name"
        if not isinstance(filled, torch.Tensor) or filled.dtype != torch.bool or \
                tuple(filled.shape) != (num_images, num_views):
            return None, "malformed filled mask"
        if logits is not None and (not isinstance(logits, torch.Tensor) or logits.dtype != torch.float16 or
                                   logits.dim() != 3 or tuple(logits.shape[:2]) != (num_images, num_views)):
            return None, "malformed logits"
        if payload.get("digest") != payload_digest(logits, filled):
            return None, "digest of logits and filled mask does not match"
        return payload, None

    def write(self, cache, check_rows=None):
        os.makedirs(self.directory, exist_ok=True)
        cache.merge(self.read(cache.num_images, cache.num_views, check_rows))
        payload = cache.payload()
        atomic_write(self.path, lambda fh: torch.save(payload, fh))
        cache.dirty = False


class CachedTeacher:
    """Drop-in for a KD policy's ``teacher_outputs``: serves the current batch's rows from the cache.

    ``set_batch`` (the training loop's batch hook) names the (indices, views) of the next forward; the cache
    is used only when the forward's input is that very batch tensor, otherwise the teacher runs as before.
    Every returned row is fp16-rounded, hit or miss, so a run's losses do not depend on what was cached.
    """

    def __init__(self, runner, cache, cache_file=None, row_inputs=None):
        self.runner = runner
        self.cache = cache
        self.cache_file = cache_file
        self.row_inputs = row_inputs  # (indices, views) -> the teacher's inputs for those rows
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
        self.cache_file.write(self.cache, self.check_new_rows)
        return True

    @torch.no_grad()
    def check_rows(self, payload, candidates=None):
        """None if a sample of the payload's filled rows (or of CANDIDATES) equals what the live teacher
        computes now, up to fp16 rounding and batch effects; otherwise the reason it does not."""
        if payload["logits"] is None or self.row_inputs is None:
            return None
        indices, views = sample_rows(payload["filled"] if candidates is None else candidates)
        if not len(indices):
            return None
        device = self.cache.device
        fresh = self.runner(self.row_inputs(indices.to(device), views.to(device)))
        cached = payload["logits"][indices, views]
        if not isinstance(fresh, torch.Tensor) or fresh.shape != cached.shape:
            return "the teacher's outputs do not have the cached rows' shape"
        slack = recheck_slack(self.runner.autocast_dtype, device)
        return rows_mismatch(cached, fresh.cpu(), FP16_RELATIVE_ERROR, slack)

    def check_new_rows(self, payload):
        """check_rows on the rows a save would merge from the file (another run's, written since we read it)."""
        return self.check_rows(payload, payload["filled"] & ~self.cache.filled.cpu())


def cache_directory(setting, out_dir):
    """Where a run keeps its cache files: 'auto' -> <out_dir>/teacher_cache, 'off' -> None, else the path."""
    if setting in (None, "off"):
        return None
    return os.path.join(out_dir, "teacher_cache") if setting == "auto" else setting


def open_cache(runner, image_set, normalizer, augment, directory=None, device="cpu", row_inputs=None):
    """A CachedTeacher for one training split, loading the matching file under ``directory`` if there is one
    and it passes every check (a sample of its rows is recomputed through ROW_INPUTS, by default the split's
    own views)."""
    key = cache_key(runner.teacher, image_set, normalizer, augment, runner.autocast_dtype)
    cache = TeacherCache(len(image_set), NUM_VIEWS[augment], key, device)
    cache_file = CacheFile(directory, key) if directory else None
    if row_inputs is None:
        views = TensorLoader(image_set, 1, augment, device=device, normalizer=normalizer)

        def split_view_inputs(indices, view_ids):
            return views.make_batch(indices, view_ids).inputs
        row_inputs = split_view_inputs
    cached = CachedTeacher(runner, cache, cache_file, row_inputs)
    if cache_file is not None:
        cache.merge(cache_file.read(cache.num_images, cache.num_views, cached.check_rows))
        cache.dirty = False
    return cached


def resumed_cache_directory(setting, out_dir, recorded):
    """(directory or None, a note for the run log or None) for RunSpec.distillation.cache SETTING.

    With 'auto', a resumed run keeps the cache its checkpoint's run used (RECORDED), so it sees the very rows
    the interrupted run saw (a fresh cache recomputes rows in other batches, a few fp16 ulps apart) -- but only
    when that directory lies under OUT_DIR: a checkpoint must not point a run at logits kept elsewhere. An
    explicit ``--teacher-cache DIR`` is always used."""
    directory = cache_directory(setting, out_dir)
    directory = os.path.abspath(directory) if directory else None
    if setting != "auto" or not recorded or not os.path.isdir(recorded) or recorded == directory:
        return directory, None
    if _inside(recorded, out_dir):
        return recorded, None
    return directory, (f"The checkpoint's teacher cache {recorded} lies outside -o {out_dir}: not used (name it "
                       f"with --teacher-cache to use it); cache {directory}")


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def install_teacher_caches(policies, train_loader, setting, out_dir):
    """Serve each KD policy's teacher outputs from a cache for ``train_loader``'s split; returns the caches.

    ``setting`` is RunSpec.distillation.cache. Only policies whose teacher runs through a TeacherRunner
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
                                                train_loader.device,
                                                lambda indices, views: train_loader.make_batch(indices, views).inputs)
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
