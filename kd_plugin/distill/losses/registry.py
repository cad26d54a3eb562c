"""Distillation losses by name, as the model zoo registers networks (timm-style)."""
from ...util.errors import KDPluginError

_losses = {}


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
    """The loss NAME with KWARGS (temperature, logit_standardize and the loss's own arguments), checked."""
    return loss_class(name)(**kwargs)


def parse_loss_spec(spec):
    """``NAME[+ls][:ARG=VALUE,...]`` (the sweep's --kd-loss values) -> (name, {arg: value}, logit_standardize)."""
    head, _, tail = spec.partition(":")
    name, plus, suffix = head.partition("+")
    if plus and suffix != "ls":
        raise KDPluginError(f"loss {spec!r}: the only suffix is '+ls' (logit standardization)")
    args = dict(parse_loss_arg(item, spec) for item in tail.split(",")) if tail else {}
    create_loss(name, logit_standardize=bool(plus), **args)  # checks the name and the arguments
    return name, args, bool(plus)


def parse_loss_arg(text, where=None):
    """``NAME=VALUE`` -> (name, int, float or bool value)."""
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
    raise KDPluginError(f"{where or 'loss argument'} {arg}: expected a number, got {raw!r}")
