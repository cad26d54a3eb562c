"""Distiller's ``--summary`` reports: model, modules, compute (MACs from torch's flop counter), sparsity."""
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .tables import text_table

SUMMARY_CHOICES = ("model", "modules", "compute", "sparsity")


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def weights_mib(model):
    """The original's "memory": the parameters' size in MiB (fp32: params x 4 B / 2^20)."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def total_macs(model, input_shape=(1, 3, 32, 32)):
    return compute_table(model, input_shape)[1]


def compute_table(model, input_shape=(1, 3, 32, 32)):
    """Rows per Conv2d/Linear (Distiller's columns) and the total MACs, counted by FlopCounterMode."""
    shapes, device = {}, next(model.parameters()).device
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: shapes.__setitem__(name, (i[0].shape, o.shape)))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for name, module in model.named_modules():
        if name not in shapes:
            continue
        ifm, ofm = shapes[name]
        macs = sum(counts.get(f"{root}.{name}", {}).values()) // 2
        attrs = f"k={tuple(module.kernel_size)}, s={tuple(module.stride)}, g={module.groups}" \
            if isinstance(module, nn.Conv2d) else ""
        rows.append({"Name": name, "Type": type(module).__name__, "Attrs": attrs, "IFM": tuple(ifm[1:]),
                     "IFM volume": ifm[1:].numel(), "OFM": tuple(ofm[1:]), "OFM volume": ofm[1:].numel(),
                     "Weights volume": module.weight.numel(), "MACs": macs})
    return rows, counter.get_total_flops() // 2


def sparsity_table(model):
    rows = []
    totals = {"NNZ (dense)": 0, "NNZ (sparse)": 0}
    for name, param in model.named_parameters():
        if param.dim() not in (2, 4):
            continue
        w = param.detach()
        nnz = int(torch.count_nonzero(w))
        dims = (1,) if w.dim() == 2 else (0, 2, 3)
        rows.append({
            "Name": name, "Shape": tuple(w.shape), "NNZ (dense)": w.numel(), "NNZ (sparse)": nnz,
            "Cols (%)": _zero_pct(w.abs().sum(dim=0) if w.dim() == 2 else w.abs().sum(dim=(0, 2, 3))),
            "Rows (%)": _zero_pct(w.abs().sum(dim=1) if w.dim() == 2 else w.abs().sum(dim=(1, 2, 3))),
            "Ch (%)": _zero_pct(w.abs().sum(dim=dims)) if w.dim() == 4 else 0.0,
            "2D (%)": _zero_pct(w.abs().sum(dim=(2, 3)).flatten()) if w.dim() == 4 else _zero_pct(w.abs().flatten()),
            "3D (%)": _zero_pct(w.abs().sum(dim=(1, 2, 3))) if w.dim() == 4 else 0.0,
            "Fine (%)": 100.0 * (1 - nnz / w.numel()),
            "Std": float(w.std()), "Mean": float(w.mean()), "Abs-Mean": float(w.abs().mean())})
        totals["NNZ (dense)"] += w.numel()
        totals["NNZ (sparse)"] += nnz
    rows.append({"Name": "Total sparsity:",
                 "NNZ (dense)": totals["NNZ (dense)"], "NNZ (sparse)": totals["NNZ (sparse)"],
                 "Fine (%)": 100.0 * (1 - totals["NNZ (sparse)"] / max(totals["NNZ (dense)"], 1))})
    return rows


def _zero_pct(values):
    return 100.0 * float((values == 0).sum()) / max(values.numel(), 1)


def render_summary(model, kind):
    if kind == "model":
        return str(model)
    if kind == "modules":
        return "\n".join(f"{name or '(root)'}: {type(m).__name__}" for name, m in model.named_modules())
    if kind == "compute":
        rows, total = compute_table(model)
        return f"{text_table(rows)}\nTotal MACs: {total:,}"
    if kind == "sparsity":
        return text_table(sparsity_table(model))
    raise ValueError(kind)
