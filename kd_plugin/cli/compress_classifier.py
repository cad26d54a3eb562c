"""``compress_classifier``: Distiller's image-classifier command line, running on kd-plugin's runtime.

Flag names and defaults follow Distiller's ``compress_classifier.py``; additions are ``--optimizer``,
``--augment`` and ``--download``. Flags override a schedule's ``training:`` section, which overrides the
defaults. Example: ``compress_classifier DATA -a vgg7_bn_cifar --kd-teacher resnet18_cifar --kd-resume T.pth.tar
--kd-temp 1.5 --epochs 30``.
"""
import sys

from ..checkpoint import normalization_line
from ..checkpoint.files import network_to_inspect
from ..data import load_split
from ..engine.mutual import run_mutual_learning
from ..engine.run_data import run_dataset
from ..engine.trainer import run_training
from ..reporting.summaries import SUMMARY_CHOICES, render_summary
from ..spec import RunSpec
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of
from .args import OneLineParser, cli_entry
from .training_args import add_training_args, settings_from_args


def build_parser(prog="compress_classifier"):
    p = OneLineParser(prog=prog,
                      description="Train/evaluate CIFAR-10 classifiers with Distiller-style schedules and KD.")
    add_training_args(p)
    p.add_argument("-e", "--evaluate", action="store_true", help="evaluate on the test split and exit")
    p.add_argument("--confusion", action="store_true", help="with -e: print per-class accuracy and confusion")
    p.add_argument("--summary", choices=SUMMARY_CHOICES, action="append", help="print a summary and exit")
    return p


def evaluate_only(settings, confusion):
    from ..data import TensorLoader
    from ..engine.loop import evaluate_loader, per_class_accuracy

    test = load_split(settings.data.path, "test", run_dataset(settings))
    model = model_to_inspect(settings, test.classes)
    device = settings.runtime.device
    results = evaluate_loader(model.to(device), TensorLoader(test, 1024, "n", device=device,
                                                                          normalization=normalization_of(model)))
    print(f"==> Top1: {results['top1']:.3f}    Top5: {results['top5']:.3f}    Loss: {results['Loss']:.3f} "
          f"({len(test)} test images)")
    if confusion:
        for name, acc in per_class_accuracy(results["confusion"], test.classes).items():
            print(f"{name:>12}: {acc:6.2f}%")
        print(results["confusion"].numpy())
    return 0


def model_to_inspect(settings, classes=None):
    """The network -e/--summary look at: the checkpoint's (with its normalization) or a fresh one (with
    CLASSES, the data's, when given); prints which normalization it expects and why."""
    model, how = network_to_inspect(settings.resume.checkpoint or settings.model.load_weights_from,
                                    settings.model.arch, settings.data.normalization, classes)
    print(normalization_line(model, how))
    return model


def build_spec_parser():
    """``compress_classifier --spec FILE``: a run a sweep or reproduce wrote down; flags only say how it runs."""
    p = OneLineParser(prog="compress_classifier --spec",
                      description="Run the training run a spec file (spec.json) describes.")
    p.add_argument("--spec", required=True, metavar="FILE", help="the run spec (JSON), e.g. a sweep cell's")
    p.add_argument("--resume-from", dest="resume_from", metavar="PATH", help="checkpoint to resume from")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    return p


def spec_from_file_args(argv):
    args = build_spec_parser().parse_args(argv)
    given = {k: v for k, v in (("resume_from", args.resume_from), ("threads", args.threads),
                               ("progress", args.progress)) if v is not None}
    return RunSpec.read(args.spec).changed(**given)


@cli_entry("compress_classifier")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].split("=", 1)[0] == "--spec":
        settings = spec_from_file_args(argv)
        settings.command = ["compress_classifier", *argv]
        return train(settings)
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    settings.command = ["compress_classifier", *argv]
    if settings.mutual.peers and (args.summary or args.evaluate):
        raise KDPluginError("-e/--summary look at one model; with --mutual, evaluate a peer's best checkpoint")
    if args.summary:
        model = model_to_inspect(settings)
        for kind in args.summary:
            print(render_summary(model, kind))
        return 0
    if args.evaluate:
        return evaluate_only(settings, args.confusion)
    return train(settings)


def train(spec):
    summary = (run_mutual_learning if spec.mutual.peers else run_training)(spec)
    print(f"Log directory: {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
