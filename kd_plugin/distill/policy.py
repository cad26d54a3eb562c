"""Knowledge distillation as a Distiller policy (``distiller.knowledge_distillation`` semantics).

loss = w_student * CE(student, labels) + w_distill * (the distillation loss's terms), the loss chosen by name
from ``kd_plugin.distill.losses`` (default ``kd``: T^2 * KL(softmax(teacher/T) || softmax(student/T)), with
the unscaled KL logged as the "Distill Loss" component, as Distiller does). Unlike Distiller, the teacher is
put in eval mode (Distiller leaves it in training mode, so its BatchNorm normalises with batch statistics and
its running statistics drift during distillation).

The policy captures the student's output with a forward hook while it is active, so it works both for a
loop that calls ``policy.forward(x)`` (Distiller's compress_classifier) and for one that calls the student
directly. All logic lives in DistillationMixin; the built-in runtime and the Distiller bridge each combine
it with their own ScheduledTrainingPolicy/PolicyLoss classes.
"""
from ..protocol.policy import LossComponent, PolicyLoss, ScheduledTrainingPolicy
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of
from .feature_source import FeatureSource
from .losses import DistillationLossWeights, create_loss
from .losses.base import WEIGHT, check_value
from .teacher import TeacherRunner

DEFAULT_LOSS = "kd"


class UnsupportedTeacherWeight(KDPluginError, NotImplementedError):
    """Distiller raises NotImplementedError for a non-zero teacher weight (no joint teacher training)."""


def resolve_loss_weights(loss_weights, defaults):
    """LOSS_WEIGHTS (a DistillationLossWeights or tuple, None entries meaning "the loss's default"), checked."""
    given = DistillationLossWeights(*loss_weights) if loss_weights is not None else DistillationLossWeights(None, None)
    weights = DistillationLossWeights(*(d if v is None else v for v, d in zip(given, defaults, strict=True)))
    for name, value in weights._asdict().items():
        check_value(value, WEIGHT, f"{name} loss weight")
    if weights.teacher != 0:
        raise UnsupportedTeacherWeight("a non-zero teacher loss weight (--kd-tw) is not supported: like Distiller, "
                                       "kd-plugin does not train the teacher alongside the student")
    return weights


def labels_from_loss(loss):
    """The targets of a cross-entropy LOSS, read from its autograd node. Distiller's own training loop hands
    policies the loss but not the batch, and its criterion is CrossEntropyLoss; None when LOSS is anything else."""
    return getattr(getattr(loss, "grad_fn", None), "_saved_target", None)


class DistillationMixin:
    """All of KD, on top of a runtime's ScheduledTrainingPolicy: the built-in one here, Distiller's own in
    ``kd_plugin.bridge``. Each runtime checks loss results against its own PolicyLoss/LossComponent types."""

    policy_loss_type = PolicyLoss
    loss_component_type = LossComponent

    def __init__(self, student_model, teacher_model, temperature=None, loss_weights=None, loss=DEFAULT_LOSS,
                 loss_args=None, logit_standardize=False):
        """TEMPERATURE and LOSS_WEIGHTS entries left None take the loss's defaults (``kd``: Distiller's)."""
        super().__init__()  # the runtime's ScheduledTrainingPolicy
        if loss_args is not None and not isinstance(loss_args, dict):
            raise KDPluginError(f"loss_args must be a mapping of argument names to values, got {loss_args!r}")
        self.distillation_loss = create_loss(loss, temperature=temperature, logit_standardize=logit_standardize,
                                             **(loss_args or {}))
        self.loss_wts = resolve_loss_weights(loss_weights, self.distillation_loss.default_weights)
        self.temperature = self.distillation_loss.temperature
        self.active = False
        self.student = student_model
        self.teacher = teacher_model
        self.teacher_outputs = TeacherRunner(teacher_model, input_normalization=normalization_of(student_model))
        # a loss comparing intermediate features: hooks on both networks, the teacher run live (feature_source.py)
        self.feature_source = FeatureSource(student_model, teacher_model, self.distillation_loss,
                                            self.teacher_outputs) \
            if getattr(self.distillation_loss, "uses_features", False) else None
        if self.feature_source is not None:
            self.teacher_outputs = self.feature_source
        self.last_indices = None
        self.last_students_logits = None
        self.last_teacher_logits = None
        self.last_labels = None
        self._batch = None
        self._hook = None

    def set_batch(self, batch):
        """The training loop's batch hook: the labels of the batch the student is about to see."""
        self._batch = batch

    def _capture(self, module, inputs, output):
        if self.active and module.training:
            batch, self._batch = self._batch, None
            ours = batch is not None and inputs[0] is batch.inputs
            self.last_labels = batch.labels if ours else None
            self.last_indices = getattr(batch, "indices", None) if ours else None
            self.last_teacher_logits = self.teacher_outputs(inputs[0])
            self.last_students_logits = output

    def _set_active(self, active):
        self.active = active
        if active and self._hook is None:
            self._hook = self.student.register_forward_hook(self._capture)
            if self.feature_source is not None:
                self.feature_source.attach()
        elif not active and self._hook is not None:
            self._hook.remove()
            self._hook = None
            if self.feature_source is not None:
                self.feature_source.detach()
            self.last_students_logits = self.last_teacher_logits = self.last_labels = None

    @property
    def loss_state(self):
        """The loss's trainable parts (a regressor, embeddings, a memory bank), whose state the checkpoint keeps
        (protocol.scheduler's policy states); None for a loss without any."""
        return self.feature_source.module if self.feature_source is not None else None

    def used_settings(self):
        """What this policy distils with, as summary.json records it (teacher_checkpoint None: random weights)."""
        config = getattr(self.teacher, "model_config", None)  # an ensemble's members, weights and mode
        return {"teacher_arch": getattr(self.teacher, "arch", type(self.teacher).__name__),
                "teacher_checkpoint": getattr(self, "teacher_checkpoint", None),
                **({"teacher_config": config()} if config is not None else {}), "temperature": self.temperature,
                "distill_weight": self.loss_wts.distill, "student_weight": self.loss_wts.student,
                "teacher_weight": self.loss_wts.teacher, "loss": self.distillation_loss.label(),
                "loss_args": dict(self.distillation_loss.args),
                "logit_standardize": bool(self.distillation_loss.logit_standardize)}

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
        labels = self.last_labels
        if labels is None and self.distillation_loss.needs_labels:
            labels = labels_from_loss(loss)
        features = {} if self.feature_source is None else \
            {"features": self.feature_source.collect(self.last_indices)}
        terms = self.distillation_loss(self.last_students_logits, self.last_teacher_logits, labels, epoch=epoch,
                                       **features)
        only = self.feature_source.exclusive_terms(epoch) if self.feature_source is not None else None
        overall = self.loss_wts.student * loss if only is None else None  # FitNets' stage 1: the hint term alone
        for term in terms:  # w_distill * weight first: KD's sum stays Distiller's w_s*CE + (w_d*T^2)*KL, bit for bit
            if only is None or term.name in only:
                contribution = self.loss_wts.distill * term.weight * term.value
                overall = contribution if overall is None else overall + contribution
        self.last_students_logits = self.last_teacher_logits = self.last_labels = None
        return self.policy_loss_type(overall, [self.loss_component_type(t.name, t.value) for t in terms])


class KnowledgeDistillationPolicy(DistillationMixin, ScheduledTrainingPolicy):
    """Same constructor as ``distiller.KnowledgeDistillationPolicy``."""
