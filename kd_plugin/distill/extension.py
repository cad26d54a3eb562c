"""KD declared in a YAML schedule, which Distiller's own parser cannot do (IntelLabs/distiller issue 483)."""
from ..protocol.config import NON_NEGATIVE, POSITIVE, register_component
from .policy import DEFAULT_LOSS_WEIGHTS, DEFAULT_TEMPERATURE, DistillationLossWeights, KnowledgeDistillationPolicy
from .teacher import build_teacher


class DistillationExtensionMixin:
    """KD declared in a YAML schedule's ``extensions:`` section (Distiller itself cannot do this)::

        extensions:
          kd:
            class: KnowledgeDistillationExtension
            teacher_arch: resnet18_cifar
            teacher_checkpoint: teacher_best.pth.tar   # relative: to this YAML file's folder
            temperature: 1.5
            distill_weight: 0.5
            student_weight: 0.5

    Every YAML key is a positional-or-keyword parameter, as Distiller's ``build_component`` requires; the
    schedule parser passes the student as ``model``.
    """

    def __init__(self, model, teacher_arch, teacher_checkpoint=None, temperature=DEFAULT_TEMPERATURE,
                 distill_weight=DEFAULT_LOSS_WEIGHTS.distill, student_weight=DEFAULT_LOSS_WEIGHTS.student,
                 teacher_weight=DEFAULT_LOSS_WEIGHTS.teacher):
        teacher = build_teacher(model, teacher_arch, teacher_checkpoint)
        super().__init__(model, teacher, temperature,
                         DistillationLossWeights(distill_weight, student_weight, teacher_weight))
        self.teacher_arch = teacher_arch
        self.teacher_checkpoint = teacher_checkpoint


class KnowledgeDistillationExtension(DistillationExtensionMixin, KnowledgeDistillationPolicy):
    __doc__ = DistillationExtensionMixin.__doc__


register_component("extensions", KnowledgeDistillationExtension, {
    "temperature": POSITIVE, "distill_weight": NON_NEGATIVE, "student_weight": NON_NEGATIVE,
    "teacher_weight": NON_NEGATIVE, "teacher_arch": (lambda v: isinstance(v, str) and v, "a model name"),
    "teacher_checkpoint": (lambda v: v is None or (isinstance(v, str) and v), "a checkpoint path")},
    path_args=("teacher_checkpoint",))
