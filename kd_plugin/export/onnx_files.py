"""ONNX export through ``torch.onnx.export`` (torch 2.x: the torch.export-based exporter, ``dynamo=True``) with a
dynamic batch dimension, the model's identity in the file's metadata_props, and ONNX Runtime sessions."""
import contextlib
import io

import torch

from ..util.errors import KDPluginError
from ..util.fileio import atomic_write, require_file
from ..util.optional import require
from .identity import INPUT_SIZE, as_strings

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 18


def export_onnx(model: torch.nn.Module, path: str, identity: dict) -> str:
    """Write MODEL (eval mode, CPU, fp32) to PATH as one self-contained .onnx file; returns PATH."""
    require("onnxscript", "ONNX export")
    onnx = require("onnx", "ONNX export")
    model = model.to("cpu").eval()
    sample = torch.zeros(2, *INPUT_SIZE)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        try:
            program = torch.onnx.export(model, (sample,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: batch},), dynamo=True, opset_version=OPSET)
        except Exception as err:  # the exporter raises many types; the user needs the first line
            raise KDPluginError(f"ONNX export of {identity['arch']} failed: {str(err).splitlines()[0]}") from None
    proto = program.model_proto
    for key, value in as_strings(identity).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"kd-plugin {identity['arch']}: input {INPUT_NAME} {identity['input']}; output {OUTPUT_NAME}"
    _save_proto(onnx, proto, path)
    return path


def _save_proto(onnx, proto, path):
    atomic_write(path, lambda fh: fh.write(proto.SerializeToString()))
    onnx.checker.check_model(path)


def metadata(path):
    onnx = require("onnx", "reading ONNX files")
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def session(path, threads=None):
    """An ONNX Runtime CPU session using as many threads as torch does here (comparable latencies)."""
    ort = require("onnxruntime", "ONNX Runtime inference")
    require_file(path, "ONNX file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(sess, inputs):
    """Logits (torch tensor) of a float32 NCHW batch."""
    return torch.from_numpy(sess.run([OUTPUT_NAME], {INPUT_NAME: inputs.detach().cpu().contiguous().numpy()})[0])
