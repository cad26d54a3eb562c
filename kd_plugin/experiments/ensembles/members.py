"""An ensemble from its member checkpoints (AvNet/JointNet: a ResNet18 and a VGG16; ``ensemble_cifar``: any
networks, ``--member ARCH=CHECKPOINT[@WEIGHT]``), and saving it as a checkpoint.

Member checkpoints may be ours, Distiller's or plain state_dicts (the original's ``.pt`` files). They come
from ``--resnet18-ckpt`` / ``--vgg16-ckpt`` or, failing that, the KD_RESNET18_CKPT / KD_VGG16_CKPT
environment variables (the original hard-coded them in its sources).
"""
import math
import os
from dataclasses import dataclass

import torch

from ...checkpoint import load_model, save_checkpoint
from ...data import install_input_adapter
from ...distill.teacher import load_ensemble
from ...models import create_model, resolve_arch
from ...models.ensembles import DEFAULT_RESNET_WEIGHT, DEFAULT_VGG_WEIGHT, check_member_weights
from ...util.errors import KDPluginError
from ...util.fileio import ensure_writable_dir
from ...util.normalization import normalization_of

ENSEMBLE_ARCHS = ("avnet_cifar", "jointnet_cifar")  # built from a ResNet18 and a VGG16 (Members)
WEIGHTED_ENSEMBLE = "ensemble_cifar"  # any networks (--member)
# member: (its architecture, command-line flag, environment variable)
MEMBER_SOURCES = {"resnet": ("resnet18_cifar", "--resnet18-ckpt", "KD_RESNET18_CKPT"),
                  "vgg": ("vgg16_bn_cifar", "--vgg16-ckpt", "KD_VGG16_CKPT")}


@dataclass
class Members:
    resnet_checkpoint: str
    vgg_checkpoint: str
    resnet_weight: float = DEFAULT_RESNET_WEIGHT
    vgg_weight: float = DEFAULT_VGG_WEIGHT


def add_member_args(parser):
    group = parser.add_argument_group("ensemble members (AvNet/JointNet)")
    for arch, flag, env in MEMBER_SOURCES.values():
        group.add_argument(flag, dest=_dest(flag), metavar="PATH",
                           help=f"{arch} member checkpoint (ours, Distiller's or a plain state_dict); default ${env}")
    group.add_argument("--resnet-weight", type=float, default=DEFAULT_RESNET_WEIGHT,
                       help=f"ResNet18's weight on the logits (default {DEFAULT_RESNET_WEIGHT})")
    group.add_argument("--vgg-weight", type=float, default=DEFAULT_VGG_WEIGHT,
                       help=f"VGG16's weight on the logits (default {DEFAULT_VGG_WEIGHT})")


def _dest(flag):
    return flag.lstrip("-").replace("-", "_")


def members_from_args(args, environ=None):
    environ = os.environ if environ is None else environ
    paths = {}
    for member, (arch, flag, env) in MEMBER_SOURCES.items():
        paths[member] = getattr(args, _dest(flag)) or environ.get(env)
        if not paths[member]:
            raise KDPluginError(f"no {arch} member checkpoint for the ensemble: pass {flag} PATH or set {env}")
    for flag, value in (("--resnet-weight", args.resnet_weight), ("--vgg-weight", args.vgg_weight)):
        if not math.isfinite(value) or value < 0:
            raise KDPluginError(f"{flag} must be a finite number >= 0, got {value}")
    if args.resnet_weight + args.vgg_weight == 0:
        raise KDPluginError("--resnet-weight and --vgg-weight cannot both be 0")
    return Members(paths["resnet"], paths["vgg"], args.resnet_weight, args.vgg_weight)


def build_ensemble(arch, members):
    """AvNet or JointNet holding the two members' weights (JointNet's head freshly initialised)."""
    arch = resolve_arch(arch)
    if arch not in ENSEMBLE_ARCHS:
        raise KDPluginError(f"{arch} is not an ensemble ({', '.join(ENSEMBLE_ARCHS)})")
    resnet, _ = load_model(members.resnet_checkpoint, MEMBER_SOURCES["resnet"][0])
    vgg, _ = load_model(members.vgg_checkpoint, MEMBER_SOURCES["vgg"][0])
    # The ensemble takes the ResNet member's normalization; a VGG member normalized otherwise gets its own view.
    own = normalization_of(resnet)
    install_input_adapter(vgg, own)
    return create_model(arch, resnet=resnet, vgg=vgg, resnet_weight=members.resnet_weight,
                        vgg_weight=members.vgg_weight, normalization=own)


def parse_members(spec: str, flag: str) -> list[tuple[str, str, float | None]]:
    """[(arch, checkpoint, weight or None)] of a FLAG value: ARCH=CHECKPOINT, or an ensemble of members
    joined by commas, each ARCH=CHECKPOINT[@WEIGHT] (weights on all members or on none)."""
    members = []
    for part in spec.split(","):
        arch, sep, rest = part.strip().partition("=")
        checkpoint, at, weight = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not sep or not checkpoint:
            raise KDPluginError(f"{flag} {spec!r}: expected ARCH=CHECKPOINT, or ARCH=CHECKPOINT[@WEIGHT],... for "
                                f"an ensemble")
        try:
            members.append((resolve_arch(arch), checkpoint, float(weight) if at else None))
        except ValueError:
            raise KDPluginError(f"{flag} {spec!r}: weight {weight!r} is not a number") from None
    member_weights(members, f"{flag} {spec!r}")
    return members


def member_weights(members: list[tuple[str, str, float | None]], where: str) -> list[float] | None:
    """The weights of MEMBERS [(arch, checkpoint, weight or None)], checked: None when no member has one."""
    weights = [w for _, _, w in members]
    if None in weights and any(w is not None for w in weights):
        raise KDPluginError(f"{where}: give a @WEIGHT to every ensemble member or to none")
    if weights[0] is None:
        return None
    check_member_weights(weights, len(members), where)
    return weights


def build_weighted_ensemble(specs: list[str], combine: str = "logits", flag: str = "--member") -> torch.nn.Module:
    """An ``ensemble_cifar`` from --member values (each ARCH=CHECKPOINT[@WEIGHT], or several joined by commas)."""
    members = [member for spec in specs for member in parse_members(spec, flag)]
    return load_ensemble([(a, c) for a, c, _ in members], member_weights(members, flag), combine, where=flag)


def save_model_checkpoint(model, arch, path, epoch=0):
    """A Distiller-format checkpoint (``save_checkpoint``) of ``model`` at exactly ``path``, written atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    ensure_writable_dir(folder)
    written = save_checkpoint(epoch, resolve_arch(arch), model, name=f".{os.path.basename(path)}.{os.getpid()}",
                              dir=folder)
    os.replace(written, path)
    return path
