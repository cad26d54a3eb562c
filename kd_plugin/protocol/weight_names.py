"""Pruning and regularization schedules name the weights they act on; a name that matches no parameter makes
Distiller's pruner or regularizer silently do nothing (it compares names exactly with
``model.named_parameters()``). Here such a schedule is an error naming the unmatched names and the closest
existing ones. Names differ between Distiller's own models and kd-plugin's (README "Running inside
Distiller"): a ``module.`` prefix under DataParallel, ResNet ``downsample`` vs ``shortcut``, ``fc`` vs ``linear``.
"""
import difflib

from .config import ScheduleError

# Where each component kind lists weight names: a list (or one name) or the keys of a mapping.
NAME_ARGS = {"pruners": ("weights", "sensitivities"), "regularizers": ("weights", "reg_regims")}
WILDCARD = "*"  # Distiller's sensitivity pruners: "every other weight"


def named_weights(definition, section):
    """The parameter names a pruner/regularizer definition refers to."""
    names = []
    for arg in NAME_ARGS.get(section, ()):
        value = definition.get(arg) if isinstance(definition, dict) else None
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, (list, tuple)):
            names.extend(v for v in value if isinstance(v, str))
        elif isinstance(value, dict):
            names.extend(k for k in value if isinstance(k, str))
    return [n for n in names if n != WILDCARD]


def closest(name, existing, n=3):
    return difflib.get_close_matches(name, existing, n=n, cutoff=0.4)


def unmatched_message(name, existing):
    near = closest(name, existing)
    return f"{name} (closest: {', '.join(near)})" if near else f"{name} (no similar name)"


def check_weight_names(sched_dict, parameter_names, source="schedule"):
    """Raise ScheduleError when a pruner or regularizer names a weight that PARAMETER_NAMES (the model's
    ``named_parameters()`` names, exactly as Distiller compares them) does not have."""
    existing = list(parameter_names)
    known = set(existing)
    for section in NAME_ARGS:
        for instance, definition in (sched_dict.get(section) or {}).items():
            missing = [n for n in named_weights(definition, section) if n not in known]
            if missing:
                shown = "; ".join(unmatched_message(n, existing) for n in missing[:4])
                more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
                raise ScheduleError(f"{source}: {section}.{instance}: {len(missing)} weight name(s) match no "
                                    f"parameter of the model, so it would do nothing: {shown}{more}")
