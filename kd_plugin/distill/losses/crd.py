"""Contrastive representation distillation (Tian et al., ICLR 2020), as RepDistiller ``crd/`` (``criterion.py``,
``memory.py``): student and teacher embeddings (the input of each network's classifier, unless named) are
projected to ``feat_dim`` by their own trainable linear layers and L2-normalized; a memory bank holds one
student and one teacher vector per training image (momentum-updated). Each image is contrasted with ``nce_k``
negatives drawn from images of other classes (RepDistiller's ``exact`` mode) through the NCE loss of both
views. Reference: beta 0.8, feat_dim 128, nce_k 16,384, nce_t 0.07, nce_m 0.5, CE 1.

The memory bank, its normalization constants and the negative sampler's state are part of the trainable parts'
state, so they join the checkpoint and a resumed run continues exactly.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...util.errors import KDPluginError
from ..features import embedding_point
from .base import POSITIVE, WEIGHT, LossTerm
from .feature_base import POINT, POSITIVE_INT, FeatureLoss
from .registry import register_loss

EPS = 1e-7


class ContrastParts(nn.Module):
    """The embeddings, the memory bank of both views and the negative sampler of one CRD run."""

    def __init__(self, student_dim, teacher_dim, feat_dim, num_images, labels, nce_k, nce_t, nce_m):
        super().__init__()
        self.embed_student = nn.Linear(student_dim, feat_dim)
        self.embed_teacher = nn.Linear(teacher_dim, feat_dim)
        self.nce_k, self.nce_t, self.nce_m, self.num_images = nce_k, nce_t, nce_m, num_images
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        init = torch.Generator().manual_seed(0)
        self.register_buffer("memory_student", torch.rand(num_images, feat_dim, generator=init) * 2 * stdv - stdv)
        self.register_buffer("memory_teacher", torch.rand(num_images, feat_dim, generator=init) * 2 * stdv - stdv)
        self.register_buffer("z", torch.tensor([-1.0, -1.0]))  # normalization constants, set by the first batch
        labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
        if int((len(labels) - counts[labels]).min()) < 1:
            raise KDPluginError("loss crd draws its negatives from other classes; the training split has one class")
        # the sampler's tables (CPU, derived from the data: not state)
        self.order, self.labels = order, labels  # image indices sorted by class; each image's class
        self.class_start, self.class_count = torch.cumsum(counts, 0) - counts, counts
        self.sampler = torch.Generator().manual_seed(0)

    def get_extra_state(self):
        return {"sampler": self.sampler.get_state()}

    def set_extra_state(self, state):
        self.sampler.set_state(state["sampler"])

    def negatives(self, indices):
        """(N, nce_k) indices of images of other classes than each of INDICES', uniformly drawn."""
        labels = self.labels[indices.cpu()]
        start, count = self.class_start[labels], self.class_count[labels]
        draw = torch.rand(len(indices), self.nce_k, generator=self.sampler)
        position = (draw * (self.num_images - count)[:, None]).long()
        position = position + (position >= start[:, None]).long() * count[:, None]  # skip the own class block
        return self.order[position]

    def scores(self, own, memory, indices, negatives, slot):
        """exp(<memory rows, own> / T) / Z for the positive (column 0) and the negatives."""
        rows = torch.cat([indices.cpu()[:, None], negatives], 1).to(memory.device)
        weights = memory[rows].detach()
        out = torch.exp(torch.bmm(weights, own.unsqueeze(2)).squeeze(2) / self.nce_t)
        if self.z[slot] < 0:
            self.z[slot] = (out.mean() * self.num_images).detach()
        return out / float(self.z[slot])

    @torch.no_grad()
    def remember(self, memory, indices, vectors):
        rows = indices.to(memory.device)
        updated = F.normalize(memory[rows] * self.nce_m + vectors.detach() * (1 - self.nce_m), dim=1)
        memory.index_copy_(0, rows, updated)

    def nce(self, scores):
        """RepDistiller's ContrastLoss: -(log P(positive is real) + sum log P(negative is noise)) / batch."""
        noise = self.nce_k / self.num_images
        positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
        negative = torch.log(noise / (scores[:, 1:] + noise + EPS))
        return -(positive.sum() + negative.sum()) / scores.shape[0]

    def forward(self, student, teacher, indices):
        s = F.normalize(self.embed_student(student.flatten(1)), dim=1)
        t = F.normalize(self.embed_teacher(teacher.flatten(1)), dim=1)
        negatives = self.negatives(indices)
        student_scores = self.scores(s, self.memory_teacher, indices, negatives, 0)  # student vs teacher memory
        teacher_scores = self.scores(t, self.memory_student, indices, negatives, 1)
        self.remember(self.memory_student, indices, s)
        self.remember(self.memory_teacher, indices, t)
        return self.nce(student_scores) + self.nce(teacher_scores)


@register_loss
class CRDLoss(FeatureLoss):
    name = "crd"
    arguments = {"beta": (0.8, WEIGHT), "feat_dim": (128, POSITIVE_INT), "nce_k": (16384, POSITIVE_INT),
                 "nce_t": (0.07, POSITIVE), "nce_m": (0.5, WEIGHT), "embedding": (None, POINT),
                 "teacher_embedding": (None, POINT)}

    def points(self, student, teacher):
        self.student_point = self.embedding or embedding_point(student)
        self.teacher_point = self.teacher_embedding or (self.embedding if self.embedding else
                                                        embedding_point(teacher))
        return [self.student_point], [self.teacher_point]

    def build(self, student_features, teacher_features, data):
        if data is None:
            raise KDPluginError("loss crd needs the training split (its memory bank holds one row per image)")
        if self.nce_m >= 1:
            raise KDPluginError(f"crd argument nce_m must be < 1, got {self.nce_m}")
        dims = [int(t[0].numel()) for t in (student_features[self.student_point], teacher_features[self.teacher_point])]
        self.module = ContrastParts(*dims, self.feat_dim, data.num_images, data.labels, self.nce_k, self.nce_t,
                                    self.nce_m)
        return self.module

    def feature_terms(self, features, labels, epoch):
        if features.indices is None:
            raise KDPluginError("loss crd needs each batch's image indices (its memory bank rows)")
        value = self.module(features.student[self.student_point].float(),
                            features.teacher[self.teacher_point].float(), features.indices)
        return [LossTerm("CRD Loss", value, self.beta)]
