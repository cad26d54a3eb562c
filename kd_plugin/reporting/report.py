"""``kd-plugin report``: a model report card per checkpoint and a comparison table across them.

A card is evaluation.model_card (parameters, fp32 weight MiB, MACs, train/test top-1, per-class accuracy)
with latency measured on every device asked for (CPU, and the GPU when present): the original's batched
figure (test-split evaluation wall time at batch 1024 / images) and batch-1 median and p90. Each card is
written as JSON + Markdown + a per-class bar chart PNG.
"""
import csv
import io
import os
import re
import sys

import torch

from ..checkpoint import load_model, normalization_line
from ..data import TensorLoader, load_split
from ..distill.teacher import as_list, load_teacher
from ..engine.loop import evaluate_loader
from ..export.formats import check_formats
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir, read_json_record, require_file, write_text
from ..util.normalization import add_normalization_arg
from .evaluation import add_format_rows, model_card, parse_formats, timed_evaluation, write_card
from .plots import per_class_bars, plot_or_warn
from .tables import columns_of, markdown_table

CHECKPOINT_SUFFIX = re.compile(r"(\.pth\.tar|\.pth|\.pt|\.tar)$")


def latency_devices(requested="auto"):
    """Devices to time on, the first one also evaluating accuracy: ``auto`` = the GPU (if any), then the CPU."""
    if requested == "auto":
        return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise KDPluginError(f"--device {requested}: no CUDA device is available")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise KDPluginError(f"--device must be auto, cpu or cuda, got {requested!r}")
    return [requested]


def report_card(model, arch, test_set, train_set=None, devices=("cpu",), repeats=50, checkpoint=None):
    card = model_card(model, arch, test_set, devices[0], train_set, repeats, checkpoint)
    card["latency"] = {torch.device(devices[0]).type: {
        "device": card["device"], "batched_s_per_image": card["latency_batched_s_per_image"],
        "batch1_median_s": card["latency_batch1_median_s"], "batch1_p90_s": card["latency_batch1_p90_s"]}}
    for device in devices[1:]:
        card["latency"][torch.device(device).type] = timed_evaluation(model, test_set, device, repeats)[1]
    model.to("cpu")
    return card


def card_for_checkpoint(path, test_set, train_set=None, arch=None, devices=("cpu",), repeats=50, normalization=None):
    model, checkpoint = load_model(path, arch, normalization)
    print(normalization_line(model, checkpoint.normalization_note))
    return report_card(model, checkpoint.arch or arch, test_set, train_set, devices, repeats, path)


def distilled_from(path: str) -> tuple | None:
    """The teacher the run that wrote checkpoint PATH distilled from, as its summary.json beside PATH records it:
    (archs, checkpoints, member weights or None, combine or None), or None (no KD, no summary, teacher files gone)."""
    summary_path = os.path.join(os.path.dirname(os.path.abspath(path)), "summary.json")
    if not os.path.isfile(summary_path):
        return None
    summary = read_json_record(summary_path, "the summary of the run that wrote it",
                               "move it away to report the checkpoint without its teacher")
    kd = (summary.get("distillation") or [None])[0]
    if not kd or not kd.get("teacher_checkpoint"):
        return None
    config = kd.get("teacher_config") or {}
    archs = config.get("member_archs") or [kd["teacher_arch"]]
    checkpoints = as_list(kd["teacher_checkpoint"])
    if not all(isinstance(c, str) and os.path.isfile(c) for c in checkpoints):
        return None
    return tuple(archs), tuple(checkpoints), config.get("member_weights"), config.get("combine")


def teacher_accuracy(teacher: tuple, test_set: object, measured: dict) -> float:
    """Test top-1 of TEACHER (a distilled_from value) on TEST_SET, each teacher measured once (MEASURED: a dict)."""
    key = (teacher[0], teacher[1], tuple(teacher[2] or ()), teacher[3])
    if key not in measured:
        archs, checkpoints, weights, combine = teacher
        network = load_teacher(list(archs), list(checkpoints), weights=weights, combine=combine)
        measured[key] = evaluate_loader(network, TensorLoader(test_set, 1024, "n"))["top1"]
    return measured[key]


def write_report_card(card, out_dir, stem, warn=print):
    """JSON + Markdown (+ PNG when matplotlib is there); returns the written paths."""
    png = plot_or_warn(per_class_bars, {card["arch"]: card["test_per_class"]},
                       os.path.join(out_dir, f"{stem}_per_class.png"),
                       title=f"{stem}: per-class test accuracy", warn=warn)
    if png:
        card["per_class_png"] = os.path.basename(png)
    return [*write_card(card, out_dir, stem), *([png] if png else [])]


