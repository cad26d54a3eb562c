"""``kd-plugin create-ensemble`` and ``kd-plugin train-jointnet`` (registered in ``kd_plugin.cli``).

    kd-plugin create-ensemble avg -o avnet.pth.tar --resnet18-ckpt R.pth.tar --vgg16-ckpt V.pt [--data DATA]
    kd-plugin create-ensemble jn -o jn_init.pth.tar --resnet18-ckpt R.pth.tar --vgg16-ckpt V.pt
    kd-plugin create-ensemble ensemble -o ens.pth.tar --member vgg7=A.pth.tar --member resnet18=B.pth.tar [--data D]
    kd-plugin train-jointnet --resnet18-ckpt R --vgg16-ckpt V DATA --compress schedules/jointnet_cifar.yaml

``train-jointnet`` takes compress_classifier's arguments after the member options and is the same as
``create-ensemble jn`` followed by ``compress_classifier DATA -a jointnet_cifar --exp-load-weights-from INIT``,
plus each branch's test accuracy before and after (``branch_accuracy.json`` in the run directory).
"""
import argparse
import dataclasses
import os
import re
import tempfile

from ..data import load_split
from ..experiments.ensembles.branches import branch_accuracy, report_branches
from ..experiments.ensembles.members import (
    ENSEMBLE_ARCHS,
    WEIGHTED_ENSEMBLE,
    add_member_args,
    build_ensemble,
    build_weighted_ensemble,
    members_from_args,
    save_model_checkpoint,
)
from ..experiments.ensembles.training import JOINTNET, start_from_members, train_jointnet
from ..models import resolve_arch
from ..models.ensembles import COMBINE_MODES
from ..protocol.config import read_schedule
from ..reporting.summaries import parameter_count
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir


def add_create_args(p):
    p.add_argument("arch", metavar="TYPE", help="avnet_cifar (avg), jointnet_cifar (jn), or ensemble_cifar "
                                                "(ensemble: any networks, --member)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (Distiller format); must not exist")
    p.add_argument("--data", help="CIFAR-10 dir: also report each branch's test accuracy")
    p.add_argument("--report", help="where that report goes (default: OUTPUT's stem + _branches.json)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_member_args(p)
    group = p.add_argument_group("ensemble_cifar members (any networks)")
    group.add_argument("--member", action="append", metavar="ARCH=CHECKPOINT[@WEIGHT]",
                       help="a member (repeatable, in order); weights on every member or none (default: equal)")
    group.add_argument("--combine", choices=COMBINE_MODES, default="logits",
                       help="average the members' logits (default) or their probabilities")


def cmd_create(args):
    arch = resolve_arch(args.arch)
    if arch not in (*ENSEMBLE_ARCHS, WEIGHTED_ENSEMBLE):
        raise KDPluginError(f"create-ensemble builds {', '.join((*ENSEMBLE_ARCHS, WEIGHTED_ENSEMBLE))}, not {arch}")
    if (arch == WEIGHTED_ENSEMBLE) != bool(args.member):
        raise KDPluginError(f"--member gives the members of {WEIGHTED_ENSEMBLE}, and only of it" if args.member else
                            f"{WEIGHTED_ENSEMBLE} needs its members: --member ARCH=CHECKPOINT[@WEIGHT] (repeatable)")
    members = members_from_args(args) if arch != WEIGHTED_ENSEMBLE else args.member
    if os.path.exists(args.output):
        raise KDPluginError(f"{args.output} already exists; remove it or choose another path")
    if arch == WEIGHTED_ENSEMBLE:
        model = build_weighted_ensemble(members, args.combine)
        described = model.describe()
    else:
        model = build_ensemble(arch, members)
        described = (f"{members.resnet_weight} x resnet18 {members.resnet_checkpoint} + {members.vgg_weight} x "
                     f"vgg16 {members.vgg_checkpoint}")
        members = dataclasses.asdict(members)
    save_model_checkpoint(model, arch, args.output)
    print(f"wrote {arch} ({parameter_count(model):,} parameters; {described}) to {args.output}")
    if args.data:
        accuracy = branch_accuracy(model.to(args.device), load_split(args.data, "test"), args.device)
        report = args.report or re.sub(r"(\.pth\.tar|\.pth|\.pt|\.tar)$", "", args.output) + "_branches.json"
        report_branches(report, {"test_top1": accuracy}, arch=arch, checkpoint=args.output, members=members)
    return 0


def add_train_args(p):
    add_member_args(p)
    p.add_argument("compress_args", nargs=argparse.REMAINDER, metavar="DATA [compress_classifier options]",
                   help="compress_classifier's arguments (-a defaults to jointnet_cifar)")
    p.add_argument("--spec", nargs=argparse.REMAINDER, metavar="FILE [--resume-from CKPT]",
                   help="instead: the run written down as a spec file (a reproduce stage's spec.json)")


def cmd_train(args):
    from .compress_classifier import build_parser, settings_from_args, spec_from_file_args

    if args.spec is not None:  # a reproduce stage: the run written down as a spec file
        if args.compress_args:
            raise KDPluginError("train-jointnet takes either compress_classifier's arguments or --spec FILE")
        settings = spec_from_file_args(["--spec", *args.spec])
    else:
        run_args = build_parser().parse_args(args.compress_args)
        if run_args.evaluate or run_args.summary:
            raise KDPluginError("train-jointnet trains; use compress_classifier for -e/--summary")
        if run_args.arch is None:
            training = (read_schedule(run_args.compress).get("training") or {}) if run_args.compress else {}
            run_args.arch = training.get("arch", JOINTNET)
        settings = settings_from_args(run_args)
    if resolve_arch(settings.model.arch) != JOINTNET:
        raise KDPluginError(f"train-jointnet trains {JOINTNET}, not {resolve_arch(settings.model.arch)}")
    if settings.model.load_weights_from or settings.resume.checkpoint:
        summary = train_jointnet(settings)
    else:
        members = members_from_args(args)
        scratch = ensure_writable_dir(settings.runtime.out_dir)
        with tempfile.TemporaryDirectory(prefix=".jointnet-init-", dir=scratch) as tmp:
            init = start_from_members(JOINTNET, members, tmp)
            summary = train_jointnet(settings.changed(load_weights_from=init),
                                     origin=dataclasses.asdict(members))
    print(f"Log directory: {summary['run_dir']}")
    return 0


# name: (function, help, argument builder), registered by kd_plugin.cli
COMMANDS = {
    "create-ensemble": (cmd_create, "build AvNet or JointNet from a ResNet18 and a VGG16 checkpoint, or an "
                                    "ensemble_cifar of any checkpoints", add_create_args),
    "train-jointnet": (cmd_train, "train JointNet from its members with compress_classifier's options; reports "
                                  "each branch's test accuracy before and after", add_train_args),
}
