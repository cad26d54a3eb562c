"""Input normalization as part of a network's identity (the spirit of timm's ``pretrained_cfg``).

The same weights under another mean/std are another network: a CIFAR-10 model trained with the original's
normalization loses ~30 points of top-1 when fed Distiller's (mean = std = 0.5). Every model therefore
carries the normalization it expects (``model.normalization``), every checkpoint kd-plugin writes records it,
and whatever feeds a network converts to the network's own. Names users pick are registered here.
"""
import math
from dataclasses import dataclass

from .errors import KDPluginError


@dataclass(frozen=True)
class Normalization:
    name: str
    mean: tuple
    std: tuple

    def same_as(self, other):
        return other is not None and self.mean == other.mean and self.std == other.std

    def record(self):
        """What a checkpoint stores: plain strings and float lists (loadable with weights_only=True)."""
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}

    def describe(self):
        fmt = lambda values: "(" + ", ".join(f"{v:g}" for v in values) + ")"  # noqa: E731
        return f"{self.name} (mean {fmt(self.mean)}, std {fmt(self.std)})"


_normalizations = {}


def register_normalization(name, mean, std):
    _normalizations[name] = Normalization(name, tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return _normalizations[name]


# The original experiment's (and kd-plugin's zoo default); Distiller's CIFAR-10 loader (apputils/data_loaders.py).
CIFAR = register_normalization("cifar", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
DISTILLER = register_normalization("distiller", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DEFAULT = CIFAR


def add_normalization_arg(parser, what="the network expects"):
    """``--normalization`` for every command that loads a model; the precedence it feeds is the flag, then the
    checkpoint's record, then the documented assumption for the checkpoint's kind (``Checkpoint.normalization``)."""
    parser.add_argument("--normalization", default=None, metavar="NAME|MEAN,STD",
                        help=f"input normalization {what} ({', '.join(list_normalizations())}, or mean,std numbers: "
                             f"2 or 6); default: the checkpoint's record, else the assumption for its kind")
    return parser


def list_normalizations():
    return sorted(_normalizations)


def get_normalization(name):
    if name not in _normalizations:
        raise KDPluginError(f"unknown normalization {name!r}; known: {', '.join(list_normalizations())}, "
                            f"or give mean,std numbers (2 or 6 of them)")
    return _normalizations[name]


def parse_normalization(text):
    """``NAME`` (see list_normalizations) or numbers: ``mean,std`` (all channels) or ``m1,m2,m3,s1,s2,s3``."""
    if isinstance(text, Normalization):
        return text
    if not isinstance(text, str) or not text.strip():
        raise KDPluginError(f"--normalization must be a name or mean,std numbers, got {text!r}")
    text = text.strip()
    if text in _normalizations:
        return _normalizations[text]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        return get_normalization(text)
    if len(parts) not in (2, 6):
        raise KDPluginError(f"--normalization {text!r}: give 2 numbers (mean,std) or 6 (3 means, 3 stds), "
                            f"not {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise KDPluginError(f"--normalization {text!r}: not a known name and not numbers") from None
    mean, std = (values[:1] * 3, values[1:] * 3) if len(values) == 2 else (values[:3], values[3:])
    check_values(mean, std, f"--normalization {text!r}")
    return Normalization("custom", tuple(mean), tuple(std))


def check_values(mean, std, where):
    if not all(math.isfinite(v) for v in (*mean, *std)):
        raise KDPluginError(f"{where}: mean and std must be finite numbers")
    if not all(s > 0 for s in std):
        raise KDPluginError(f"{where}: every std must be > 0")


def from_record(record, where="checkpoint"):
    """A Normalization from a checkpoint's record (see Normalization.record), checked."""
    try:
        mean, std = tuple(float(v) for v in record["mean"]), tuple(float(v) for v in record["std"])
        name = str(record.get("name", "custom"))
    except (TypeError, KeyError, ValueError):
        raise KDPluginError(f"{where}: malformed normalization record {record!r}") from None
    if len(mean) != 3 or len(std) != 3:
        raise KDPluginError(f"{where}: normalization record needs 3 means and 3 stds")
    check_values(mean, std, where)
    known = _normalizations.get(name)
    return known if known is not None and known.mean == mean and known.std == std else Normalization(name, mean, std)


def normalization_of(model):
    """The normalization a network expects (DataParallel unwrapped); models from outside the zoo get DEFAULT."""
    return getattr(getattr(model, "module", model), "normalization", None) or DEFAULT


def set_normalization(model, normalization, input_size=(3, 32, 32)):
    """Make NORMALIZATION part of MODEL's identity: ``model.normalization`` and timm-style ``pretrained_cfg``."""
    target = getattr(model, "module", model)
    target.normalization = normalization
    target.pretrained_cfg = {**getattr(target, "pretrained_cfg", {}), "normalization": normalization.name,
                             "mean": normalization.mean, "std": normalization.std,
                             "input_size": getattr(target, "pretrained_cfg", {}).get("input_size", input_size)}
    return model
