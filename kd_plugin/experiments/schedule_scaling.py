"""Derived schedules: a schedule shrunk (or stretched) to another epoch count, or stripped of its KD.

Scaling keeps the recipe's shape: LR milestones, step sizes and policy epoch ranges move proportionally,
so a 350-epoch schedule with milestones [150, 250] becomes [4, 7] at 10 epochs. Milestones that fall
on epoch 0 or past the end disappear (with none left, the LR stays constant).
"""
import copy

import yaml

from ..distill.extension import KnowledgeDistillationExtension
from ..protocol.config import read_schedule
from ..util.errors import KDPluginError
from ..util.fileio import write_text

EPOCH_COUNT_ARGS = ("step_size", "T_max", "total_iters")


def schedule_epochs(sched):
    epochs = (sched.get("training") or {}).get("epochs")
    if epochs:
        return epochs
    ends = [p.get("ending_epoch", 0) for p in sched.get("policies") or []]
    ends += [max(p["epochs"]) + 1 for p in sched.get("policies") or [] if p.get("epochs")]
    return max(ends, default=None)


def scale_schedule(sched, epochs):
    """A copy of ``sched`` for ``epochs`` epochs."""
    original = schedule_epochs(sched)
    if not original:
        raise KDPluginError("cannot scale a schedule that states no epoch count (training.epochs or policy ranges)")
    factor = epochs / original
    out = copy.deepcopy(sched)
    out.setdefault("training", {})["epochs"] = epochs
    dropped = set()
    for name, definition in (out.get("lr_schedulers") or {}).items():
        if "milestones" in definition:
            kept = sorted({round(m * factor) for m in definition["milestones"]} & set(range(1, epochs)))
            if not kept:
                dropped.add(name)
            definition["milestones"] = kept
        for arg in EPOCH_COUNT_ARGS:
            if arg in definition:
                definition[arg] = max(1, round(definition[arg] * factor))
    for name in dropped:
        del out["lr_schedulers"][name]
    out["policies"] = [_scale_policy(p, factor, original, epochs) for p in out.get("policies") or []
                       if (p.get("lr_scheduler") or {}).get("instance_name") not in dropped]
    return out


def _scale_policy(policy, factor, original, epochs):
    if "epochs" in policy:
        policy["epochs"] = sorted({min(epochs - 1, round(e * factor)) for e in policy["epochs"]})
        return policy
    start = min(epochs - 1, round(policy["starting_epoch"] * factor))
    end = epochs if policy["ending_epoch"] >= original else min(epochs, max(start + 1, round(policy["ending_epoch"]
                                                                                              * factor)))
    policy.update(starting_epoch=start, ending_epoch=end, frequency=max(1, min(policy["frequency"], end - start)))
    return policy


def strip_distillation(sched):
    """A copy of ``sched`` without its KnowledgeDistillationExtension entries and their policies."""
    out = copy.deepcopy(sched)
    extensions = out.get("extensions") or {}
    kd = {name for name, d in extensions.items() if d.get("class") == KnowledgeDistillationExtension.__name__}
    for name in kd:
        del extensions[name]
    if not extensions:
        out.pop("extensions", None)
    out["policies"] = [p for p in out.get("policies") or [] if (p.get("extension") or {}).get("instance_name")
                       not in kd]
    return out


def distillation_extension(sched):
    """The schedule's KD extension definition, or None."""
    for definition in (sched.get("extensions") or {}).values():
        if definition.get("class") == KnowledgeDistillationExtension.__name__:
            return definition
    return None


def write_schedule(sched, path, note):
    """Write a derived schedule and read it back through the validator, so a bad derivation fails here."""
    header = "".join(f"# {line}\n" for line in note.splitlines())
    write_text(path, header + yaml.safe_dump(sched, sort_keys=False))
    read_schedule(path)
    return path
