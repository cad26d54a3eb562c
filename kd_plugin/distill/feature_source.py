"""The feature side of a distillation policy whose loss compares intermediate outputs (FitNets, AT, CRD, or a
logit loss combined with one): hooks on the student's and the teacher's named modules, the teacher run live
(the exact teacher-output cache stores logits only, so it cannot serve such a loss), and the loss's
trainable parts, built from the hooked shapes before training (``prepare``) so that they can join the
optimizer and the checkpoint (kd_plugin.engine.loss_parts).
"""
import torch
import torch.nn as nn

from ..data import Normalizer
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of
from .features import Features, FeatureTaps
from .losses.feature_base import TrainingData

LIVE_TEACHER_NOTE = ("teacher-output cache: not used by loss {loss}, which compares intermediate features (the "
                     "cache holds logits only); the teacher runs live every step")


def feature_parts(loss):
    """The parts of LOSS (itself, or a combined loss's parts) that compare features."""
    return [part for part in getattr(loss, "parts", [loss]) if getattr(part, "uses_features", False)]


class FeatureSource:
    """Stands where a policy's teacher outputs come from: runs the teacher (RUNNER, a TeacherRunner) with its
    hooks attached, and hands the loss both networks' hooked outputs."""

    def __init__(self, student, teacher, loss, runner):
        self.loss, self.runner = loss, runner
        self.parts = feature_parts(loss)
        student_points, teacher_points = [], []
        for part in self.parts:
            mine, theirs = part.points(student, teacher)
            student_points += mine
            teacher_points += theirs
        self.student_taps = FeatureTaps(student, student_points, "student", training_only=True)
        self.teacher_taps = FeatureTaps(teacher, teacher_points, "teacher")
        self.student = student
        self.module = None  # the loss's trainable parts (nn.ModuleList), once prepared
        self.prepared = False
        self.note = LIVE_TEACHER_NOTE.format(loss=loss.name)

    @property
    def autocast_dtype(self):
        return self.runner.autocast_dtype

    @autocast_dtype.setter
    def autocast_dtype(self, value):
        self.runner.autocast_dtype = value

    def __call__(self, inputs):
        return self.runner(inputs)

    def attach(self):
        self.student_taps.attach()
        self.teacher_taps.attach()

    def detach(self):
        self.student_taps.detach()
        self.teacher_taps.detach()

    @torch.no_grad()
    def prepare(self, train_set, device):
        """Check the hooked shapes and build the loss's trainable parts on DEVICE with one forward of two training
        images through both networks (eval mode: no BatchNorm statistics change); returns the parts (or None)."""
        images = train_set.images[:2].to(device)
        inputs = Normalizer.of(normalization_of(self.student))(images)
        was_training = self.student.training
        self.attach()
        self.student_taps.training_only = False
        try:
            self.student.eval()(inputs)
            self.runner(inputs)
            student, teacher = self.student_taps.take(), self.teacher_taps.take()
        finally:
            self.student_taps.training_only = True
            self.detach()
            self.student.train(was_training)
        data = TrainingData(len(train_set), train_set.labels)
        built = [part.build(student, teacher, data) for part in self.parts]
        built = [module for module in built if module is not None]
        self.module = nn.ModuleList(built).to(device) if built else None
        self.prepared = True
        return self.module

    def collect(self, indices):
        if not self.prepared:
            raise KDPluginError(f"loss {self.loss.name} compares intermediate features; it runs in kd-plugin's own "
                                f"training loop (its trainable parts must join the optimizer first)")
        if self.module is not None:
            self.module.train()
        return Features(self.student_taps.take(), self.teacher_taps.take(), indices)

    def exclusive_terms(self, epoch):
        """The only terms that train in EPOCH (FitNets' stage 1), or None for all of them."""
        names = [part.exclusive_terms(epoch) for part in self.parts]
        names = [n for n in names if n is not None]
        return set().union(*names) if names else None
