"""Distiller-schema YAML schedules (``distiller.config.file_config``) with an explicit class registry.

Distiller resolves ``class:`` names from its module globals; here they come from COMPONENT_CLASSES, so a
schedule can name only what is registered. The LR schedulers are torch's; the packages that define policies
register theirs with ``register_component`` (``kd_plugin.distill`` registers KD and JointNet's loss weights),
as models register into the zoo, so this parser imports nothing it builds.
"""
import inspect
import itertools
import math
import numbers
import os

import torch

from ..util.errors import KDPluginError
from ..util.safe_yaml import load_yaml
from .policy import LRPolicy
from .scheduler import CompressionScheduler

LR_SCHEDULERS = {cls.__name__: cls for cls in (
    torch.optim.lr_scheduler.MultiStepLR, torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.ExponentialLR,
    torch.optim.lr_scheduler.CosineAnnealingLR, torch.optim.lr_scheduler.ReduceLROnPlateau,
    torch.optim.lr_scheduler.LinearLR, torch.optim.lr_scheduler.PolynomialLR)}
EXTENSIONS = {}  # filled by register_component("extensions", ...)
COMPONENT_CHECKS = {}  # class name -> check(arguments) raising KDPluginError, for checks spanning arguments
COMPONENT_CLASSES = {"lr_schedulers": LR_SCHEDULERS, "extensions": EXTENSIONS}
UNSUPPORTED_SECTIONS = ("pruners", "regularizers", "quantizers")
KNOWN_SECTIONS = {"version", "policies", "training", *COMPONENT_CLASSES, *UNSUPPORTED_SECTIONS}
MAX_POLICY_EPOCH = 100_000  # spec.run.MAX_EPOCHS: a policy's epochs are materialised per epoch
# kd-plugin's addition to Distiller's schema: run defaults, so a schedule file alone describes an experiment.
# Command-line flags override them; the Distiller backend strips the section before handing the file over.
TRAINING_KEYS = {
    "arch": (lambda v: isinstance(v, str) and v, "a model name"),
    "epochs": (lambda v: _is_int(v) and 1 <= v <= MAX_POLICY_EPOCH, f"an integer >= 1 (at most {MAX_POLICY_EPOCH})"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "optimizer": (lambda v: v in ("sgd", "adam"), "sgd or adam"),
    "augment": (lambda v: v in ("y", "n"), "y or n"),
    "validation_split": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "dataset": (lambda v: isinstance(v, str) and v, "a dataset name (kd_plugin.data.list_datasets)"),
}
POLICY_KINDS = {"lr_scheduler": "lr_schedulers", "extension": "extensions"}
# Policy kinds only Distiller's own parser builds (``--backend distiller``).
DISTILLER_POLICY_KINDS = {"pruner": "pruners", "regularizer": "regularizers", "quantizer": "quantizers"}
SCHEDULE_KEYS = {"epochs", "starting_epoch", "ending_epoch", "frequency"}
INJECTED_ARGS = {"lr_schedulers": ("optimizer",), "extensions": ("model",)}

# Per-argument checks of the values a schedule may give: (predicate, what it must be).
POSITIVE = (lambda v: _is_number(v) and v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: _is_number(v) and v >= 0, "a number >= 0")
# Counted in epochs: torch takes a float silently (step_size 1.5 gives lr 0 from epoch 1, T_max 2.5 never anneals).
POSITIVE_EPOCHS = (lambda v: _is_int(v) and v > 0, "an integer > 0 (epochs)")
ARG_CHECKS = {
    "gamma": POSITIVE, "step_size": POSITIVE_EPOCHS, "T_max": POSITIVE_EPOCHS, "total_iters": POSITIVE_EPOCHS,
    "eta_min": NON_NEGATIVE, "power": POSITIVE, "start_factor": POSITIVE, "end_factor": NON_NEGATIVE,
    "milestones": (lambda v: isinstance(v, list) and v and all(_is_int(x) and x > 0 for x in v)
                   and all(a < b for a, b in itertools.pairwise(v)), "a strictly increasing list of positive integers"),
    # Every other argument of the registered LR schedulers, so a wrong type is refused when the schedule is
    # read instead of failing after an epoch of work (ReduceLROnPlateau compares them only in step()).
    # A schedule starts at epoch 0; a resumed run restores the scheduler's position from its checkpoint.
    "last_epoch": (lambda v: v == -1 and _is_int(v), "-1 (a resumed run restores the position from its checkpoint)"),
    "mode": (lambda v: v in ("min", "max"), "min or max"),
    "threshold_mode": (lambda v: v in ("rel", "abs"), "rel or abs"),
    "factor": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "patience": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "cooldown": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "threshold": NON_NEGATIVE, "eps": NON_NEGATIVE,
    "min_lr": (lambda v: _is_number(v) and v >= 0 or isinstance(v, list) and v and all(_is_number(x) and x >= 0
                                                                                        for x in v),
               "a number >= 0 or a list of them"),
}


PATH_ARGS = {}  # class name -> arguments that are file paths, relative to the schedule file's folder


def register_component(section, cls, arg_checks=None, check=None, path_args=()):
    """Make CLS a valid ``class:`` name in SECTION of a schedule; ARG_CHECKS maps its arguments to
    (predicate, what it must be); CHECK(arguments) may check them together (raising KDPluginError); PATH_ARGS
    names arguments that are file paths (a relative one is read relative to the schedule file's folder).
    Returns CLS, so it can decorate a class."""
    COMPONENT_CLASSES[section][cls.__name__] = cls
    PATH_ARGS[cls.__name__] = tuple(path_args)
    if check is not None:
        COMPONENT_CHECKS[cls.__name__] = check
    for arg, arg_check in (arg_checks or {}).items():
        if ARG_CHECKS.setdefault(arg, arg_check)[1] != arg_check[1]:
            raise KDPluginError(f"schedule argument {arg!r} of {cls.__name__} already has another check")
    return cls


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class ScheduleError(KDPluginError):
    pass


def read_schedule(path, distiller_components=False):
    """Load and structurally validate a schedule file; returns the dict.

    With ``distiller_components`` (Distiller's runtime builds the schedule), pruners, regularizers, quantizers
    and classes kd-plugin does not know are left for Distiller's parser to check; kd-plugin's own classes and
    the ``training`` section are still checked here.
    """
    sched = load_yaml(path)
    if sched is None:
        sched = {}
    if not isinstance(sched, dict):
        raise ScheduleError(f"{path}: a schedule must be a mapping of sections, found {type(sched).__name__}")
    unknown = sorted(set(sched) - KNOWN_SECTIONS)
    if unknown:
        raise ScheduleError(f"{path}: unknown section {unknown[0]!r} (known: {', '.join(sorted(KNOWN_SECTIONS))})")
    for section in () if distiller_components else UNSUPPORTED_SECTIONS:
        if sched.get(section):
            raise ScheduleError(f"{path}: section {section!r} needs Distiller's own runtime (--backend distiller); "
                                f"the built-in runtime supports lr_schedulers and extensions")
    _check_training(path, sched.get("training"))
    for section, classes in COMPONENT_CLASSES.items():
        entries = sched.get(section) or {}
        if not isinstance(entries, dict):
            raise ScheduleError(f"{path}: section {section!r} must map instance names to definitions")
        for name, definition in entries.items():
            if distiller_components and isinstance(definition, dict) and definition.get("class") not in classes:
                continue
            _check_component(path, section, name, definition, classes)
    policies = sched.get("policies") or []
    if not isinstance(policies, list):
        raise ScheduleError(f"{path}: 'policies' must be a list")
    kinds = {**POLICY_KINDS, **DISTILLER_POLICY_KINDS} if distiller_components else POLICY_KINDS
    for index, policy_def in enumerate(policies):
        _check_policy(path, sched, index, policy_def, kinds)
    return resolve_paths(sched, path)


def resolve_paths(sched, path):
    """Relative file paths in the schedule's components, made relative to the schedule file's folder (so a
    schedule runs from any working directory); absolute ones are kept."""
    base = os.path.dirname(os.path.abspath(path))
    for section in COMPONENT_CLASSES:
        for definition in (sched.get(section) or {}).values():
            for arg in PATH_ARGS.get(definition.get("class"), ()) if isinstance(definition, dict) else ():
                value = definition.get(arg)
                if isinstance(value, list):  # one path per member of an ensemble
                    definition[arg] = [_relative_to(base, v) for v in value]
                elif isinstance(value, str):
                    definition[arg] = _relative_to(base, value)
    return sched


def _relative_to(base, value):
    """A schedule's relative path VALUE as a path from the schedule file's folder BASE (anything else as it is)."""
    if isinstance(value, str) and value and not os.path.isabs(value):
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    return value


def _check_training(path, training):
    if training is None:
        return
    if not isinstance(training, dict):
        raise ScheduleError(f"{path}: section 'training' must be a mapping")
    for key, value in training.items():
        if key not in TRAINING_KEYS:
            raise ScheduleError(f"{path}: training.{key}: unknown key (known: {', '.join(TRAINING_KEYS)})")
        check, wanted = TRAINING_KEYS[key]
        if not check(value):
            raise ScheduleError(f"{path}: training.{key} must be {wanted}, got {value!r}")


def _check_component(path, section, name, definition, classes):
    where = f"{path}: {section}.{name}"
    if not isinstance(definition, dict) or "class" not in definition:
        raise ScheduleError(f"{where}: must be a mapping with a 'class' entry")
    class_name = definition["class"]
    if class_name not in classes:
        raise ScheduleError(f"{where}: unknown class {class_name!r} (known: {', '.join(sorted(classes))})")
    params = inspect.signature(classes[class_name].__init__).parameters
    for arg, value in definition.items():
        if arg == "class":
            continue
        if arg not in params or arg in INJECTED_ARGS[section] or arg == "self":
            raise ScheduleError(f"{where}: unknown argument {arg!r} for {class_name}")
        if arg in ARG_CHECKS and not ARG_CHECKS[arg][0](value):
            raise ScheduleError(f"{where}: {arg} must be {ARG_CHECKS[arg][1]}, got {value!r}")
    required = [p for p, spec in params.items()
                if spec.default is inspect.Parameter.empty and p not in ("self", *INJECTED_ARGS[section])
                and spec.kind is spec.POSITIONAL_OR_KEYWORD]
    missing = [p for p in required if p not in definition]
    if missing:
        raise ScheduleError(f"{where}: missing argument {missing[0]!r} for {class_name}")
    if class_name in COMPONENT_CHECKS:
        try:
            COMPONENT_CHECKS[class_name]({k: v for k, v in definition.items() if k != "class"})
        except KDPluginError as err:
            raise ScheduleError(f"{where}: {err}") from None


def _check_policy(path, sched, index, policy_def, policy_kinds=POLICY_KINDS):
    where = f"{path}: policies[{index}]"
    if not isinstance(policy_def, dict):
        raise ScheduleError(f"{where}: must be a mapping")
    kinds = [k for k in policy_def if k in policy_kinds]
    unknown = [k for k in policy_def if k not in policy_kinds and k not in SCHEDULE_KEYS]
    if unknown:
        raise ScheduleError(f"{where}: unknown key {unknown[0]!r}")
    if len(kinds) != 1:
        raise ScheduleError(f"{where}: needs exactly one of {', '.join(policy_kinds)}")
    ref = policy_def[kinds[0]]
    if not isinstance(ref, dict) or "instance_name" not in ref:
        raise ScheduleError(f"{where}: {kinds[0]} must be a mapping with 'instance_name'")
    section = policy_kinds[kinds[0]]
    if ref["instance_name"] not in (sched.get(section) or {}):
        raise ScheduleError(f"{where}: instance_name {ref['instance_name']!r} is not defined in {section}")
    _policy_epochs(where, policy_def)


def _policy_epochs(where, policy_def):
    """Distiller's two forms: an explicit epochs list, or all of starting_epoch, ending_epoch, frequency."""
    if "epochs" in policy_def:
        epochs = policy_def["epochs"]
        if not isinstance(epochs, list) or not epochs or not all(_is_int(e) and 0 <= e < MAX_POLICY_EPOCH
                                                                 for e in epochs):
            raise ScheduleError(f"{where}: epochs must be a non-empty list of integers >= 0")
        return {"epochs": epochs}
    try:
        start, end, freq = (policy_def[k] for k in ("starting_epoch", "ending_epoch", "frequency"))
    except KeyError as missing:
        raise ScheduleError(f"{where}: needs 'epochs' or all of starting_epoch, ending_epoch, frequency "
                            f"({missing.args[0]} missing)") from None
    if not all(_is_int(v) for v in (start, end, freq)) or not 0 <= start < end <= MAX_POLICY_EPOCH \
            or not 0 < freq <= end - start:
        raise ScheduleError(f"{where}: bad epoch range starting_epoch={start}, ending_epoch={end}, frequency={freq} "
                            f"(need 0 <= start < end <= {MAX_POLICY_EPOCH} and 0 < frequency <= end - start)")
    return {"starting_epoch": start, "ending_epoch": end, "frequency": freq}


def dict_config(model, optimizer, sched_dict, scheduler=None, resumed_epoch=None, overrides=None, source="schedule"):
    """Build (or extend) a CompressionScheduler from a validated schedule dict.

    ``overrides`` maps a section to argument values that win over the file's (command-line flags).
    """
    scheduler = scheduler or CompressionScheduler(model)
    overrides = overrides or {}
    instances = {}
    for section, classes in COMPONENT_CLASSES.items():
        instances[section] = {}
        for name, definition in (sched_dict.get(section) or {}).items():
            args = component_args(section, definition, overrides)
            injected = {"optimizer": optimizer} if section == "lr_schedulers" else {"model": model}
            try:
                instances[section][name] = classes[definition["class"]](**injected, **args)
            except KDPluginError as err:
                raise ScheduleError(f"{source}: {section}.{name}: {err}") from None
            except (TypeError, ValueError) as err:
                raise ScheduleError(f"{source}: {section}.{name}: {err}") from None
    for index, policy_def in enumerate(sched_dict.get("policies") or []):
        kind = next(k for k in policy_def if k in POLICY_KINDS)
        instance = instances[POLICY_KINDS[kind]][policy_def[kind]["instance_name"]]
        policy = LRPolicy(instance) if kind == "lr_scheduler" else instance
        scheduler.add_policy(policy, **_policy_epochs(f"{source}: policies[{index}]", policy_def))
    scheduler.components = instances
    return scheduler


def component_args(section, definition, overrides):
    """A component's arguments: the schedule's, with the ``overrides`` its class accepts (non-None) winning."""
    args = {k: v for k, v in definition.items() if k != "class"}
    cls = COMPONENT_CLASSES.get(section, {}).get(definition["class"])
    if cls is not None:
        accepted = inspect.signature(cls.__init__).parameters
        args.update({k: v for k, v in (overrides or {}).get(section, {}).items() if v is not None and k in accepted})
    return args


def file_config(model, optimizer, filename, scheduler=None, resumed_epoch=None, overrides=None):
    """Distiller's ``file_config``: read FILE and return the CompressionScheduler it describes."""
    return dict_config(model, optimizer, read_schedule(filename), scheduler, resumed_epoch, overrides, filename)
