"""Distillation losses by name, as the model zoo registers networks (timm-style); ``A+B`` names the sum of
registered losses (a logit loss and a feature loss: ``kd+at``)."""
from ...util.errors import KDPluginError
from .base import DistillationLoss

_losses: dict[str, type[DistillationLoss]] = {}


def register_loss(cls):
    """Class decorator: make CLS selectable as ``loss: NAME`` / ``--kd-loss NAME``."""
    if cls.name in _losses:
        raise ValueError(f"distillation loss {cls.name!r} registered twice")
    _losses[cls.name] = cls
    return cls


def list_losses():
    return sorted(_losses)


def loss_class(name):
    if name not in _losses:
        raise KDPluginError(f"unknown distillation loss {name!r} (known: {', '.join(list_losses())})")
    return _losses[name]


def create_loss(name, **kwargs):
    """The loss NAME with KWARGS (temperature, logit_standardize and the loss's own arguments), checked;
    ``A+B``: the losses A and B together (CombinedLoss)."""
    if isinstance(name, str) and "+" in name:
        return CombinedLoss(name.split("+"), **kwargs)
    return loss_class(name)(**kwargs)


class CombinedLoss(DistillationLoss):
    """Several registered losses in one run (``kd+at``): every part's terms, each argument going to the one part
    that takes it. Temperature and reference weights are the first part's (put the logit loss first)."""

    def __init__(self, names, temperature=None, logit_standardize=False, **arguments):
        if len(set(names)) != len(names) or not all(names):
            raise KDPluginError(f"loss {'+'.join(names)!r}: name each loss once")
        classes = [loss_class(n) for n in names]
        for arg in arguments:
            takers = [cls.name for cls in classes if arg in cls.arguments]
            if len(takers) != 1:
                known = ", ".join(f"{a} ({cls.name})" for cls in classes for a in cls.arguments) or "none"
                which = "no part takes" if not takers else "several parts take"
                raise KDPluginError(f"loss {'+'.join(names)}: {which} argument {arg!r} (arguments: {known})")
        self.parts = [cls(temperature=temperature, logit_standardize=logit_standardize,
                          **{a: v for a, v in arguments.items() if a in cls.arguments}) for cls in classes]
        self.name = "+".join(names)
        self.uses_features = any(getattr(p, "uses_features", False) for p in self.parts)
        self.needs_labels = any(p.needs_labels for p in self.parts)
        self.default_weights = self.parts[0].default_weights
        self.temperature = self.parts[0].temperature
        self.logit_standardize = logit_standardize
        self.args = {f"{p.name}.{a}": v for p in self.parts for a, v in p.args.items()}

    def __call__(self, student_logits, teacher_logits, labels=None, epoch=0, features=None):
        terms = []
        for part in self.parts:
            extra = {"features": features} if getattr(part, "uses_features", False) else {}
            terms += part(student_logits, teacher_logits, labels, epoch=epoch, **extra)
        return terms

    def changed_args(self):
        return {k: v for p in self.parts for k, v in p.changed_args().items()}

    def describe(self):
        return " + ".join(p.describe() for p in self.parts)


def parse_loss_spec(spec):
    """``NAME[+NAME...][+ls][:ARG=VALUE,...]`` (the sweep's --kd-loss values) -> (name, {arg: value},
    logit_standardize)."""
    head, _, tail = spec.partition(":")
    parts = head.split("+")
    standardize = len(parts) > 1 and parts[-1] == "ls"
    names = parts[:-1] if standardize else parts
    unknown = next((n for n in names[1:] if n not in _losses), None)
    if unknown is not None:
        raise KDPluginError(f"loss {spec!r}: {unknown!r} is not a loss, and the only suffix is '+ls' (logit "
                            f"standardization)")
    name = "+".join(names)
    args = dict(parse_loss_arg(item, spec) for item in tail.split(",")) if tail else {}
    create_loss(name, logit_standardize=standardize, **args)  # checks the name and the arguments
    return name, args, standardize


def parse_loss_arg(text, where=None):
    """``NAME=VALUE`` -> (name, int, float, bool or, for anything else, string value: module names for
    feature losses; each loss checks its own arguments' types)."""
    arg, sep, raw = text.partition("=")
    if not sep or not arg or not raw:
        raise KDPluginError(f"{where or 'loss argument'}: expected NAME=VALUE, got {text!r}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return arg, lowered == "true"
    for convert in (int, float):
        try:
            return arg, convert(raw)
        except ValueError:
            pass
    return arg, raw
