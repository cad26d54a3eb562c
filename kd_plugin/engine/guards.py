"""Checks a run makes before any epoch starts, so a wrong input is one line instead of a traceback later
(issue 12), and the KD settings a run records for tables that must not trust the plan."""
import torch

from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir


def move_distillation_start(scheduler, policies, start):
    """--kd-start-epoch over a schedule's KD policy: the policy keeps its ending epoch and frequency and starts
    at START. An explicit ``epochs:`` list has no start to move and is refused."""
    for policy in policies:
        meta = scheduler.sched_metadata[policy]
        if meta.get("frequency") is None:
            raise KDPluginError("--kd-start-epoch cannot move a KD policy declared with an explicit 'epochs' list; "
                                "give starting_epoch/ending_epoch/frequency in the schedule instead")
        end, frequency = meta["ending_epoch"], meta["frequency"]
        if not start < end:
            raise KDPluginError(f"--kd-start-epoch {start}: the schedule's KD policy ends at epoch {end}")
        for listed in scheduler.policies.values():  # both runtimes keep {epoch: [policies]}
            while policy in listed:
                listed.remove(policy)
        scheduler.add_policy(policy, starting_epoch=start, ending_epoch=end, frequency=min(frequency, end - start))


def check_trainable(train_loader, validation_split):
    """A training split must give at least one batch of two or more images (BatchNorm needs two)."""
    if len(train_loader) == 0:
        raise KDPluginError(f"{train_loader.num_images} training image(s) left after --validation-split "
                            f"{validation_split:g}: a training batch needs at least 2; lower --validation-split")


def check_teacher_cache_dir(directory, policies):
    """A KD run's teacher-output cache must be writable, known at start-up rather than at the first save."""
    if directory and policies:
        try:
            ensure_writable_dir(directory)
        except KDPluginError as err:
            raise KDPluginError(f"--teacher-cache: {err}") from None


def check_optimizer_type(resume, optimizer):
    """A checkpoint's optimizer state only fits the optimizer it was saved from (Adam's state in SGD would
    load and then fail mid-step)."""
    saved = resume.content.get("optimizer_type")
    if "optimizer_state_dict" in resume.content and saved is not None and saved != type(optimizer).__name__:
        raise KDPluginError(f"{resume.path}: checkpoint was trained with {saved}, this run uses "
                            f"{type(optimizer).__name__}; resume with --optimizer {str(saved).lower()} or pass "
                            f"--reset-optimizer")


def distillation_record(scheduler, policies):
    """summary.json's ``distillation``: each KD policy's teacher, T, weights and epochs as the run used them."""
    return [{**policy.used_settings(), "starting_epoch": scheduler.sched_metadata[policy]["starting_epoch"],
             "ending_epoch": scheduler.sched_metadata[policy]["ending_epoch"]} for policy in policies]


def load_optimizer_state(optimizer, state, path, whose=""):
    """OPTIMIZER.load_state_dict(STATE), checked: torch accepts per-parameter buffers (momentum, Adam's moments)
    of another shape and fails only at the first step, after the run has started."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise KDPluginError(f"{path}: optimizer state{whose} does not fit this run ({err})") from None
    for index, (param, buffers) in enumerate(optimizer.state.items()):
        for name, value in buffers.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                raise KDPluginError(f"{path}: optimizer state{whose} does not fit this run (parameter {index}'s "
                                    f"{name} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)})")


def distillation_epochs(scheduler, policy, epochs):
    """(epochs of the run 0..EPOCHS-1 in which POLICY is active, epochs it is scheduled for beyond the run)."""
    scheduled = sorted(e for e, listed in scheduler.policies.items() if policy in listed)
    return [e for e in scheduled if e < epochs], [e for e in scheduled if e >= epochs]


def check_distillation_window(scheduler, policies, epochs, source):
    """A KD policy scheduled only outside the run's epochs would train a plain student: refused in one line."""
    for policy in policies:
        inside, beyond = distillation_epochs(scheduler, policy, epochs)
        if not inside:
            raise KDPluginError(f"{source}: the distillation policy is scheduled for epochs {beyond[0]}..{beyond[-1]}, "
                                f"but the run trains epochs 0..{epochs - 1}: it would never distill; move its "
                                f"starting_epoch/ending_epoch into the run or train for more epochs")
