"""Numbers about an exported file: agreement with PyTorch, top-1 on a split, latency in ONNX Runtime (CPU).

Latencies follow reporting.evaluation's definitions: batched = wall time of the whole split at batch 1024 /
images, batch-1 = median and p90 of single-image runs.
"""
import os
import time

import torch

from ..data import TensorLoader
from ..util.normalization import Normalization, normalization_of
from ..util.timing import median_p90
from .onnx_files import run, session


def inputs_and_labels(image_set, normalization: Normalization, batch_size=1024):
    """IMAGE_SET's batches normalized as the exported network expects (its own normalization)."""
    loader = TensorLoader(image_set, batch_size, "n", normalization=normalization)
    for batch in loader.epoch(0):
        yield batch.inputs, batch.labels


@torch.no_grad()
def torch_logits(model, image_set):
    model = model.to("cpu").eval()
    return torch.cat([model(x) for x, _ in inputs_and_labels(image_set, normalization_of(model))])


def onnx_logits(sess, image_set, normalization: Normalization):
    return torch.cat([run(sess, x) for x, _ in inputs_and_labels(image_set, normalization)])


def agreement(reference, logits):
    """(max |Δ logit|, top-1 agreement in %) of two logit tensors of the same images."""
    delta = (reference - logits).abs().max().item()
    same = (reference.argmax(1) == logits.argmax(1)).float().mean().item() * 100
    return delta, same


def top1(logits, image_set):
    return (logits.argmax(1) == image_set.labels).float().mean().item() * 100


def onnx_row(path, fmt, test_set, normalization: Normalization, repeats=50):
    """The card row of an ONNX file: size on disk, test top-1, batched and batch-1 latency (ORT CPU)."""
    sess = session(path)
    onnx_logits(sess, test_set.subset(slice(0, 8)), normalization)  # warm-up
    began = time.perf_counter()
    logits = onnx_logits(sess, test_set, normalization)
    batched = (time.perf_counter() - began) / max(len(test_set), 1)
    sample = next(inputs_and_labels(test_set.subset(slice(0, 1)), normalization, 1))[0]
    median, p90 = median_p90(lambda: run(sess, sample), repeats)
    return {"format": fmt, "runtime": f"onnxruntime CPU ({sess.get_session_options().intra_op_num_threads} threads)",
            "file": path, "size_mib": os.path.getsize(path) / 2**20, "test_top1": top1(logits, test_set),
            "batched_s_per_image": batched, "batch1_median_s": median, "batch1_p90_s": p90}
