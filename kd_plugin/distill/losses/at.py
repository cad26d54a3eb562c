"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), as RepDistiller ``distiller_zoo/AT.py``: a stage's
attention map is the mean over channels of its activations to the power p (2), flattened and L2-normalized;
the term is the mean squared difference of student and teacher maps, summed over the compared stages (the
larger map average-pooled to the smaller's size first). Reference weight beta 1000 (RepDistiller), CE 1."""
import torch.nn.functional as F

from ...util.errors import KDPluginError
from .base import POSITIVE, WEIGHT, LossTerm
from .feature_base import POINTS, FeatureLoss, point_list, stages_or_refuse
from .registry import register_loss


def attention_map(features, p):
    return F.normalize(features.pow(p).mean(1).flatten(1))


def attention_distance(student, teacher, p):
    s_size, t_size = student.shape[2], teacher.shape[2]
    if s_size > t_size:
        student = F.adaptive_avg_pool2d(student, (t_size, teacher.shape[3]))
    elif s_size < t_size:
        teacher = F.adaptive_avg_pool2d(teacher, (s_size, student.shape[3]))
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


@register_loss
class AttentionTransfer(FeatureLoss):
    name = "at"
    arguments = {"beta": (1000.0, WEIGHT), "p": (2.0, POSITIVE), "layers": (None, POINTS),
                 "teacher_layers": (None, POINTS)}

    def points(self, student, teacher):
        """(student stages, teacher stages), the networks' own stage ends unless named."""
        mine = point_list(self.layers) or stages_or_refuse(student, self.name, "student")
        theirs = point_list(self.teacher_layers) or (mine if self.layers else stages_or_refuse(teacher, self.name,
                                                                                               "teacher"))
        if len(mine) != len(theirs):
            raise KDPluginError(f"loss at compares stages in pairs: the student has {len(mine)} ({', '.join(mine)}), "
                                f"the teacher {len(theirs)} ({', '.join(theirs)}); name them with layers=... and "
                                f"teacher_layers=...")
        self.pairs = list(zip(mine, theirs, strict=True))
        return mine, theirs

    def build(self, student_features, teacher_features, data):
        for mine, theirs in self.pairs:
            for role, tensor, point in (("student", student_features[mine], mine),
                                        ("teacher", teacher_features[theirs], theirs)):
                if tensor.dim() != 4:
                    raise KDPluginError(f"loss at: the {role}'s {point} gives {tuple(tensor.shape[1:])}, not a "
                                        f"C x H x W feature map")
        return None

    def feature_terms(self, features, labels, epoch):
        total = sum(attention_distance(features.student[mine].float(), features.teacher[theirs].float(), self.p)
                    for mine, theirs in self.pairs)
        return [LossTerm("AT Loss", total, self.beta)]
