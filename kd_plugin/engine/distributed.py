"""One run on several processes (``torchrun --nproc_per_node=N``): DistributedDataParallel, NCCL on GPUs, gloo on CPU.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (docs/DESIGN.md §10); without them, or with WORLD_SIZE=1, every helper
here is the single-process identity, so the trainer has one code path. What a distributed run shares:

* data: the (seed, epoch) order of ``TensorLoader.plan`` is cut into global batches of ``-b`` x world size and
  each global batch is split between the ranks (``ShardedLoader``), so every image is seen once per epoch and a
  step sees the images a single process with the global batch would see;
* files: rank 0 alone creates the run directory (the others get its path by broadcast), the log, the CSV and the
  checkpoints; an error on rank 0 while writing reaches every rank as the same one-line error (no rank waits in
  a collective for a peer that gave up);
* numbers: epoch meters are all-reduced (the logged loss and accuracy are global), BatchNorm buffers are taken
  from rank 0 at the end of each epoch so validation agrees on every rank, a checkpoint carries every rank's
  RNG and partial meter, so resuming with the same world size is exact;
* stopping: every step the ranks all-reduce (non-finite loss on some rank, signal on some rank) before the
  backward pass, so a NaN or a SIGINT/SIGTERM on any rank stops all of them at the same step.
"""
import contextlib
import gc
import logging
import os
import sys
from collections import namedtuple
from datetime import timedelta

import torch

from ..util.errors import KDPluginError
from .loop import StopRequest
from .rundir import CsvLog

# A Batch with the factor its loss is scaled by before backward: DDP averages gradients over ranks, so a
# rank holding n of a global batch's N images weighs its mean loss by n * world / N (1 when shares are equal,
# 0 for a filler image a rank trains on when the last global batch has fewer images than ranks).
WeightedBatch = namedtuple("WeightedBatch", ["inputs", "labels", "indices", "views", "weight"])
TIMEOUT = timedelta(minutes=int(os.environ.get("KD_PLUGIN_DDP_TIMEOUT_MIN", "30")))


