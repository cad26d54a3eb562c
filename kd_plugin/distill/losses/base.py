"""What every distillation loss shares: its result type, its arguments' checks, the temperature check, and
logit standardization as a pre-process of both logits.

A loss is called with (student logits, teacher logits, labels, epoch) and returns LossTerms. Each term is
logged as its own column (``value``, unscaled, like Distiller's "Distill Loss" KL) and adds
``distill_weight * weight * value`` to the policy's overall loss.
"""
from collections import namedtuple

import torch

from ...protocol.config import NON_NEGATIVE, POSITIVE
from ...util.errors import KDPluginError

LossTerm = namedtuple("LossTerm", ["name", "value", "weight"])
DistillationLossWeights = namedtuple("DistillationLossWeights", ["distill", "student", "teacher"],
                                     defaults=(0.5, 0.5, 0.0))  # Distiller's defaults

# The one temperature check (flags, YAML schedules and the policy all use it).
TEMPERATURE = POSITIVE
WEIGHT = NON_NEGATIVE
NON_NEGATIVE_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0")
FLAG = (lambda v: isinstance(v, bool), "true or false")
# Logit standardization's base temperature: z-scored logits have unit spread, so a temperature tuned for raw
# logits does not carry over (Sun et al. 2024, sunshangquan/logit-standardization-KD tools/train.py --base-temp 2).
STANDARDIZED_TEMPERATURE = 2.0
STANDARDIZE_EPS = 1e-7  # added to the row's std, as in the LS code's normalize()


def check_value(value, check, name):
    if not check[0](value):
        raise KDPluginError(f"{name} must be {check[1]}, got {value!r}")
    return value


def check_temperature(value, name="temperature"):
    return float(check_value(value, TEMPERATURE, name))


def standardize(logits):
    """Z-score each row: (z - mean) / (std + 1e-7), std with Bessel's correction (torch's default, as in the
    LS code)."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (STANDARDIZE_EPS + std)


def _at_least_float32(logits):
    """fp16/bf16 logits (autocast, the fp16 teacher cache) in float32; float64 kept (gradient checks)."""
    return logits if logits.dtype == torch.float64 else logits.float()


class DistillationLoss:
    """Base of a registered loss. A subclass sets ``name``, ``arguments`` ({argument: (default, check)}),
    ``default_temperature``, ``default_weights`` (distill, student: the loss's reference recipe), optionally
    ``standardized_weights`` (the reference recipe with logit standardization, when it differs) and
    ``needs_labels``, and implements ``terms(student, teacher, labels, epoch) -> [LossTerm]``; it gets float32 (or
    float64) (standardized when asked, the teacher's detached) and applies the temperature itself."""

    name: str | None = None
    arguments: dict[str, tuple] = {}
    default_temperature = 1.0
    default_weights = DistillationLossWeights()
    standardized_weights: DistillationLossWeights | None = None
    needs_labels = False

    def __init__(self, temperature=None, logit_standardize=False, **arguments):
        self.logit_standardize = check_value(logit_standardize, FLAG, "logit_standardize")
        if self.logit_standardize and self.standardized_weights is not None:
            self.default_weights = self.standardized_weights
        if temperature is None:
            temperature = STANDARDIZED_TEMPERATURE if logit_standardize else self.default_temperature
        self.temperature = check_temperature(temperature)
        unknown = sorted(set(arguments) - set(self.arguments))
        if unknown:
            known = ", ".join(self.arguments) or "none"
            raise KDPluginError(f"loss {self.name} has no argument {unknown[0]!r} (its arguments: {known})")
        self.args = {}
        for arg, (default, check) in self.arguments.items():
            value = arguments.get(arg, default)
            self.args[arg] = check_value(value, check, f"{self.name} argument {arg}")
            setattr(self, arg, self.args[arg])

    def __call__(self, student_logits, teacher_logits, labels=None, epoch=0):
        if self.needs_labels and labels is None:
            raise KDPluginError(f"loss {self.name} needs the batch's labels")
        student, teacher = _at_least_float32(student_logits), _at_least_float32(teacher_logits.detach())
        if self.logit_standardize:
            student, teacher = standardize(student), standardize(teacher)
        return self.terms(student, teacher, labels, epoch)

    def terms(self, student, teacher, labels, epoch):
        raise NotImplementedError

    def changed_args(self):
        """{argument: value} of the arguments that differ from the loss's defaults."""
        return {k: v for k, v in self.args.items() if v != self.arguments[k][0]}

    def label(self):
        """The loss as a --kd-loss spec, ``NAME[+ls][:ARG=VALUE,...]`` (only arguments off their defaults), so a
        table names exactly the loss that ran."""
        args = ",".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
                        for k, v in self.changed_args().items())
        return self.name + ("+ls" if self.logit_standardize else "") + (f":{args}" if args else "")

    def describe(self):
        """The loss and its arguments, for the run's log (the temperature is logged beside it)."""
        args = ", ".join(f"{k}={v:g}" for k, v in self.args.items())
        standardized = " + logit standardization" if self.logit_standardize else ""
        return f"{self.name}{standardized}" + (f" ({args})" if args else "")
