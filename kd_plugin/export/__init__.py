"""Shipping a trained network: ONNX (fp32, and int8 by ONNX Runtime's static quantization), safetensors, and
the numbers that say what the shipped file does (agreement with PyTorch, accuracy, latency in ONNX Runtime).

onnx, onnxruntime, onnxscript and safetensors are optional (``pip install 'kd-plugin[export]'``) and are
imported only when used.
"""
