"""KD declared in a YAML schedule, which Distiller's own parser cannot do (IntelLabs/distiller issue 483)."""
import copy

from ..protocol.config import register_component
from ..util.errors import KDPluginError
from .losses import create_loss
from .losses.base import FLAG, TEMPERATURE, WEIGHT
from .policy import DEFAULT_LOSS, DistillationLossWeights, KnowledgeDistillationPolicy
from ..models.ensembles import COMBINE_MODES
from .teacher import build_teacher


class DistillationExtensionMixin:
    """KD declared in a YAML schedule's ``extensions:`` section (Distiller itself cannot do this)::

        extensions:
          kd:
            class: KnowledgeDistillationExtension
            teacher_arch: resnet18_cifar
            teacher_checkpoint: teacher_best.pth.tar   # relative: to this YAML file's folder
            # an ensemble teacher: lists, one checkpoint per architecture, optional weights (default equal)
            # teacher_arch: [vgg7_bn_cifar, resnet18_cifar]
            # teacher_checkpoint: [vgg7_best.pth.tar, resnet18_best.pth.tar]
            # teacher_weights: [0.5, 0.5]
            # teacher_combine: logits            # or probs: average the members' probabilities
            temperature: 1.5
            distill_weight: 0.5
            student_weight: 0.5
            loss: dkd                         # optional: kd (default), dkd, dist
            loss_args: {beta: 8, warmup: 20}  # optional: the loss's own arguments
            logit_standardize: false          # optional: z-score both logits first
            random_teacher: false      # true: no teacher_checkpoint needed, the teacher keeps random weights

    Temperature and weights left out take the loss's defaults. Every YAML key is a positional-or-keyword
    parameter, as Distiller's ``build_component`` requires; the schedule parser passes the student as ``model``.
    """

    def __init__(self, model, teacher_arch, teacher_checkpoint=None, temperature=None, distill_weight=None,
                 student_weight=None, teacher_weight=None, loss=DEFAULT_LOSS, loss_args=None, logit_standardize=False,
                 random_teacher=False, teacher_weights=None, teacher_combine=None):
        check_loss_definition(dict(temperature=temperature, loss=loss, loss_args=loss_args,
                                   logit_standardize=logit_standardize))  # before loading a teacher
        teacher = build_teacher(model, teacher_arch, teacher_checkpoint, random_teacher,
                                where="KnowledgeDistillationExtension teacher_arch", weights=teacher_weights,
                                combine=teacher_combine)
        super().__init__(model, teacher, temperature, DistillationLossWeights(distill_weight, student_weight,
                                                                              teacher_weight),
                         loss, loss_args, logit_standardize)
        self.teacher_arch = teacher_arch
        self.teacher_checkpoint = teacher_checkpoint


class KnowledgeDistillationExtension(DistillationExtensionMixin, KnowledgeDistillationPolicy):
    __doc__ = DistillationExtensionMixin.__doc__


def check_loss_definition(arguments):
    """The loss a KD extension's arguments name exists and takes its loss_args (known names, valid values)."""
    loss_args = arguments.get("loss_args") or {}
    if not isinstance(loss_args, dict):
        raise KDPluginError(f"loss_args must be a mapping of argument names to values, got {loss_args!r}")
    create_loss(arguments.get("loss", DEFAULT_LOSS), temperature=arguments.get("temperature"),
                logit_standardize=arguments.get("logit_standardize", False), **loss_args)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value, allow_none=True):
    """A non-empty string or a non-empty list of them (None when ALLOW_NONE)."""
    if value is None:
        return allow_none
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, str) and v for v in values)


register_component("extensions", KnowledgeDistillationExtension, {
    "temperature": TEMPERATURE, "distill_weight": WEIGHT, "student_weight": WEIGHT,
    "teacher_weight": WEIGHT, "teacher_arch": (lambda v: _names(v, allow_none=False), "a model name or a list of them"),
    "teacher_checkpoint": (_names, "a checkpoint path or a list of them"),
    "teacher_weights": (lambda v: v is None or (isinstance(v, list) and v and all(_number(w) for w in v)),
                        "a list of numbers, one per teacher"),
    "teacher_combine": (lambda v: v is None or v in COMBINE_MODES, " or ".join(COMBINE_MODES)),
    "loss": (lambda v: isinstance(v, str) and v, "a loss name"), "logit_standardize": FLAG,
    "loss_args": (lambda v: isinstance(v, dict), "a mapping of argument names to values"),
    "random_teacher": FLAG},
    check=check_loss_definition, path_args=("teacher_checkpoint",))


def with_loss_flags(sched_dict, loss=None, loss_args=None):
    """A copy of SCHED_DICT whose KD extensions use the command line's loss: ``--kd-loss`` replaces the file's
    ``loss`` (dropping the file's ``loss_args`` when it names another loss); ``--kd-loss-arg`` values win over
    the file's ``loss_args``."""
    if loss is None and not loss_args:
        return sched_dict
    sched = copy.copy(sched_dict)
    extensions = dict(sched.get("extensions") or {})
    for name, definition in extensions.items():
        if not isinstance(definition, dict) or definition.get("class") != KnowledgeDistillationExtension.__name__:
            continue
        file_loss = definition.get("loss", DEFAULT_LOSS)
        chosen = loss or file_loss
        merged = {**(definition.get("loss_args") or {} if chosen == file_loss else {}), **(loss_args or {})}
        extensions[name] = {**definition, "loss": chosen, "loss_args": merged}
    sched["extensions"] = extensions
    return sched
