"""Model cards: accuracy (top-1/top-5/per-class), size, MACs and the two latency figures.

Batched latency is the original's definition: wall time of evaluating the whole test split at batch 1024
divided by the number of images. Batch-1 latency is the median (and p90) of single-image forwards.
"""
import os
import statistics
import time

import torch

from ..checkpoint import load_model, normalization_line
from ..checkpoint.files import network_to_inspect
from ..data import TensorLoader, load_split, resolve_dataset
from ..engine.loop import evaluate_loader, per_class_accuracy
from ..export.formats import check_formats, format_rows
from ..export.identity import model_identity
from ..models import dataset_of, resolve_arch
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir, require_file, write_json, write_text
from ..util.normalization import normalization_of
from .summaries import parameter_count, total_macs, weights_mib
from .tables import per_class_lines


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_latency(model, loader):
    """(results, seconds per image) for one timed evaluation pass over the loader."""
    _sync(loader.device)
    began = time.perf_counter()
    results = evaluate_loader(model, loader)
    _sync(loader.device)
    return results, (time.perf_counter() - began) / max(loader.num_images, 1)


@torch.no_grad()
def batch1_latency(model, sample, repeats=50, warmup=5):
    """(median, p90) seconds of a single-image forward."""
    model.eval()
    times = []
    for i in range(warmup + repeats):
        _sync(sample.device)
        began = time.perf_counter()
        model(sample)
        _sync(sample.device)
        if i >= warmup:
            times.append(time.perf_counter() - began)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def timed_evaluation(model, test_set, device="cpu", repeats=50):
    """Evaluate the test split once, timed, then time single-image forwards: (results, latency dict)."""
    device = torch.device(device)
    model = model.to(device).eval()
    own = normalization_of(model)  # the loaders feed the model its own normalization (no conversion timed)
    loader = TensorLoader(test_set, 1024, "n", device=device, normalization=own)
    evaluate_loader(model, TensorLoader(test_set.subset(slice(0, 8)), 8, "n", device=device,
                                        normalization=own))  # warm-up
    results, per_image = batched_latency(model, loader)
    sample = loader.make_batch(torch.arange(1, device=device), torch.zeros(1, dtype=torch.int64)).inputs
    median, p90 = batch1_latency(model, sample, repeats)
    return results, {"device": _device_name(device), "batched_s_per_image": per_image,
                     "batch1_median_s": median, "batch1_p90_s": p90}


def model_card(model, arch, test_set, device="cpu", train_set=None, repeats=50, checkpoint=None):
    test, latency = timed_evaluation(model, test_set, device, repeats)
    card = {
        "arch": arch, "checkpoint": checkpoint, "device": latency["device"],
        "normalization": normalization_of(model).record(),
        "parameters": parameter_count(model), "size_mib": round(weights_mib(model), 3), "macs": total_macs(model),
        "classes": len(test_set.classes), "test_images": len(test_set), "test_top1": test["top1"],
        "test_top5": test["top5"], "test_loss": test["Loss"],
        "test_per_class": per_class_accuracy(test["confusion"], test_set.classes),
        "latency_batched_s_per_image": latency["batched_s_per_image"],
        "latency_batch1_median_s": latency["batch1_median_s"], "latency_batch1_p90_s": latency["batch1_p90_s"],
    }
    if train_set is not None:
        train = evaluate_loader(model, TensorLoader(train_set, 1024, "n", device=torch.device(device),
                                                    normalization=normalization_of(model)))
        card.update({"train_images": len(train_set), "train_top1": train["top1"]})
    return card


def training_record(checkpoint):
    """What a card says of how the network was trained: the run spec its checkpoint records (paths relative to the
    run directory, as written) and the experiment identity (teacher and data digests), where it records them."""
    state = checkpoint.plugin_state
    return {key: state[key] for key in ("spec", "identity") if isinstance(state.get(key), dict)}


