"""``kd-plugin``: the project's own command with subcommands (evaluate, make-data, models, ...)."""
import functools
import sys

from ..data import DEFAULT_DATASET, add_dataset_arg, detect_datasets, get_dataset, list_datasets, write_synthetic
from ..engine.settings import check_device
from ..experiments.reproduce.command import add_reproduce_args, cmd_reproduce
from ..experiments.sweep import add_sweep_args, cmd_sweep
from ..export.command import add_export_args, cmd_export
from ..models import create_model, list_aliases, list_models
from ..reporting.evaluation import evaluate_target, parse_formats
from ..reporting.plots import add_plot_args, cmd_plot
from ..reporting.report import add_export_format_args, add_report_args, cmd_report
from ..reporting.summaries import parameter_count
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir
from ..util.normalization import add_normalization_arg
from .args import OneLineParser, cli_entry
from .ensembles import COMMANDS as ENSEMBLE_COMMANDS
from .training_args import RunArgs

SUBCOMMANDS = {}


def subcommand(name, help_text):
    def wrap(fn):
        SUBCOMMANDS[name] = (fn, help_text)
        return fn
    return wrap


def add_evaluate_args(p):
    p.add_argument("target", metavar="CHECKPOINT_OR_ARCH",
                   help="a checkpoint file, or a model name for a fresh network")
    p.add_argument("--data", required=True, help="the dataset's folder (CIFAR-10/100 python files, an image folder)")
    add_dataset_arg(p)
    p.add_argument("-a", "--arch", help="architecture (needed for plain state_dict checkpoints)")
    p.add_argument("-o", "--out-dir", default="reports", help="where the JSON and Markdown go")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=50, help="batch-1 latency repeats")
    p.add_argument("--train-accuracy", action="store_true", help="also evaluate on the training split")
    add_export_format_args(p)
    add_normalization_arg(p)


@subcommand("evaluate", "evaluate a checkpoint (or a fresh network) on the test split; writes JSON + Markdown")
def cmd_evaluate(args):
    evaluate_target(args.target, args.data, args.arch, args.out_dir, check_device(args.device), args.repeats,
                    args.train_accuracy, parse_formats(args.export_formats), args.calib_data, args.normalization,
                    args.dataset)
    return 0


def add_make_data_args(p):
    p.add_argument("out", help="directory to create (gets cifar-10-batches-py/ or cifar-100-python/ inside)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, choices=[d for d in list_datasets()
                                                                  if get_dataset(d).write_synthetic],
                   help=f"which format to write (default {DEFAULT_DATASET})")
    p.add_argument("--train-images", type=int, default=500)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite a dataset that is already there")


@subcommand("make-data", "write a small generated dataset in CIFAR-10 (or CIFAR-100, image folder) format")
def cmd_make_data(args):
    least = get_dataset(args.dataset).num_classes or 1  # an image folder's writer checks its own classes
    if args.train_images < least or args.test_images < least:
        raise KDPluginError(f"--train-images and --test-images must be >= {least} (one per {args.dataset} class)")
    held = detect_datasets(args.out)
    if held and not args.force:
        raise KDPluginError(f"{args.out} already holds a dataset ({' and '.join(held)} data); nothing was written. "
                            f"Pass --force to overwrite it")
    ensure_writable_dir(args.out)
    write_synthetic(args.out, args.train_images, args.test_images, args.seed, args.dataset)
    print(f"wrote a generated {args.dataset}-format dataset to {args.out}")
    return 0


@subcommand("models", "list the model zoo with parameter counts")
def cmd_models(args):
    aliases = {}
    for alias, name in list_aliases().items():
        aliases.setdefault(name, []).append(alias)
    width = max(len(name) for name in list_models())
    for name in list_models():
        print(f"{name:{width}} {parameter_count(create_model(name)):>12,}  "
              f"aliases: {', '.join(sorted(aliases.get(name, [])))}")
    return 0


ARG_BUILDERS = {"evaluate": add_evaluate_args, "make-data": add_make_data_args, "models": lambda p: None}
for _name, _command, _help, _arg_builder in (
        ("report", cmd_report, "model report cards (JSON + Markdown + per-class PNG) for checkpoints, and a "
                               "comparison table", add_report_args),
        ("sweep", functools.partial(cmd_sweep, run_args=RunArgs),
         "run a resumable alpha x T (x teacher x student x seed) grid of KD runs in parallel; "
                             "writes the table and accuracy-vs-T PNGs", add_sweep_args),
        ("reproduce", functools.partial(cmd_reproduce, run_args=RunArgs),
         "the original experiment end to end (teachers, AvNet, JointNet, students, every "
                                     "KD row, cards) with REPORT.md beside the original's numbers; resumable",
         add_reproduce_args),
        ("plot", cmd_plot, "training curves (losses, top-1, lr per epoch) as PNG from run directories",
         add_plot_args),
        ("export", cmd_export, "ship a network: ONNX (verified with ONNX Runtime; --int8 for static int8) or "
                               "safetensors weights, with its normalization, input size and classes",
         add_export_args)):
    subcommand(_name, _help)(_command)
    ARG_BUILDERS[_name] = _arg_builder
for _name, (_command, _help, _arg_builder) in ENSEMBLE_COMMANDS.items():
    subcommand(_name, _help)(_command)
    ARG_BUILDERS[_name] = _arg_builder


def build_parser():
    parser = OneLineParser(prog="kd-plugin", description="Knowledge distillation for CIFAR-10, Distiller-style.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, (_, help_text) in SUBCOMMANDS.items():
        ARG_BUILDERS[name](sub.add_parser(name, help=help_text, description=help_text))
    return parser


@cli_entry("kd-plugin")
def main(argv=None):
    args = build_parser().parse_args(argv)
    return SUBCOMMANDS[args.command][0](args)


if __name__ == "__main__":
    sys.exit(main())
