"""FitNets (Romero et al., ICLR 2015), as RepDistiller ``distiller_zoo/FitNet.py`` + ``models/util.py::ConvReg``:
a trained regressor maps the student's hint layer to the teacher's guided layer's shape; the term is the mean
squared error between them. Reference weight beta 100 (RepDistiller), CE 1. Stage 1 (the paper's, RepDistiller's
``--init_epochs``): for the first ``stage1_epochs`` epochs only the hint term trains (student up to its hint
layer, and the regressor); the schedule's other terms and CE join afterwards."""
import torch.nn as nn
import torch.nn.functional as F

from ...util.errors import KDPluginError
from .base import NON_NEGATIVE_INT, WEIGHT, LossTerm
from .feature_base import POINT, FeatureLoss, stages_or_refuse
from .registry import register_loss

HINT = "Hint Loss"


class ConvRegressor(nn.Module):
    """Conv (stride 2 to halve, transposed to double, else a kernel that shrinks H x W to the teacher's), BN,
    ReLU: the student's C x H x W to the teacher's."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = student_shape, teacher_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise KDPluginError(f"loss fitnet: no regressor maps the student's {s_h}x{s_w} hint to the teacher's "
                                f"{t_h}x{t_w} (pick layers of equal size, or a student layer at most twice smaller)")
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


@register_loss
class FitNetLoss(FeatureLoss):
    name = "fitnet"
    arguments = {"beta": (100.0, WEIGHT), "hint": (None, POINT), "guided": (None, POINT),
                 "stage1_epochs": (0, NON_NEGATIVE_INT)}

    def points(self, student, teacher):
        """The student's hint layer and the teacher's guided layer: named, else each network's second stage (what
        RepDistiller's ``--hint_layer 2`` picks)."""
        self.hint_point = self.hint or _second_stage(student, "student")
        self.guided_point = self.guided or (self.hint if self.hint else _second_stage(teacher, "teacher"))
        return [self.hint_point], [self.guided_point]

    def build(self, student_features, teacher_features, data):
        shapes = []
        for role, tensor, point in (("student", student_features[self.hint_point], self.hint_point),
                                    ("teacher", teacher_features[self.guided_point], self.guided_point)):
            if tensor.dim() != 4:
                raise KDPluginError(f"loss fitnet: the {role}'s {point} gives {tuple(tensor.shape[1:])}, not a "
                                    f"C x H x W feature map")
            shapes.append(tuple(tensor.shape[1:]))
        self.module = ConvRegressor(*shapes)
        return self.module

    def feature_terms(self, features, labels, epoch):
        regressed = self.module(features.student[self.hint_point].float())
        return [LossTerm(HINT, F.mse_loss(regressed, features.teacher[self.guided_point].float()), self.beta)]

    def exclusive_terms(self, epoch):
        return {HINT} if epoch < self.stage1_epochs else None


def _second_stage(model, role):
    stages = stages_or_refuse(model, "fitnet", role)
    return stages[1] if len(stages) > 1 else stages[0]