def unique_stems(paths):
    stems = {}
    for path in paths:
        stem = CHECKPOINT_SUFFIX.sub("", os.path.basename(path)) or "model"
        candidate, n = stem, 1
        while candidate in stems.values():
            n += 1
            candidate = f"{stem}-{n}"
        stems[path] = candidate
    return stems


def comparison_rows(cards_by_label):
    """One flat row per card: the numbers of the comparison table, in a fixed column order."""
    rows = []
    for label, card in cards_by_label.items():
        row = {"model": label, "arch": card["arch"], "parameters": card["parameters"],
               "size_mib": card["size_mib"], "macs": card["macs"], "train_top1": card.get("train_top1"),
               "test_top1": card["test_top1"], "teacher_test_top1": card.get("teacher_test_top1")}
        for kind, lat in card.get("latency", {}).items():
            row.update({f"{kind}_batched_s_per_image": lat["batched_s_per_image"],
                        f"{kind}_batch1_median_s": lat["batch1_median_s"], f"{kind}_batch1_p90_s": lat["batch1_p90_s"]})
        row.update(card["test_per_class"])
        rows.append(row)
    return rows


def write_comparison(cards_by_label, out_dir, warn=print):
    rows = comparison_rows(cards_by_label)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns_of(rows))
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text(os.path.join(out_dir, "comparison.csv"), buffer.getvalue())
    png = plot_or_warn(per_class_bars, {label: card["test_per_class"] for label, card in cards_by_label.items()},
                       os.path.join(out_dir, "comparison_per_class.png"), warn=warn)
    text = "# Model comparison\n\n" + markdown_table(rows)
    if png:
        text += f"\n![per-class test accuracy]({os.path.basename(png)})\n"
    md_path = write_text(os.path.join(out_dir, "comparison.md"), text)
    return [md_path, csv_path, *([png] if png else [])]


def add_report_args(p):
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint files (Distiller format or "
                                                                        "plain state_dicts with -a)")
    p.add_argument("--data", required=True, help="CIFAR-10 python batches dir")
    p.add_argument("-a", "--arch", help="architecture (needed for plain state_dict checkpoints)")
    p.add_argument("-o", "--out-dir", default="reports", help="where cards and the comparison go")
    p.add_argument("--device", default="auto", help="auto (GPU when present, and CPU), cpu or cuda")
    p.add_argument("--repeats", type=int, default=50, help="batch-1 latency repeats")
    add_normalization_arg(p, "the networks expect")
    p.add_argument("--no-train-accuracy", dest="train_accuracy", action="store_false",
                   help="skip the (slow) training-split evaluation")
    add_export_format_args(p)


def add_export_format_args(p):
    p.add_argument("--export-formats", metavar="LIST", help="also export to these formats (onnx, onnx-int8; "
                   "comma-separated) into OUT_DIR/exports and add a card row per format (ONNX Runtime, CPU)")
    p.add_argument("--calib-data", help="dataset whose training split calibrates onnx-int8 (default: --data)")


def cmd_report(args):
    if args.repeats < 1:
        raise KDPluginError(f"--repeats must be >= 1, got {args.repeats}")
    for path in args.checkpoints:
        require_file(path, "checkpoint file")
    devices = latency_devices(args.device)
    formats = check_formats(parse_formats(args.export_formats), True)
    ensure_writable_dir(args.out_dir)
    test = load_split(args.data, "test")
    train = load_split(args.data, "train") if args.train_accuracy else None
    warn = _stderr_warning
    cards, teachers = {}, {}
    for path, stem in unique_stems(args.checkpoints).items():
        model, checkpoint = load_model(path, args.arch, getattr(args, "normalization", None))
        print(normalization_line(model, checkpoint.normalization_note))
        card = report_card(model, checkpoint.arch or args.arch, test, train, devices, args.repeats, path)
        teacher = distilled_from(path)
        if teacher is not None:  # a KD student: its teacher's top-1 on the same test split, beside its own
            card["teacher_test_top1"] = teacher_accuracy(teacher, test, teachers)
        add_format_rows(card, model, test, formats, args.out_dir, stem, args.calib_data or args.data, args.repeats)
        written = write_report_card(card, args.out_dir, stem, warn)
        cards[stem] = card
        train_text = f", train top-1 {card['train_top1']:.2f}%" if "train_top1" in card else ""
        print(f"{stem} ({card['arch']}): test top-1 {card['test_top1']:.2f}%{train_text}, "
              f"{card['parameters']:,} parameters, {card['size_mib']:.2f} MiB -> {written[1]}")
    if len(cards) > 1:
        print(f"comparison: {write_comparison(cards, args.out_dir, warn)[0]}")
    return 0


def _stderr_warning(text):
    print(text, file=sys.stderr)
