"""PNG figures: training curves from training.csv, accuracy against temperature per alpha, per-class bars.

matplotlib is optional (``pip install kd-plugin[plots]``) and imported only when a figure is drawn; without
it every function raises PlotsUnavailable, which callers that make plots as a by-product turn into a warning.
"""
import csv
import math
import os

from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir


class PlotsUnavailable(KDPluginError):
    pass


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotsUnavailable("matplotlib is not installed (pip install matplotlib); no PNG written") from None
    return plt


def _save(fig, path):
    plt = _pyplot()
    tmp = f"{path}.tmp.png"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except OSError as err:
        raise KDPluginError(f"{path}: cannot write the figure ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return path


def read_training_csv(path):
    """Rows of a training.csv as {column: float or None}; a clear error for a missing or empty log."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise KDPluginError(f"{path}: cannot read training log ({err.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise KDPluginError(f"{path}: not a training log ({err})") from None
    if not rows or "epoch" not in rows[0]:
        raise KDPluginError(f"{path}: not a training log (no epoch rows)")
    rows = [{k: _number(v) for k, v in row.items() if isinstance(k, str)} for row in rows]
    bad = next((index for index, row in enumerate(rows, 2) if row["epoch"] is None), None)
    if bad is not None:
        raise KDPluginError(f"{path}: not a training log (line {bad}: 'epoch' is not a number)")
    return rows


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _series(rows, column):
    points = [(row["epoch"], row.get(column)) for row in rows if row.get(column) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def training_curves(csv_path, png_path, title=None):
    """Three panels per epoch: every loss column, top-1 (train/valid), learning rate."""
    rows = read_training_csv(csv_path)
    columns = list(rows[0])
    loss_columns = [c for c in columns if "Loss" in c]
    top1_columns = [c for c in columns if c.endswith("top1")]
    lr_columns = [c for c in columns if c == "lr" or c.endswith(" lr")]  # "{peer} lr" in a mutual-learning run
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    marker = "o" if len(rows) < 20 else None
    for ax, names, label in ((axes[0], loss_columns, "loss"), (axes[1], top1_columns, "top-1 (%)"),
                             (axes[2], lr_columns, "learning rate")):
        for name in names:
            xs, ys = _series(rows, name)
            if xs:
                ax.plot(xs, ys, marker=marker, label=name)
        ax.set_xlabel("epoch")
        if len(rows) <= 12:  # few epochs: one tick each, not fractional ones
            ax.set_xticks([row["epoch"] for row in rows])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    if any(v and v > 0 for c in lr_columns for v in _series(rows, c)[1]):
        axes[2].set_yscale("log")
    fig.suptitle(title or os.path.basename(os.path.dirname(os.path.abspath(csv_path))))
    return _save(fig, png_path)


def accuracy_vs_temperature(points, png_path, baseline=None, title=None):
    """``points``: dicts with alpha, temperature, mean, std. One line per alpha; the baseline as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for alpha in sorted({p["alpha"] for p in points}):
        mine = sorted((p for p in points if p["alpha"] == alpha), key=lambda p: p["temperature"])
        ax.errorbar([p["temperature"] for p in mine], [p["mean"] for p in mine],
                    yerr=[p.get("std") or 0.0 for p in mine], marker="o", capsize=3, label=f"alpha = {alpha:g}")
    if baseline is not None and math.isfinite(baseline):
        ax.axhline(baseline, color="grey", linestyle="--", label=f"student baseline ({baseline:.2f})")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("student test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "KD: accuracy against temperature")
    return _save(fig, png_path)


def per_class_bars(per_class_by_model, png_path, title="Per-class test accuracy"):
    """``per_class_by_model``: {model label: {class name: accuracy %}}; grouped bars, one group per class."""
    plt = _pyplot()
    labels = list(per_class_by_model)
    classes = list(next(iter(per_class_by_model.values())))
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(classes) + 0.4 * len(labels)), 4.5))
    for i, label in enumerate(labels):
        xs = [c + (i - (len(labels) - 1) / 2) * width for c in range(len(classes))]
        ax.bar(xs, [per_class_by_model[label].get(name, 0.0) for name in classes], width, label=label)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=30)
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if len(labels) > 1:
        ax.legend(fontsize=8, ncol=min(len(labels), 3))
    ax.set_title(title)
    return _save(fig, png_path)


def plot_or_warn(draw, *args, warn=print, **kwargs):
    """Draw a figure as a by-product: on failure (no matplotlib, bad log) warn and return None."""
    try:
        return draw(*args, **kwargs)
    except KDPluginError as err:
        warn(f"warning: {err}")
        return None


def add_plot_args(p):
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or their training.csv files)")
    p.add_argument("-o", "--out-dir", help="where the PNGs go (default: next to each training.csv)")


def cmd_plot(args):
    logs = []
    for run in args.runs:
        path = run if os.path.isfile(run) else os.path.join(run, "training.csv")
        if not os.path.isfile(path):
            raise KDPluginError(f"{run}: no training.csv there (expected a run directory or a training.csv)")
        logs.append(path)
    if args.out_dir:
        ensure_writable_dir(args.out_dir)
    _pyplot()
    for path in logs:
        run_name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        png = os.path.join(args.out_dir, f"{run_name}_curves.png") if args.out_dir \
            else os.path.join(os.path.dirname(path), "training_curves.png")
        print(f"wrote {training_curves(path, png, title=run_name)}")
    return 0
