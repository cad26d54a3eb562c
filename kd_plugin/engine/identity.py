"""The identity of an experiment, recorded in every checkpoint and compared on resume (issue 12).

A resumed run must continue the same experiment: the same teachers (arch and weights), temperatures, loss
weights and kinds, optimizer and hyper-parameters, schedule, and the data order's inputs (seed, batch size,
augmentation, training split). Each entry is a flat, printable value so that a refusal can name every
difference in one line (``T: 1.5 -> 4.0, lr: 0.1 -> 0.05``); ``--resume-accept-changes`` takes them deliberately.
"""
import hashlib
import json
import os

from ..distill.teacher import weights_digest
from ..spec import RunSpec
from ..util.errors import KDPluginError, one_line

ACCEPT_FLAG = "--resume-accept-changes"
# Hyper-parameters of torch optimizers worth naming (as configured: the optimizer's defaults, not its current
# param-group values, which LR schedulers move).
PLAIN = (str, int, float, bool, list, type(None))  # what an identity entry may hold; anything else differs
# Entries every identity kd-plugin has written holds: a record without them was emptied or damaged, and
# comparing only what it still holds would accept any change.
REQUIRED_ENTRIES = frozenset({"seed", "batch_size", "optimizer", "schedule"})
OPTIMIZER_FIELDS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "betas", "eps", "amsgrad")


def schedule_digest(sched_dict):
    """Digest of the schedule in force, without its ``training:`` section (each of those values is compared
    on its own, and ``epochs`` may grow when a finished run is continued)."""
    if not sched_dict:
        return "none"
    content = {k: v for k, v in sched_dict.items() if k != "training"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def loss_kind(policy):
    """The distillation loss with its arguments (``dkd (alpha=1, beta=8, warmup=20)``)."""
    return policy.distillation_loss.describe()


def policy_identity(policy, starting_epoch):
    teacher = policy.teacher
    weights = policy.loss_wts
    return {"teacher": getattr(teacher, "arch", type(teacher).__name__), "teacher weights": weights_digest(teacher),
            "T": policy.temperature, "distill weight": weights.distill, "student weight": weights.student,
            "teacher weight": weights.teacher, "loss": loss_kind(policy), "KD start epoch": starting_epoch}


def experiment_identity(run_checks, optimizer, policies, sched_dict, spec=None):
    """RUN_CHECKS (seed, batch size, augment, data hash ...), the SPEC's fields compared by value (named by their
    flags), plus what is built from the rest: optimizer, schedule and distillation policies (a list of (policy,
    starting_epoch)); the second policy's entries are prefixed 'KD 2 ', and so on."""
    identity = {**run_checks, **(spec.compared() if spec is not None else {})}
    identity["optimizer"] = type(optimizer).__name__
    for name in OPTIMIZER_FIELDS:
        if name in optimizer.defaults:
            value = optimizer.defaults[name]
            identity[name] = list(value) if isinstance(value, tuple) else value
    identity["schedule"] = schedule_digest(sched_dict)
    identity["distillation policies"] = len(policies)
    for index, (policy, starting_epoch) in enumerate(policies):
        prefix = "" if index == 0 else f"KD {index + 1} "
        identity.update({prefix + k: v for k, v in policy_identity(policy, starting_epoch).items()})
    return identity


# Changes --resume-accept-changes cannot carry out, and why: the resumed state would keep the old setting while the
# run's records show the new one.
NOT_APPLICABLE = {"schedule": "the checkpoint's LR-scheduler state holds the old schedule (milestones, steps), so a "
                              "resumed run would go on with it; start a new run from these weights with "
                              "--exp-load-weights-from, or resume with the original schedule"}


def identity_changes(recorded, now):
    """['key: old -> new', ...] for every recorded entry that differs ('none' where this run has no such entry).
    Entries the checkpoint does not record are not compared (an added policy shows in 'distillation policies')."""
    return [f"{key}: {_show(old)} -> {_show(now.get(key))}" for key, old in recorded.items()
            if not isinstance(old, PLAIN) or now.get(key) != old]


def check_resume_identity(path, recorded, now, accept):
    """The changes a resume makes to the experiment recorded in checkpoint PATH (empty: none); a change is
    refused unless ACCEPT (--resume-accept-changes)."""
    if not isinstance(recorded, dict):
        raise KDPluginError(f"{path}: the recorded experiment identity is not a mapping")
    if not recorded or not REQUIRED_ENTRIES.issubset(recorded.keys()):
        missing = ", ".join(sorted(REQUIRED_ENTRIES - recorded.keys()))
        raise KDPluginError(f"{path}: the recorded experiment identity lacks {missing}, so this resume cannot be "
                            f"checked; pass --reset-optimizer to take only the weights")
    changes = identity_changes(recorded, now)
    unapplicable = [key for key in NOT_APPLICABLE if key in recorded and recorded[key] != now.get(key)]
    if changes and accept and unapplicable:
        raise KDPluginError(f"{path}: {ACCEPT_FLAG} cannot apply a change of {', '.join(unapplicable)}: "
                            f"{'; '.join(NOT_APPLICABLE[key] for key in unapplicable)}")
    if changes and not accept:
        raise KDPluginError(f"{path}: resuming would change the experiment ({', '.join(changes)}); resume with the "
                            f"same settings, pass {ACCEPT_FLAG} to continue with these changes, or "
                            f"--reset-optimizer to take only the weights")
    return changes


def check_resume(path, plugin_state, identity, run_checks, accept):
    """The changes a resume of checkpoint PATH accepts (see check_resume_identity), once its spec record has been
    checked (check_recorded_spec). A checkpoint that records no identity (written before it existed) is compared
    on the run entries it holds (RUN_CHECKS: seed, batch size, data ...), each a refusal."""
    check_recorded_spec(path, plugin_state)
    if "identity" in plugin_state:
        return check_resume_identity(path, plugin_state["identity"], identity, accept)
    recorded = plugin_state.get("run", {})
    for key, now in run_checks.items():
        if key in recorded and recorded[key] != now:
            raise KDPluginError(f"{path}: checkpoint was trained with {key}={recorded[key]}, this run has "
                                f"{key}={now}; resume with the same settings or pass --reset-optimizer")
    return []


def check_recorded_spec(path, plugin_state):
    """The run spec checkpoint PATH records (a RunSpec), None where it records none (Distiller's own checkpoint, or
    an older kd-plugin's); an empty or malformed record is refused, never read as "nothing to compare"."""
    if "spec" not in plugin_state:
        return None
    record = plugin_state["spec"]
    if not isinstance(record, dict) or not record:
        raise KDPluginError(f"{path}: the recorded run spec is empty or not a mapping, so this resume cannot be "
                            f"checked; pass --reset-optimizer to take only the weights")
    try:
        return RunSpec.from_record(record, os.path.dirname(os.path.abspath(path)))
    except KDPluginError as err:
        raise KDPluginError(f"{path}: the recorded run spec is malformed ({one_line(err)}); pass --reset-optimizer "
                            f"to take only the weights") from None


def uncompared_note(plugin_state):
    """A line for the run log naming what a resume from a checkpoint without a spec record could not compare."""
    if "spec" in plugin_state:
        return None
    fields = ", ".join(RunSpec.compared_flags())
    return (f"the checkpoint records no run spec (Distiller's own, or an older kd-plugin's): {fields} could not be "
            f"compared with it")


def _show(value):
    return "none" if value is None else str(value)
