"""Ensemble teachers: the original's AvNet (fixed logit average) and JointNet (members + trained head), and
WeightedEnsemble, a weighted average of any number of zoo networks (``ensemble_cifar``).

AvNet and JointNet hold a ResNet18 (``resnet``) and a VGG16 (``vgg``); ``member_weights`` = [w_resnet, w_vgg] is
a buffer, so a checkpoint keeps the mixing weights. ``forward`` returns one set of logits, so evaluation and KD treat an
ensemble like any network; ``forward_all`` gives every branch from one pass of each member.
"""
import math
import numbers
from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..util.errors import KDPluginError
from .registry import create_model, register_model, resolve_arch
from .resnet_cifar import resnet18_cifar
from .vgg_cifar import vgg16_bn_cifar

DEFAULT_RESNET_WEIGHT = 0.72
DEFAULT_VGG_WEIGHT = 0.28

AvOutputs = namedtuple("AvOutputs", ["vgg", "resnet", "mix"])
JointOutputs = namedtuple("JointOutputs", ["vgg", "resnet", "mix", "head"])
# Weights of JointNet's four cross-entropy terms. The default trains the head (which the original's
# CE(a1) + CE(a2) + CE(a3) left without gradient) and keeps the original's three branch terms.
JointLossWeights = namedtuple("JointLossWeights", JointOutputs._fields, defaults=(1.0, 1.0, 1.0, 1.0))
DEFAULT_LOSS_WEIGHTS = JointLossWeights()


class _TwoMembers(nn.Module):
    def __init__(self, resnet, vgg, resnet_weight, vgg_weight, num_classes=10):
        super().__init__()
        self.resnet = resnet if resnet is not None else resnet18_cifar(num_classes)
        self.vgg = vgg if vgg is not None else vgg16_bn_cifar(num_classes)
        self.register_buffer("member_weights", torch.tensor([float(resnet_weight), float(vgg_weight)]))

    def members(self, x):
        """(a1, a2, a3): VGG16 logits, ResNet18 logits and their weighted sum; each member runs once."""
        a1 = self.vgg(x)
        a2 = self.resnet(x)
        return a1, a2, weighted_sum([a1, a2], [self.member_weights[1], self.member_weights[0]])


def weighted_sum(outputs: list, weights: list) -> torch.Tensor:
    """``w_1 * o_1 + w_2 * o_2 + ...`` in the given order (AvNet's mix and WeightedEnsemble's logit average)."""
    total = weights[0] * outputs[0]
    for weight, output in zip(weights[1:], outputs[1:], strict=True):
        total = total + weight * output
    return total


COMBINE_MODES = ("logits", "probs")