class Single:
    """The single-process run: no collectives, rank 0 of 1."""

    rank, world_size, distributed = 0, 1, False

    def __init__(self, device):
        self.device = torch.device(device)

    @property
    def is_main(self):
        return self.rank == 0

    def wrap(self, model, sync_bn=False):
        return model

    def shard(self, loader):
        return loader

    def on_main(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def in_turns(self, fn):
        fn()

    def reduce_meter(self, meter):
        return meter

    def save_teacher_caches(self, caches):
        for cache in caches:
            cache.save()

    def sync_buffers(self, model):
        return model

    def gather(self, obj):
        return [obj]

    def stop_request(self):
        return StopRequest()

    def close(self):
        pass


class Distributed(Single):
    """This process's place in a torch.distributed process group started from torchrun's environment."""

    distributed = True
    joined_in_this_process = False

    def __init__(self, device, rank, world_size, local_rank):
        import torch.distributed as dist

        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        wants_gpu = torch.device(device).type == "cuda"
        if wants_gpu:
            if local_rank >= torch.cuda.device_count():
                raise KDPluginError(f"rank {rank}: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                                    f"GPU(s); start at most one process per GPU (--nproc_per_node)")
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        super().__init__(device)
        self.backend = "nccl" if wants_gpu else "gloo"
        if not dist.is_initialized():
            init = dict(backend=self.backend, timeout=TIMEOUT)
            if wants_gpu:
                init["device_id"] = self.device
            dist.init_process_group(**init)
        self.dist = dist
        self._owns_group = True
        Distributed.joined_in_this_process = True

    # --- collectives ------------------------------------------------------------------------------------
    def _broadcast(self, obj, src=0):
        box = [obj]
        self.dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather(self, obj):
        out = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def on_main(self, fn, *args, **kwargs):
        """FN on rank 0 only; its result (or its one-line error) reaches every rank."""
        return self._from(0, fn, *args, **kwargs)

    def in_turns(self, fn):
        """FN on each rank in turn (rank 0 first): for files that every rank adds to."""
        for rank in range(self.world_size):
            self._from(rank, fn)

    def _from(self, src, fn, *args, **kwargs):
        outcome = None
        if self.rank == src:
            try:
                outcome = ("ok", fn(*args, **kwargs))
            except KDPluginError as err:
                outcome = ("error", (type(err), str(err), getattr(err, "exit_code", 2)))
                self._broadcast(outcome, src)
                raise
        outcome = self._broadcast(outcome, src)
        if outcome[0] == "error":
            cls, message, code = outcome[1]
            error = KDPluginError(f"rank {src}: {message}")
            error.exit_code = code
            raise error
        return outcome[1]

    def save_teacher_caches(self, caches):
        """Every rank filled the rows of its own shards: the ranks add theirs to the cache file one after
        another (each write merges the file first), then all read the union back, as a resumed run would."""
        for cache in caches:
            self.in_turns(cache.save)
            if cache.cache_file is not None:
                cache.cache.merge(cache.cache_file.read(cache.cache.num_images, cache.cache.num_views))
                cache.cache.dirty = False

    def reduce_meter(self, meter):
        """Sum every rank's EpochMeter into global totals (same keys on every rank, in the same order)."""
        names = list(meter.sums)
        local = [float(meter.sums[name]) for name in names] + [float(meter.samples)]
        totals = torch.tensor(local, dtype=torch.float64, device=self._collective_device())
        self.dist.all_reduce(totals)
        values = totals.tolist()
        # VALUES ends with the sample count, which has no name: zip stops before it
        meter.sums = {name: torch.tensor(v, dtype=torch.float64) for name, v in zip(names, values, strict=False)}
        meter.samples = int(round(values[-1]))
        return meter

    def sync_buffers(self, model):
        """Rank 0's BatchNorm statistics everywhere (DDP broadcasts them before each forward, not after)."""
        for buffer in model.buffers():
            self.dist.broadcast(buffer.data, src=0)
        return model

    def stop_request(self):
        return DistributedStop(self)

    def _collective_device(self):
        return self.device if self.backend == "nccl" else torch.device("cpu")

    # --- model and data ---------------------------------------------------------------------------------
    def wrap(self, model, sync_bn=False):
        from torch.nn.parallel import DistributedDataParallel

        if sync_bn:
            if self.device.type != "cuda":
                raise KDPluginError("--sync-bn needs GPUs (torch's SyncBatchNorm has no CPU kernel); on CPU each "
                                    "rank's BatchNorm normalises with its own share of the batch")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.rank:  # dropout masks differ between ranks; rank 0 keeps the single-process stream
            torch.manual_seed(torch.initial_seed() + self.rank)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, loader):
        return ShardedLoader(loader, self.rank, self.world_size)

    def close(self):
        if self._owns_group and self.dist.is_initialized():
            self.dist.destroy_process_group()


def exit_process(code):
    """End this process with exit CODE (an int, or None for 0: what cli_entry's commands return).

    A process that joined a process group leaves with os._exit once its own files are flushed: the models it
    wrapped in DDP still hold the (destroyed) gloo group's C++ work objects, typically through the reference
    cycles of an interrupt's traceback, and when those are freed during interpreter finalization the worker
    threads take the GIL of a dying interpreter and the process aborts (SIGABRT, "terminate called without an
    active exception") after having printed its result, e.g. exit -6 instead of 143 after a SIGTERM (pytorch
    PR 179291). The cycles are collected first, while the interpreter is whole, then nothing is left to finalize.
    """
    if not Distributed.joined_in_this_process:
        sys.exit(code)
    gc.collect()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


class DistributedStop(StopRequest):
    """A StopRequest all ranks agree on: this process's signal is only acted on once every rank knows of it."""

    def __init__(self, group):
        super().__init__()
        self.group = group

    def _reduce(self, bad_here):
        flags = torch.tensor([self.group.rank + 1 if bad_here else 0, self.signum or 0], dtype=torch.int64,
                             device=self.group._collective_device())
        self.group.dist.all_reduce(flags, op=self.group.dist.ReduceOp.MAX)
        bad_rank, signum = (int(v) for v in flags.tolist())
        if signum:
            self.signum = self.signum or signum
        return (bad_rank - 1 if bad_rank else None), bool(signum)

    def agree(self, loss, check):
        """(rank with a non-finite loss or None, stop after this step?) — the same answer on every rank."""
        return self._reduce(not bool(torch.isfinite(loss.detach())))

    def settle(self):
        return self._reduce(False)[1]


class ShardedLoader:
    """This rank's share of every global batch of a TensorLoader (same plan, same batches, split by rank)."""

    def __init__(self, loader, rank, world_size):
        self.loader, self.rank, self.world_size = loader, rank, world_size
        self.global_batch = loader.batch_size * world_size

    def __getattr__(self, name):  # image_set, normalizer, augment, device, make_batch, ... of the full split
        return getattr(self.loader, name)

    def __len__(self):
        return (self.loader.num_images + self.global_batch - 1) // self.global_batch

    def epoch(self, epoch=0, start_batch=0):
        order, views = self.loader.plan(epoch)
        order, views = order.to(self.loader.device), views.to(self.loader.device)
        for start in range(start_batch * self.global_batch, len(order), self.global_batch):
            idx, view = order[start:start + self.global_batch], views[start:start + self.global_batch]
            mine = torch.tensor_split(torch.arange(len(idx), device=idx.device), self.world_size)[self.rank]
            weight = len(mine) * self.world_size / len(idx)
            if not len(mine):
                mine, weight = mine.new_zeros(1), 0.0
            yield WeightedBatch(*self.loader.make_batch(idx[mine], view[mine]), weight)


class MainOnlyCsv(CsvLog):
    """The CSV as every rank sees it (same rows); only rank 0 writes the file."""

    def __init__(self, path, is_main):
        self.is_main = is_main
        if is_main:
            super().__init__(path)
        else:
            self.path, self.rows = path, []

    def append(self, row):
        if self.is_main:
            return super().append(row)
        self.rows.append(row)


MODULES = {"compress_classifier": "kd_plugin.compress_classifier", "main_KD_CIFAR10": "kd_plugin.main_kd_cifar10",
           "kd-plugin": "kd_plugin"}


def relaunch_command(command, world_size):
    """COMMAND (program first) as the torchrun line that starts it again on WORLD_SIZE processes."""
    if world_size <= 1 or not command:
        return command
    return ["torchrun", f"--nproc_per_node={world_size}", "-m", MODULES.get(command[0], command[0]), *command[1:]]


def main_only_logger(run_dir, rank):
    """The run's logger on ranks other than 0: it writes nothing (rank 0 writes the log)."""
    logger = logging.getLogger(f"kd_plugin.run.{run_dir}.rank{rank}")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


def is_main_process():
    """False on the ranks other than 0 of a torchrun job: for files written after a run (rank 0 writes them)."""
    return int(os.environ.get("RANK", "0") or 0) == 0 or int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1


def from_environment(device):
    """Single(device) outside torchrun; Distributed(...) when torchrun started this process with WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return Single(device)
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    except (KeyError, ValueError):
        raise KDPluginError("WORLD_SIZE is set but RANK is not: start distributed runs with torchrun") from None
    group = Distributed(device, rank, world_size, local_rank)
    if rank != 0:  # one copy of what a run prints (log lines, "Log directory"), from rank 0
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stays open as the process's stdout until it exits)
    return group
