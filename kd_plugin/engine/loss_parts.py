"""A distillation loss's trainable parts (a FitNets regressor, CRD's embeddings) join the run: built from the
hooked shapes once the schedule exists, added to the optimizer as one more parameter group (the run's lr,
momentum and weight decay, and every LR scheduler's schedule), and kept in the checkpoint through the
policy's state (kd_plugin.protocol.scheduler), so a resumed run continues them exactly."""
import torch

from ..util.errors import KDPluginError


def prepare_loss_parts(policies, scheduler, optimizer, train_set, device, distributed=False):
    """Build the trainable parts of every feature-comparing policy; returns the notes for the run's log.
    DISTRIBUTED (torchrun): refused, as the parts are not synchronized between ranks (yet)."""
    notes = []
    for policy in policies:
        source = getattr(policy, "feature_source", None)
        if source is None:
            continue
        if distributed:
            raise KDPluginError(f"loss {source.loss.name} compares intermediate features, which kd-plugin does not "
                                f"distribute across torchrun ranks yet; run it in one process")
        notes.append(source.note)
        module = source.prepare(train_set, device)
        params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
        if params:
            join_optimizer(optimizer, scheduler, params)
    return notes


def join_optimizer(optimizer, scheduler, params):
    """PARAMS as a new group of OPTIMIZER at the current learning rate of its first group, scheduled by every
    LR scheduler of SCHEDULER as its other groups are."""
    first = optimizer.param_groups[0]
    optimizer.add_param_group({"params": params, "lr": first["lr"]})
    group = optimizer.param_groups[-1]
    if "initial_lr" in first:
        group["initial_lr"] = first["initial_lr"]
    for policy in scheduler.sched_metadata:
        lr_scheduler = getattr(policy, "lr_scheduler", None)
        if lr_scheduler is None or getattr(lr_scheduler, "optimizer", None) is not optimizer:
            continue
        if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            lr_scheduler.min_lrs.append(lr_scheduler.min_lrs[0])
        else:
            lr_scheduler.base_lrs.append(group.get("initial_lr", group["lr"]))
            if getattr(lr_scheduler, "_last_lr", None) is not None:
                lr_scheduler._last_lr.append(group["lr"])