def check_member_weights(weights: list | None, count: int, where: str = "--kd-teacher-weights") -> list[float]:
    """COUNT finite weights (None: equal ones) whose sum is positive, as a list scaled to sum to 1."""
    weights = [1.0] * count if weights is None else list(weights)
    if len(weights) != count:
        raise KDPluginError(f"{where}: {len(weights)} weight(s) for {count} ensemble member(s); give one per member")
    if not all(isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise KDPluginError(f"{where}: weights must be finite numbers, got {weights}")
    total = float(sum(weights))
    if not total > 0:
        raise KDPluginError(f"{where}: the weights must sum to a positive number, got {weights} (sum {total:g})")
    return [float(w) / total for w in weights]


class WeightedEnsemble(nn.Module):
    """A weighted average of N networks' outputs: of their logits (``combine='logits'``, default), or of their
    softmax probabilities (``'probs'``; the output is then the log of the averaged probabilities, which softmax,
    argmax and a KD temperature treat as logits). Weights are scaled to sum to 1 and kept as a buffer, with the
    mode, so a checkpoint and the teacher cache's digest cover both; ``model_config`` rebuilds the members."""

    def __init__(self, member_archs: list[str], weights: list | None = None, combine: str = "logits",
                 members: list | None = None):
        super().__init__()
        if not isinstance(member_archs, (list, tuple)) or not member_archs:
            raise KDPluginError(f"an ensemble needs a list of one or more member architectures, got {member_archs!r}")
        if combine not in COMBINE_MODES:
            raise KDPluginError(f"ensemble combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
        self.member_archs = [resolve_arch(a) for a in member_archs]
        if members is None:
            members = [create_model(a) for a in self.member_archs]
        if len(members) != len(self.member_archs):
            raise KDPluginError(f"{len(members)} member network(s) for {len(self.member_archs)} architecture(s)")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.register_buffer("member_weights", torch.tensor(check_member_weights(weights, len(members), "weights")))
        self.register_buffer("combine_probabilities", torch.tensor(combine == "probs"))

    def forward_members(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [member(x) for member in self.members]

    def combine_outputs(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        weights = list(self.member_weights.to(outputs[0].dtype))
        if self.combine == "logits":
            return weighted_sum(outputs, weights)
        return torch.log(weighted_sum([torch.softmax(o.float(), dim=1) for o in outputs], weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine_outputs(self.forward_members(x))

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'member 1 (arch)': logits, ..., 'mix': the ensemble's output}, each member run once."""
        outputs = self.forward_members(x)
        branches = {f"member {i + 1} ({short_name})": o for i, (short_name, o) in
                    enumerate(zip(self.member_archs, outputs, strict=True))}
        return {**branches, "mix": self.combine_outputs(outputs)}

    def model_config(self) -> dict:
        """What ``ensemble_cifar(**config)`` needs to rebuild this network before its weights are loaded."""
        return {"member_archs": list(self.member_archs), "combine": self.combine,
                "member_weights": [float(w) for w in self.member_weights]}

    def describe(self) -> str:
        return f"ensemble ({self.combine}) of " + " + ".join(
            f"{float(w):.3g} x {a}" for w, a in zip(self.member_weights, self.member_archs, strict=True))


class AvNet(_TwoMembers):
    """``w_r * resnet(x) + w_v * vgg(x)`` on logits; the weights are a buffer (saved, never trained)."""

    def __init__(self, resnet=None, vgg=None, resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT):
        super().__init__(resnet, vgg, resnet_weight, vgg_weight)

    def forward_all(self, x):
        return AvOutputs(*self.members(x))

    def forward(self, x):
        return self.members(x)[2]


class JointNet(_TwoMembers):
    """ResNet18 + VGG16 + a 330-parameter head: three Linear(10,10) maps on a1, a2 and softmax(a3), summed.

    a1 = vgg(x), a2 = resnet(x), a3 = w_v*a1 + w_r*a2, head = h1(a1) + h2(a2) + h3(softmax(a3)).
    Built frozen for joint training (``freeze=True``): only ``unfrozen_modules`` have trainable parameters
    and every other BatchNorm stays in eval mode, however the network is created (factory, checkpoint, trainer).
    In training mode ``forward`` keeps all four outputs in ``last_outputs`` for ``training_criterion``.
    """

    def __init__(self, resnet=None, vgg=None, resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT,
                 num_classes=10, freeze=True, loss_weights=DEFAULT_LOSS_WEIGHTS):
        super().__init__(resnet, vgg, resnet_weight, vgg_weight, num_classes)
        self.head_vgg = nn.Linear(num_classes, num_classes)
        self.head_resnet = nn.Linear(num_classes, num_classes)
        self.head_mix = nn.Linear(num_classes, num_classes)
        self.loss_weights = JointLossWeights(*loss_weights)
        self.last_outputs = None
        self._frozen_batchnorms = []
        if freeze:
            self.freeze_for_joint_training()

    def forward_all(self, x):
        a1, a2, a3 = self.members(x)
        head = self.head_vgg(a1) + self.head_resnet(a2) + self.head_mix(torch.softmax(a3, dim=1))
        return JointOutputs(a1, a2, a3, head)

    def forward(self, x):
        outputs = self.forward_all(x)
        self.last_outputs = outputs if self.training else None
        return outputs.head

    def training_criterion(self):
        """The engine trains with this instead of plain CE (see ``JointNetLoss``)."""
        return JointNetLoss(self)

    def unfrozen_modules(self):
        """The layers the original trains: VGG16's last three conv+BN and classifier, ResNet's last block and fc."""
        vgg_layers = list(self.vgg.features)
        conv_positions = [i for i, m in enumerate(vgg_layers) if isinstance(m, nn.Conv2d)][-3:]
        modules = {}
        for pos in conv_positions:
            modules[f"vgg.features.{pos}"] = vgg_layers[pos]
            modules[f"vgg.features.{pos + 1}"] = vgg_layers[pos + 1]
        modules["vgg.classifier"] = self.vgg.classifier
        last_stage = self.resnet.layer4
        modules[f"resnet.layer4.{len(last_stage) - 1}"] = last_stage[-1]
        modules["resnet.linear"] = self.resnet.linear
        for name in ("head_vgg", "head_resnet", "head_mix"):
            modules[name] = getattr(self, name)
        return modules

    def freeze_for_joint_training(self):
        """Freeze everything but ``unfrozen_modules``; frozen BatchNorms stay in eval mode so stats never drift."""
        unfrozen = self.unfrozen_modules()
        trainable = {f"{prefix}.{n}" for prefix, module in unfrozen.items() for n, _ in module.named_parameters()}
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)
        trainable_modules = {id(m) for top in unfrozen.values() for m in top.modules()}
        self._frozen_batchnorms = [m for m in self.modules()
                                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in trainable_modules]
        self.train(self.training)
        return sorted(trainable)

    def train(self, mode=True):
        super().train(mode)
        for bn in self._frozen_batchnorms:
            bn.eval()
        return self


class JointNetLoss:
    """``sum_k w_k * CE(output_k, labels)`` over JointNet's head, vgg (a1), resnet (a2) and mix (a3) outputs.

    Called as ``criterion(head_logits, labels)`` like any criterion; the other three outputs come from the
    forward pass that produced ``head_logits`` (each stash is used once). The weights are read from
    ``model.loss_weights`` at each call;
    ``last_terms`` holds the four unweighted terms of the latest call.
    """

    def __init__(self, model):
        self.model = model
        self.last_terms = None

    def __call__(self, head_logits, labels):
        outputs, self.model.last_outputs = self.model.last_outputs, None
        if outputs is None or outputs.head.shape != head_logits.shape:
            raise RuntimeError("JointNetLoss needs the logits of the JointNet's latest training-mode forward pass")
        # head_logits may be a cast copy of outputs.head (autocast wrappers return .float()); use it as given.
        outputs = outputs._replace(head=head_logits)
        terms = {name: F.cross_entropy(value.float(), labels) for name, value in outputs._asdict().items()}
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        weights = self.model.loss_weights._asdict()
        return sum(weights[name] * value for name, value in terms.items())


@register_model(aliases=("avg", "avnet"))
def avnet_cifar(resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT, resnet=None, vgg=None):
    return AvNet(resnet, vgg, resnet_weight=resnet_weight, vgg_weight=vgg_weight)


@register_model(aliases=("jn", "jointnet"))
def jointnet_cifar(resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT, resnet=None, vgg=None):
    return JointNet(resnet, vgg, resnet_weight=resnet_weight, vgg_weight=vgg_weight)


@register_model(aliases=("ensemble",))
def ensemble_cifar(member_archs=("vgg7_bn_cifar",), member_weights: list | None = None, combine: str = "logits",
                   members: list | None = None) -> WeightedEnsemble:
    return WeightedEnsemble(list(member_archs), member_weights, combine, members)
