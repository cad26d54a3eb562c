"""Writing a network in each shipped format, verified against PyTorch on the same images.

Formats: ``onnx`` (fp32), ``onnx-int8`` (the fp32 file quantized by ONNX Runtime), ``safetensors`` (weights
for ``create_model(arch, weights=PATH)``). Every file is checked after writing: ONNX Runtime's logits against
PyTorch's (max |Δ logit|, top-1 agreement), the safetensors file by loading it back into a fresh network.
"""
import os

import torch

from ..data import ImageSet
from ..models import create_model
from ..models.weights_file import save_safetensors
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of
from ..util.optional import require
from . import measure
from .identity import as_strings
from .int8 import quantize_int8
from .onnx_files import export_onnx, session

FORMATS = ("onnx", "onnx-int8", "safetensors")
SUFFIX = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "safetensors": ".safetensors"}
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "onnx-int8": ("onnx", "onnxscript", "onnxruntime"),
         "safetensors": ("safetensors",)}


def check_formats(formats, calibration_given):
    for fmt in formats:
        if fmt not in FORMATS:
            raise KDPluginError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if "onnx-int8" in formats and not calibration_given:
        raise KDPluginError("int8 quantization needs calibration images: pass --calib-data DATA (its training split)")
    for fmt in formats:
        for module in NEEDS[fmt]:
            require(module, f"export to {fmt}")
    return list(formats)


def export_path(out_dir, stem, fmt):
    return os.path.join(out_dir, stem + SUFFIX[fmt])


def write_format(fmt: str, model: torch.nn.Module, identity: dict, out_dir: str, stem: str, check_set: ImageSet,
                 calibration_set: ImageSet | None = None, calibration_images: int = 512, labelled: bool = True) -> dict:
    """Write one format and verify it on CHECK_SET (with top-1 when its labels are real); returns
    {format, file, size_mib, check: {...}}."""
    path = export_path(out_dir, stem, fmt)
    reference = measure.torch_logits(model, check_set)
    if fmt == "safetensors":
        save_safetensors(model, path, as_strings(identity))
        reloaded = create_model(identity["arch"], weights=path, classes=identity["classes"]).eval()
        if not normalization_of(reloaded).same_as(normalization_of(model)):
            raise KDPluginError(f"{path}: the file records another input normalization than the network's")
        logits = measure.torch_logits(reloaded, check_set)
        check = {"bit_exact": bool(torch.equal(logits, reference)), "runtime": "torch"}
    else:
        fp32 = export_path(out_dir, stem, "onnx")
        if fmt == "onnx" or not os.path.isfile(fp32):
            export_onnx(model, fp32, identity)
        if fmt == "onnx-int8":
            quantize_int8(fp32, path, calibration_set, normalization_of(model), calibration_images)
        logits = measure.onnx_logits(session(path), check_set, normalization_of(model))
        check = {"runtime": "onnxruntime"}
    delta, same = measure.agreement(reference, logits)
    check.update(images=len(check_set), max_abs_logit_delta=delta, top1_agreement=same)
    if labelled:
        check.update(pytorch_top1=measure.top1(reference, check_set), top1=measure.top1(logits, check_set))
    return {"format": fmt, "file": path, "size_mib": os.path.getsize(path) / 2**20, "check": check}


def format_rows(model, arch_identity, formats, out_dir, stem, test_set, calibration_set=None, repeats=50):
    """Card rows for ONNX formats: each file written (fp32 first), then measured on TEST_SET with ONNX Runtime."""
    rows = []
    for fmt in formats:
        if fmt == "safetensors":
            continue
        write_format(fmt, model, arch_identity, out_dir, stem, test_set.subset(slice(0, 64)), calibration_set)
        path = export_path(out_dir, stem, fmt)
        rows.append(measure.onnx_row(path, fmt, test_set, normalization_of(model), repeats))
    return rows
