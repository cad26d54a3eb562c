"""What Distiller's SummaryGraph (``--summary png``, ``--quantize-eval``, ``--thinnify``, BN folding) needs from
current PyTorch: three tracing APIs it calls were removed or changed.

* ``torch.onnx.set_training(model, mode)``: a context manager that set train/eval mode around the ONNX
  trace and restored the previous mode.
* ``torch.jit.get_trace_graph(model, args, _force_outplace)``: returned a trace object with ``graph()``;
  today's ``torch.jit._get_trace_graph`` returns the graph itself.
* ``torch.onnx._optimize_trace(trace, export_type)``: ran the ONNX passes over the trace's graph in place;
  today's pass is ``torch.onnx.utils._optimize_graph`` (TorchScript-based ONNX export).
* value types print as ``Float(1, 64, 8, 8, strides=[...], device=cpu)``, so SummaryGraph's parse of the shape
  from that text fails and every shape becomes ``(0,)``; the shape is read from the type instead.
* ``node[name]``: graph nodes were subscriptable by attribute name (torch.onnx installed ``__getitem__`` on
  ``torch._C.Node``); today one calls the accessor of the attribute's kind.
"""
import contextlib

import torch


@contextlib.contextmanager
def set_training(model, mode):
    old_mode = model.training
    if old_mode != mode:
        model.train(mode)
    try:
        yield
    finally:
        if old_mode != mode:
            model.train(old_mode)


class Trace:
    def __init__(self, graph):
        self._graph = graph

    def graph(self):
        return self._graph

    def set_graph(self, graph):
        self._graph = graph


def get_trace_graph(model, args=(), kwargs=None, _force_outplace=False, **extra):
    graph, outputs = torch.jit._get_trace_graph(model, args, kwargs, _force_outplace=_force_outplace, **extra)
    return Trace(graph), outputs


def optimize_trace(trace, operator_export_type):
    from torch.onnx import utils

    trace.set_graph(utils._optimize_graph(trace.graph(), operator_export_type, params_dict={}))


def node_attribute(node, name):
    """``node[name]`` as torch < 1.13 had it: the accessor named by the attribute's kind (i, f, s, t, is, ...)."""
    return getattr(node, node.kindOf(name))(name)


def tensor_desc(graph, value):
    """SummaryGraph's ``__tensor_desc``: {id, shape} of a graph value, the shape from its tensor type."""
    try:
        shape = tuple(int(d) for d in value.type().sizes())
    except (RuntimeError, AttributeError, TypeError):
        shape = (0,)  # no complete tensor type: what Distiller records when the size is not specified
    return {"id": value.debugName(), "shape": shape}


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode for a summary pass: a batch of one cannot go through BatchNorm in training mode."""
    with set_training(model, False):
        yield model


def in_eval_mode(function):
    """FUNCTION(model, ...) run with MODEL in eval mode (Distiller's summaries run in whatever mode it is in)."""
    def wrapped(model, *args, **kwargs):
        with eval_mode(model):
            return function(model, *args, **kwargs)

    wrapped.__wrapped__ = function
    return wrapped
