"""``kd-plugin export CHECKPOINT --format onnx|safetensors [--int8 --calib-data DATA] [--data DATA] [-o DIR]``."""
import argparse
import os

import torch

from ..checkpoint import load_model, normalization_line
from ..data import ImageSet, add_dataset_arg, load_split
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir, require_file, write_json
from ..util.normalization import add_normalization_arg
from .formats import check_formats, export_path, write_format
from .identity import model_identity

GENERATED_CHECK_IMAGES = 256


def add_export_args(p):
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (Distiller format, or a plain "
                                                             "state_dict with -a)")
    p.add_argument("--format", dest="formats", required=True, type=lambda text: [f for f in text.split(",") if f],
                   metavar="onnx|safetensors", help="what to write (comma-separated for several)")
    p.add_argument("-a", "--arch", help="architecture (needed for plain state_dicts; checked otherwise)")
    p.add_argument("-o", "--out-dir", default="exports", help="where the files go (default exports/)")
    p.add_argument("--int8", action="store_true", help="also write an int8 ONNX file (ONNX Runtime static "
                                                       "quantization, calibrated on --calib-data's training split)")
    p.add_argument("--calib-data", help="CIFAR-10 python batches whose training split calibrates --int8")
    p.add_argument("--calib-images", type=int, default=512, help="training images used for calibration")
    p.add_argument("--data", help="verify on this dataset's test split (default: generated random images)")
    p.add_argument("--verify-images", type=int, default=1000, help="test images used to verify (with --data)")
    add_normalization_arg(p, "the network expects, written into the files")
    add_dataset_arg(p)


def _formats(args):
    formats = list(dict.fromkeys(args.formats))
    for fmt in formats:
        if fmt not in ("onnx", "safetensors"):
            raise KDPluginError(f"--format {fmt}: choose onnx or safetensors (--int8 adds the int8 ONNX file)")
    if args.int8:
        if "onnx" not in formats:
            raise KDPluginError("--int8 quantizes the ONNX file: add --format onnx")
        formats.append("onnx-int8")
    if args.calib_images < 1 or args.verify_images < 1:
        raise KDPluginError("--calib-images and --verify-images must be >= 1")
    return check_formats(formats, bool(args.calib_data))


def _check_set(args):
    """(images, labelled?): real test images with --data, else generated ones (logit agreement only)."""
    if args.data:
        test = load_split(args.data, "test", args.dataset)
        return test.subset(slice(0, args.verify_images)), True
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (GENERATED_CHECK_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.zeros(GENERATED_CHECK_IMAGES, dtype=torch.int64), source="generated"), False


def cmd_export(args: argparse.Namespace) -> int:
    formats = _formats(args)
    require_file(args.checkpoint, "checkpoint file")
    calibration = load_split(args.calib_data, "train", args.dataset) if "onnx-int8" in formats else None
    check_set, labelled = _check_set(args)
    ensure_writable_dir(args.out_dir)
    model, checkpoint = load_model(args.checkpoint, args.arch, args.normalization,
                                   classes=check_set.classes if labelled else None)
    print(normalization_line(model, checkpoint.normalization_note))
    arch = model.arch
    identity = model_identity(model, arch)
    stem = os.path.basename(args.checkpoint).split(".")[0]
    written = []
    for fmt in formats:
        entry = write_format(fmt, model, identity, args.out_dir, stem, check_set, calibration, args.calib_images,
                             labelled)
        written.append(entry)
        check = entry["check"]
        accuracy = (f"; top-1 {check['top1']:.2f}% (PyTorch {check['pytorch_top1']:.2f}%)" if "top1" in check else "")
        exact = " (bit-exact)" if check.get("bit_exact") else ""
        print(f"{fmt}: {entry['file']} ({entry['size_mib']:.2f} MiB); {check['runtime']} vs PyTorch on "
              f"{check['images']} {'test' if labelled else 'generated'} images: max |delta logit| "
              f"{check['max_abs_logit_delta']:.3g}{exact}, top-1 agreement {check['top1_agreement']:.2f}%{accuracy}")
    info = {**identity, "checkpoint": os.path.abspath(args.checkpoint),
            "checkpoint_epoch": getattr(checkpoint, "epoch", None),
            "calibration": {"data": args.calib_data, "images": min(args.calib_images, len(calibration))}
            if calibration is not None else None,
            "files": written}
    path = write_json(export_path(args.out_dir, stem, "onnx")[:-len(".onnx")] + ".json", info)
    print(f"wrote {path}")
    return 0
