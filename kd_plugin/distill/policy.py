"""Knowledge distillation as a Distiller policy (``distiller.knowledge_distillation`` semantics).

loss = w_student * CE(student, labels) + w_distill * T^2 * KL(softmax(teacher/T) || softmax(student/T)),
with the unscaled KL logged as the "Distill Loss" component. Unlike Distiller, the teacher is put in eval
mode (Distiller leaves it in training mode, so its BatchNorm normalises with batch statistics and its running
statistics drift during distillation).

The policy captures the student's output with a forward hook while it is active, so it works both for a
loop that calls ``policy.forward(x)`` (Distiller's compress_classifier) and for one that calls the student
directly. All logic lives in DistillationMixin; the built-in runtime and the Distiller bridge each combine
it with their own ScheduledTrainingPolicy/PolicyLoss classes.
"""
from collections import namedtuple

import torch.nn.functional as F

from ..protocol.policy import LossComponent, PolicyLoss, ScheduledTrainingPolicy
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of
from .teacher import TeacherRunner

DistillationLossWeights = namedtuple("DistillationLossWeights", ["distill", "student", "teacher"])
DistillationLossWeights.__new__.__defaults__ = (0.5, 0.5, 0.0)  # Distiller's defaults
DEFAULT_LOSS_WEIGHTS = DistillationLossWeights()
DEFAULT_TEMPERATURE = 1.0


class UnsupportedTeacherWeight(KDPluginError, NotImplementedError):
    """Distiller raises NotImplementedError for a non-zero teacher weight (no joint teacher training)."""


def distillation_kl(student_logits, teacher_logits, temperature):
    """KL(softmax(t/T) || softmax(s/T)) averaged over the batch (Distiller's 'Distill Loss', unscaled)."""
    soft_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    soft_targets = F.softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(soft_log_probs, soft_targets.detach(), reduction="batchmean")


def check_loss_weights(temperature, loss_weights):
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise KDPluginError(f"distillation temperature must be a number > 0, got {temperature!r}")
    for name, value in loss_weights._asdict().items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise KDPluginError(f"{name} loss weight must be a number >= 0, got {value!r}")
    if loss_weights.teacher != 0:
        raise UnsupportedTeacherWeight("a non-zero teacher loss weight (--kd-tw) is not supported: like Distiller, "
                                       "kd-plugin does not train the teacher alongside the student")


class DistillationMixin:
    """All of KD, on top of a runtime's ScheduledTrainingPolicy: the built-in one here, Distiller's own in
    ``kd_plugin.bridge``. Each runtime checks loss results against its own PolicyLoss/LossComponent types."""

    policy_loss_type = PolicyLoss
    loss_component_type = LossComponent

    def __init__(self, student_model, teacher_model, temperature=DEFAULT_TEMPERATURE,
                 loss_weights=DEFAULT_LOSS_WEIGHTS):
        super().__init__()  # the runtime's ScheduledTrainingPolicy
        loss_weights = DistillationLossWeights(*loss_weights)
        check_loss_weights(temperature, loss_weights)
        self.active = False
        self.student = student_model
        self.teacher = teacher_model
        self.temperature = float(temperature)
        self.loss_wts = loss_weights
        self.teacher_outputs = TeacherRunner(teacher_model, input_normalization=normalization_of(student_model))
        self.last_students_logits = None
        self.last_teacher_logits = None
        self._hook = None

    def _capture(self, module, inputs, output):
        if self.active and module.training:
            self.last_teacher_logits = self.teacher_outputs(inputs[0])
            self.last_students_logits = output

    def _set_active(self, active):
        self.active = active
        if active and self._hook is None:
            self._hook = self.student.register_forward_hook(self._capture)
        elif not active and self._hook is not None:
            self._hook.remove()
            self._hook = None
            self.last_students_logits = self.last_teacher_logits = None

    def epoch_counters(self):
        """Counters of the teacher-output source for the epoch's log row (a teacher cache's hits and misses)."""
        counters = getattr(self.teacher_outputs, "epoch_counters", None)
        return counters() if counters is not None else {}

    def forward(self, *inputs):
        """Distiller's entry point; with the hook installed, the plain student call caches both outputs."""
        return self.student(*inputs)

    def on_epoch_begin(self, model, zeros_mask_dict, meta, **kwargs):
        self._set_active(True)

    def on_epoch_end(self, model, zeros_mask_dict, meta, **kwargs):
        self._set_active(False)

    def before_backward_pass(self, model, epoch, minibatch_id, minibatches_per_epoch, loss, zeros_mask_dict,
                             optimizer=None):
        if not self.active:
            return None
        if self.last_teacher_logits is None or self.last_students_logits is None:
            raise RuntimeError("KnowledgeDistillationPolicy: Student and/or teacher outputs were not cached!")
        kl = distillation_kl(self.last_students_logits, self.last_teacher_logits, self.temperature)
        overall = self.loss_wts.student * loss + self.loss_wts.distill * self.temperature ** 2 * kl
        self.last_students_logits = self.last_teacher_logits = None
        return self.policy_loss_type(overall, [self.loss_component_type("Distill Loss", kl)])


class KnowledgeDistillationPolicy(DistillationMixin, ScheduledTrainingPolicy):
    """Same constructor as ``distiller.KnowledgeDistillationPolicy``."""
