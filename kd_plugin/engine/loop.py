"""One training epoch and one evaluation pass, calling the CompressionScheduler in Distiller's order."""
import math
import time

import torch
from tqdm import tqdm

from ..data import to_model_input
from ..util.errors import NonFiniteLoss
from .meters import EpochMeter, topk_correct


class StopRequest:
    """Set by a signal handler; the loop finishes the current step and returns."""

    def __init__(self):
        self.signum = None

    def __bool__(self):
        return self.signum is not None

    def agree(self, loss, check):
        """(rank with a non-finite loss or None, stop after this step: None = ask again after the step).
        One process decides alone; engine.distributed.DistributedStop makes all ranks decide together."""
        return (0 if check and not bool(torch.isfinite(loss)) else None), None

    def settle(self):
        return bool(self)


def epoch_batches(loader, epoch, start_batch=0, batch_hook=None, progress=True):
    """(batch_id, batch) of EPOCH from START_BATCH on, under a tqdm bar; BATCH_HOOK sees each batch first."""
    bar = tqdm(total=len(loader), initial=start_batch, desc=f"epoch {epoch}", leave=False, disable=not progress,
               mininterval=1.0, unit="batch")
    try:
        for batch_id, batch in enumerate(loader.epoch(epoch, start_batch), start=start_batch):
            if batch_hook is not None:
                batch_hook(batch)
            yield batch_id, batch
            bar.update(1)
    finally:
        bar.close()


def train_epoch(model, loader, criterion, optimizer, scheduler, epoch, start_batch=0, meter=None,
                stop=None, batch_hook=None, progress=True, check_every=1, grad_scaler=None):
    """Train one epoch. Returns (meter, next_batch, seconds); next_batch < len(loader) if stopped early.

    ``grad_scaler`` (torch.amp.GradScaler, for fp16 autocast) scales the backward pass; gradients are
    unscaled again before the scheduler's ``before_parameter_optimization`` sees them.
    """
    model.train()
    meter = meter or EpochMeter()
    stop = stop if stop is not None else StopRequest()
    steps = len(loader)
    began = time.perf_counter()
    next_batch = start_batch
    for batch_id, batch in epoch_batches(loader, epoch, start_batch, batch_hook, progress):
        scheduler.on_minibatch_begin(epoch, batch_id, steps, optimizer)
        output = model(to_model_input(batch.inputs, loader.normalization, model))
        loss = criterion(output, batch.labels)
        agg = scheduler.before_backward_pass(epoch, batch_id, steps, loss, optimizer=optimizer,
                                             return_loss_components=True)
        overall = agg.overall_loss
        bad_rank, stopping = stop.agree(overall, (batch_id + 1) % check_every == 0 or batch_id + 1 == steps)
        if bad_rank is not None:  # this rank's loss, or another rank's under DDP
            raise non_finite_loss(overall, epoch, batch_id,
                                  f" on rank {bad_rank}" if getattr(stop, "group", None) else "")
        weight = getattr(batch, "weight", 1.0)  # a rank's share of a distributed global batch (distributed.py)
        optimizer_step(overall if weight == 1.0 else overall * weight, optimizer, scheduler, epoch, batch_id, steps,
                       grad_scaler)
        top1, top5 = topk_correct(output.detach(), batch.labels)
        components = {c.name: c.value for c in agg.loss_components}
        if weight:
            meter.add(len(batch.labels), **{"Overall Loss": overall, "Objective Loss": loss}, **components,
                      top1_correct=top1, top5_correct=top5)
        next_batch = batch_id + 1
        if stop if stopping is None else stopping:
            break
    return meter, next_batch, time.perf_counter() - began


def non_finite_loss(overall, epoch, batch_id, where=""):
    """The NonFiniteLoss for a step whose loss (this one, or another rank's: WHERE says " on rank N") is NaN/Inf."""
    value = float(overall.detach())
    return NonFiniteLoss(f"loss became {value if not math.isfinite(value) else 'non-finite'}{where} at epoch "
                         f"{epoch}, batch {batch_id}; stopped without saving (the last good and best checkpoints "
                         f"are untouched)")


def check_finite(overall, epoch, batch_id):
    if not bool(torch.isfinite(overall)):
        raise non_finite_loss(overall, epoch, batch_id)


def optimizer_step(overall, optimizer, scheduler, epoch, batch_id, steps, grad_scaler=None):
    """Backward pass and parameter update of one step, with the scheduler's callbacks in Distiller's order."""
    optimizer.zero_grad(set_to_none=True)
    if grad_scaler is None:
        overall.backward()
    else:
        grad_scaler.scale(overall).backward()
        grad_scaler.unscale_(optimizer)
    scheduler.before_parameter_optimization(epoch, batch_id, steps, optimizer)
    if grad_scaler is None:
        optimizer.step()
    else:
        grad_scaler.step(optimizer)
        grad_scaler.update()
    scheduler.on_minibatch_end(epoch, batch_id, steps, optimizer)


@torch.no_grad()
def evaluate_loader(model, loader, criterion=None, num_classes=None, autocast_dtype=None):
    """Loss, top-1/top-5 and a confusion matrix (NUM_CLASSES: the loader's dataset's classes) over a loader, in
    eval mode."""
    num_classes = num_classes or len(loader.image_set.classes)
    model.eval()
    meter = EpochMeter()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=loader.device)
    criterion = criterion or torch.nn.CrossEntropyLoss()
    for batch in loader.epoch(0):
        inputs = to_model_input(batch.inputs, loader.normalization, model)  # the model's own normalization
        if autocast_dtype is None:
            output = model(inputs)
        else:
            with torch.autocast(inputs.device.type, dtype=autocast_dtype):
                output = model(inputs).float()
        top1, top5 = topk_correct(output, batch.labels)
        meter.add(len(batch.labels), Loss=criterion(output, batch.labels), top1_correct=top1, top5_correct=top5)
        confusion += torch.bincount(batch.labels * num_classes + output.argmax(1),
                                    minlength=num_classes * num_classes).view(num_classes, num_classes)
    results = meter.results()
    results["confusion"] = confusion.cpu()
    return results


def per_class_accuracy(confusion, class_names):
    totals = confusion.sum(dim=1).clamp(min=1)
    return {name: 100.0 * float(confusion[i, i]) / float(totals[i]) for i, name in enumerate(class_names)}
