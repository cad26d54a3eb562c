"""int8 post-training static quantization of an exported ONNX file with ONNX Runtime's quantization tools.

Why ONNX Runtime rather than torchao's PT2E flow: the target is CPU deployment without torch at inference
time; ORT's ``quantize_static`` works on the very file we ship (QDQ format, per-channel int8 weights, int8
activations calibrated on training images) and its CPU kernels run the result directly, while PT2E's
output still needs torch (or another export step) to run.
"""
import os
import tempfile

import numpy as np

from ..data import TensorLoader
from ..util.errors import KDPluginError
from ..util.fileio import atomic_write
from ..util.normalization import Normalization
from ..util.optional import require
from .onnx_files import INPUT_NAME


def calibration_reader(image_set, normalization: Normalization, images=512, batch_size=64, seed=0):
    """An ORT CalibrationDataReader over the first IMAGES of a (shuffled) training split, normalized as the
    network expects (NORMALIZATION), no augmentation."""
    quantization = require("onnxruntime.quantization", "int8 quantization")
    if len(image_set) == 0:
        raise KDPluginError("no calibration images")
    loader = TensorLoader(image_set, batch_size, "n", shuffle=True, seed=seed, normalization=normalization)
    limit = min(images, len(image_set))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = self._batches()

        @staticmethod
        def _batches():
            seen = 0
            for batch in loader.epoch(0):
                if seen >= limit:
                    return
                yield {INPUT_NAME: batch.inputs[:limit - seen].numpy().astype(np.float32)}
                seen += len(batch.inputs)

        def get_next(self):
            return next(self.batches, None)

        def rewind(self):
            self.batches = self._batches()

    return Reader()


def quantize_int8(fp32_path, int8_path, calibration_set, normalization: Normalization, images=512):
    """QDQ int8 (per-channel weights, int8 activations, MinMax calibration) of FP32_PATH into INT8_PATH."""
    quantization = require("onnxruntime.quantization", "int8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(int8_path))) as work:
        prepared, quantized = os.path.join(work, "prepared.onnx"), os.path.join(work, "int8.onnx")
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        quantization.quantize_static(prepared, quantized, calibration_reader(calibration_set, normalization, images),
                                     quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                     activation_type=quantization.QuantType.QInt8,
                                     weight_type=quantization.QuantType.QInt8,
                                     calibrate_method=quantization.CalibrationMethod.MinMax)
        _copy_metadata(fp32_path, quantized, int8_path)
    return int8_path


def _copy_metadata(source, quantized, target):
    """The int8 file keeps the fp32 file's metadata_props (quantization drops them), plus its precision."""
    onnx = require("onnx", "int8 quantization")
    props = {p.key: p.value for p in onnx.load(source).metadata_props}
    proto = onnx.load(quantized)
    del proto.metadata_props[:]
    for key, value in {**props, "precision": "int8 (ONNX Runtime static quantization, QDQ, per-channel)"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write(target, lambda fh: fh.write(proto.SerializeToString()))