def _device_name(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def card_markdown(card):
    lines = [f"# {card['arch']}", "", "| field | value |", "|---|---|"]
    lines += [f"| checkpoint | {card.get('checkpoint') or '(freshly initialised)'} |",
              f"| device | {card['device']} |",
              f"| parameters | {card['parameters']:,} |",
              f"| size (MiB, fp32 weights) | {card['size_mib']:.2f} |",
              f"| MACs per image | {card['macs']:,} |"]
    if "train_top1" in card:
        lines.append(f"| train top-1 (%) | {card['train_top1']:.2f} ({card['train_images']} images) |")
    lines += [f"| test top-1 (%) | {card['test_top1']:.2f} ({card['test_images']} images) |",
              f"| test top-5 (%) | {card['test_top5']:.2f} |"]
    latencies = card.get("latency") or {"": {"batched_s_per_image": card["latency_batched_s_per_image"],
                                             "batch1_median_s": card["latency_batch1_median_s"],
                                             "batch1_p90_s": card["latency_batch1_p90_s"]}}
    for kind, lat in latencies.items():
        where = f" on {lat['device']}" if kind else ""
        lines += [f"| latency{where}, batched (s/image) | {lat['batched_s_per_image']:.6f} |",
                  f"| latency{where}, batch 1 median / p90 (s) | {lat['batch1_median_s']:.6f} / "
                  f"{lat['batch1_p90_s']:.6f} |"]
    lines += ["", "## Per-class test accuracy (%)", "", *per_class_lines({"top-1 (%)": card["test_per_class"]})]
    if card.get("per_class_png"):
        lines += ["", f"![per-class test accuracy]({card['per_class_png']})"]
    lines += format_table(card.get("formats"))
    return "\n".join(lines) + "\n"


def parse_formats(text):
    return [f.strip() for f in (text or "").split(",") if f.strip()]


def add_format_rows(card, model, test_set, formats, out_dir, stem, calib_data=None, repeats=50, dataset=None):
    """Card rows per deployment format (ONNX Runtime CPU), next to the PyTorch fp32 row, as card['formats'].

    The files are written to OUT_DIR/exports; int8 calibrates on CALIB_DATA's training split."""
    if not formats:
        return card
    check_formats(formats, bool(calib_data))
    calibration = load_split(calib_data, "train", dataset) if "onnx-int8" in formats else None
    cpu = card.get("latency", {}).get("cpu") or {"device": card["device"],
                                                 "batched_s_per_image": card["latency_batched_s_per_image"],
                                                 "batch1_median_s": card["latency_batch1_median_s"],
                                                 "batch1_p90_s": card["latency_batch1_p90_s"]}
    if not cpu["device"].startswith("cpu"):
        cpu = timed_evaluation(model, test_set, "cpu", repeats)[1]
    rows = [{"format": "pytorch fp32", "runtime": f"torch {cpu['device']}", "file": card.get("checkpoint"),
             "size_mib": card["size_mib"], "test_top1": card["test_top1"],
             **{k: cpu[k] for k in ("batched_s_per_image", "batch1_median_s", "batch1_p90_s")}}]
    exports = ensure_writable_dir(os.path.join(out_dir, "exports"))
    rows += format_rows(model.to("cpu"), model_identity(model, card["arch"]), formats, exports, stem, test_set,
                        calibration, repeats)
    card["formats"] = rows
    return card


def format_table(rows):
    if not rows:
        return []
    lines = ["", "## Deployment formats (CPU)", "",
             "Size: fp32 weights for PyTorch, the file on disk for ONNX. Batched latency: the test split at batch "
             "1024 / images.", "",
             "| format | runtime | size (MiB) | test top-1 (%) | batched (s/image) | batch 1 median / p90 (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['format']} | {r['runtime']} | {r['size_mib']:.2f} | {r['test_top1']:.2f} | "
                     f"{r['batched_s_per_image']:.6f} | {r['batch1_median_s']:.6f} / {r['batch1_p90_s']:.6f} |")
    return lines


def write_card(card, out_dir, stem):
    os.makedirs(out_dir, exist_ok=True)
    json_path = write_json(os.path.join(out_dir, f"{stem}.json"), card)
    md_path = write_text(os.path.join(out_dir, f"{stem}.md"), card_markdown(card))
    return json_path, md_path


def evaluate_target(target, data, arch=None, out_dir="reports", device="cpu", repeats=50, train_accuracy=False,
                    export_formats=(), calib_data=None, normalization=None, dataset=None):
    """The model card of TARGET (a checkpoint file, or a model name for a fresh network) on DATA's test split,
    written to OUT_DIR as JSON and Markdown and printed; returns the card. NORMALIZATION (a name or mean,std)
    overrides the checkpoint's. DATASET names what DATA holds (inferred from the folder when None)."""
    if repeats < 1:
        raise KDPluginError(f"--repeats must be >= 1, got {repeats}")
    check_formats(export_formats, True)  # a missing optional package is reported before any work
    ensure_writable_dir(out_dir)
    dataset = resolve_dataset(data, dataset, dataset_of(arch) if arch else None)
    test = load_split(data, "test", dataset)
    train = load_split(data, "train", dataset) if train_accuracy else None
    if os.path.exists(target):
        require_file(target, "checkpoint file")
        model, checkpoint = load_model(target, arch, normalization, test.classes)
        arch, source, how = checkpoint.arch or resolve_arch(arch), target, checkpoint.normalization_note
    else:
        if target.endswith((".pth.tar", ".pt", ".pth", ".tar")):
            raise KDPluginError(f"{target}: checkpoint file not found")
        arch, source = resolve_arch(target), None
        model, how = network_to_inspect(None, arch, normalization, test.classes, dataset)
    print(normalization_line(model, how))
    card = model_card(model, arch, test, device, train, repeats, source)
    if source is not None:
        card.update(training_record(checkpoint))
    stem = os.path.basename(source or arch).split(".")[0]
    add_format_rows(card, model, test, export_formats, out_dir, stem, calib_data or data, repeats, dataset)
    json_path, md_path = write_card(card, out_dir, stem)
    print(f"{arch}: test top-1 {card['test_top1']:.2f}%  top-5 {card['test_top5']:.2f}%  on {card['test_images']} "
          f"images ({card['device']})")
    print(f"parameters {card['parameters']:,}  size {card['size_mib']:.2f} MiB  MACs {card['macs']:,}")
    print(f"latency: batched {card['latency_batched_s_per_image']:.6f} s/image, batch-1 median "
          f"{card['latency_batch1_median_s']:.6f} s, p90 {card['latency_batch1_p90_s']:.6f} s")
    print("per-class: " + ", ".join(f"{k} {v:.1f}" for k, v in card["test_per_class"].items()))
    for row in card.get("formats", [])[1:]:
        print(f"{row['format']}: {row['size_mib']:.2f} MiB, test top-1 {row['test_top1']:.2f}%, batched "
              f"{row['batched_s_per_image']:.6f} s/image, batch-1 median {row['batch1_median_s']:.6f} s")
    print(f"wrote {md_path} and {json_path}")
    return card
