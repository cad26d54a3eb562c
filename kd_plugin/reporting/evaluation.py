"""Model cards: accuracy (top-1/top-5/per-class), size, MACs and the two latency figures.

Batched latency is the original's definition: wall time of evaluating the whole test split at batch 1024
divided by the number of images. Batch-1 latency is the median (and p90) of single-image forwards.
"""
import os
import statistics
import time

import torch

from ..checkpoint import load_model, normalization_line
from ..data import TensorLoader, load_split
from ..engine.loop import evaluate_loader, per_class_accuracy
from ..models import create_model, resolve_arch
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir, write_json, write_text
from ..util.normalization import normalization_of, parse_normalization, set_normalization
from .summaries import parameter_count, total_macs, weights_mib


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
        "test_images": len(test_set), "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["Loss"],
        "test_per_class": per_class_accuracy(test["confusion"], test_set.classes),
        "latency_batched_s_per_image": latency["batched_s_per_image"],
        "latency_batch1_median_s": latency["batch1_median_s"], "latency_batch1_p90_s": latency["batch1_p90_s"],
    }
    if train_set is not None:
        train = evaluate_loader(model, TensorLoader(train_set, 1024, "n", device=torch.device(device),
                                                    normalization=normalization_of(model)))
        card.update({"train_images": len(train_set), "train_top1": train["top1"]})
    return card


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
    lines += ["", "## Per-class test accuracy (%)", "",
              "| " + " | ".join(card["test_per_class"]) + " |",
              "|" + "---|" * len(card["test_per_class"]),
              "| " + " | ".join(f"{v:.1f}" for v in card["test_per_class"].values()) + " |"]
    if card.get("per_class_png"):
        lines += ["", f"![per-class test accuracy]({card['per_class_png']})"]
    return "\n".join(lines) + "\n"


def write_card(card, out_dir, stem):
    os.makedirs(out_dir, exist_ok=True)
    json_path = write_json(os.path.join(out_dir, f"{stem}.json"), card)
    md_path = write_text(os.path.join(out_dir, f"{stem}.md"), card_markdown(card))
    return json_path, md_path


def evaluate_target(target, data, arch=None, out_dir="reports", device="cpu", repeats=50, train_accuracy=False,
                    normalization=None):
    """The model card of TARGET (a checkpoint file, or a model name for a fresh network) on DATA's test split,
    written to OUT_DIR as JSON and Markdown and printed; returns the card. NORMALIZATION (a name or mean,std)
    overrides the checkpoint's."""
    if repeats < 1:
        raise KDPluginError(f"--repeats must be >= 1, got {repeats}")
    ensure_writable_dir(out_dir)
    test = load_split(data, "test")
    train = load_split(data, "train") if train_accuracy else None
    if os.path.exists(target):
        model, checkpoint = load_model(target, arch, normalization)
        arch, source, how = checkpoint.arch or resolve_arch(arch), target, checkpoint.normalization_note
    else:
        if target.endswith((".pth.tar", ".pt", ".pth", ".tar")):
            raise KDPluginError(f"{target}: checkpoint file not found")
        arch, source = resolve_arch(target), None
        model, how = create_model(arch), f"the default of {arch}"
        if normalization is not None:
            model, how = set_normalization(model, parse_normalization(normalization)), "--normalization"
    print(normalization_line(model, how))
    card = model_card(model, arch, test, device, train, repeats, source)
    json_path, md_path = write_card(card, out_dir, os.path.basename(source or arch).split(".")[0])
    print(f"{arch}: test top-1 {card['test_top1']:.2f}%  top-5 {card['test_top5']:.2f}%  on {card['test_images']} "
          f"images ({card['device']})")
    print(f"parameters {card['parameters']:,}  size {card['size_mib']:.2f} MiB  MACs {card['macs']:,}")
    print(f"latency: batched {card['latency_batched_s_per_image']:.6f} s/image, batch-1 median "
          f"{card['latency_batch1_median_s']:.6f} s, p90 {card['latency_batch1_p90_s']:.6f} s")
    print("per-class: " + ", ".join(f"{k} {v:.1f}" for k, v in card["test_per_class"].items()))
    print(f"wrote {md_path} and {json_path}")
    return card
