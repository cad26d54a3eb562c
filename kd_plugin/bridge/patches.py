"""The launcher's fixes for running IntelLabs Distiller 0.4 on current PyTorch, torchvision and pandas.

Each fix replaces one module-level name inside one Distiller module with a view of the module it named
(every other attribute passes through); ``distiller_runtime_patches`` applies them on entry and restores
the originals on exit, so they are active only while ``kd_plugin.distiller_launcher`` runs a script.
Distiller's source files are never modified. A fix that the installed Distiller does not need is harmless:

``checkpoint``
    ``distiller.apputils.checkpoint`` calls ``torch.load`` with torch's default ``weights_only=True`` (torch
    2.6+), which refuses Distiller's own checkpoints (their ``optimizer_type`` is a pickled class), and then
    calls ``checkpoint['optimizer_type'](params, lr=1)``, which kd-plugin writes as a name. Its ``torch.load``
    becomes kd-plugin's reader (weights only, an allow-list of optimizer classes, never full pickle, zip
    CRCs checked) with ``optimizer_type`` turned back into the allow-listed class.
``cifar10``
    ``distiller.apputils.data_loaders`` calls ``torchvision.datasets.CIFAR10(..., download=True)``, which
    downloads again whenever any file's md5 differs from the official release (a subset, a re-pickled copy)
    and fails offline. When ``DATA/cifar-10-batches-py`` exists, its ``datasets.CIFAR10`` reads that folder
    with kd-plugin's reader (no pickled code runs; str or bytes keys); otherwise torchvision's class runs.
``normalization``
    Distiller's loader normalizes every network's input with mean = std = 0.5; ``load_checkpoint`` and
    ``save_checkpoint`` are wrapped so that a loaded network expects the normalization its checkpoint was
    trained with (the input adapter converts) and a saved one records its own (``bridge.normalization``).
``schedule``
    ``distiller.file_config`` reads a ``--compress`` schedule with kd-plugin's safe reader: relative paths
    (``teacher_checkpoint``) are resolved against the YAML file's folder, pruner and regularizer weight names
    must match the model's parameters, and ``--kd-resume`` without ``--kd-teacher`` overrides the KD
    extension's ``teacher_checkpoint``. Distiller's own parser then builds the schedule.
``summary_graph``
    ``torch.onnx.set_training``, ``torch.jit.get_trace_graph`` and ``torch.onnx._optimize_trace``, which
    SummaryGraph calls, as current torch provides them (``bridge.summary_graph``).
``summary_eval``
    ``--summary compute`` runs one image through the network in eval mode (a batch of one cannot pass
    BatchNorm in training mode).
``pandas_precision``
    ``distiller.model_summaries`` calls ``pd.set_option('precision', n)``; pandas 1.4+ only knows
    ``display.precision`` and raises "Pattern matched multiple keys" at the end of the first epoch. Applied
    only when the installed pandas lacks the short name.
"""
import contextlib
import importlib
import os
from functools import partial

import pandas
import torch
import torchvision

from ..checkpoint import optimizer_class, read_checkpoint_file
from ..data.cifar10 import BATCHES_DIR, load_cifar10_split
from .normalization import SavedNormalization, wrap_load_checkpoint
from .runtime import file_config
from .summary_graph import get_trace_graph, in_eval_mode, node_attribute, optimize_trace, set_training, tensor_desc


class ModuleView:
    """MODULE with some attributes replaced; everything else is looked up on MODULE."""

    def __init__(self, module, **replaced):
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __repr__(self):
        return f"<view of {self._module!r} replacing {', '.join(k for k in vars(self) if k != '_module')}>"


def load_checkpoint_for_distiller(f, map_location=None, **kwargs):
    """``torch.load`` as Distiller's checkpoint module calls it; tensors always land on the CPU, as with the
    ``map_location`` Distiller passes."""
    content = read_checkpoint_file(os.fspath(f))
    if isinstance(content, dict) and content.get("optimizer_type") is not None:
        content["optimizer_type"] = optimizer_class(content["optimizer_type"])
    return content


class LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 (same items, transforms and attributes) filled by kd-plugin's safe reader."""

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        torchvision.datasets.VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        split = load_cifar10_split(root, "train" if train else "test")
        self.train = train
        self.data = split.images.permute(0, 2, 3, 1).contiguous().numpy()  # N x 32 x 32 x 3, like torchvision
        self.targets = split.labels.tolist()
        self.classes = list(split.classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def cifar10_for_distiller(root, train=True, transform=None, target_transform=None, download=False):
    if os.path.isdir(os.path.join(os.fspath(root), BATCHES_DIR)):
        return LocalCIFAR10(root, train, transform, target_transform)
    return torchvision.datasets.CIFAR10(root, train=train, transform=transform, target_transform=target_transform,
                                        download=download)


def pandas_knows_precision():
    try:
        pandas.get_option("precision")
        return True
    except (KeyError, AttributeError):  # pandas.errors.OptionError derives from both
        return False


def set_option_for_distiller(*args, **kwargs):
    """``pandas.set_option`` with the pre-1.4 key 'precision' read as 'display.precision'."""
    args = tuple("display.precision" if i % 2 == 0 and arg == "precision" else arg for i, arg in enumerate(args))
    return pandas.set_option(*args, **kwargs)


def schedule_overrides(script_args):
    """Flag values the launcher applies to kd-plugin's YAML extensions under Distiller's script: its
    ``--kd-resume`` names the KD extension's teacher checkpoint (Distiller itself ignores --kd-resume
    without --kd-teacher)."""
    values, flags = {}, ("--kd-resume", "--kd-teacher")
    for i, arg in enumerate(script_args or ()):
        for flag in flags:
            if arg == flag and i + 1 < len(script_args):
                values[flag] = script_args[i + 1]
            elif arg.startswith(flag + "="):
                values[flag] = arg.split("=", 1)[1]
    if "--kd-resume" in values and "--kd-teacher" not in values:
        return {"extensions": {"teacher_checkpoint": values["--kd-resume"]}}
    return {}


def _fixes(script_args=None):
    """(name, module, attribute, replacement) for every fix the installed Distiller and libraries need."""
    # By module path: distiller.apputils re-exports names over its submodules' attribute names.
    checkpoint = importlib.import_module("distiller.apputils.checkpoint")
    apputils = importlib.import_module("distiller.apputils")
    data_loaders = importlib.import_module("distiller.apputils.data_loaders")
    summary_graph = importlib.import_module("distiller.summary_graph")
    summaries = importlib.import_module("distiller.model_summaries")
    saved = SavedNormalization(torch.save)
    fixes = [("checkpoint", checkpoint, "torch",
              ModuleView(torch, load=load_checkpoint_for_distiller, save=saved.save)),
             ("cifar10", data_loaders, "datasets", ModuleView(data_loaders.datasets, CIFAR10=cifar10_for_distiller))]
    # load_lean_checkpoint calls the checkpoint module's load_checkpoint; scripts call apputils' re-exports.
    for module in (checkpoint, apputils):
        fixes += [("normalization", module, "load_checkpoint", wrap_load_checkpoint(checkpoint.load_checkpoint)),
                  ("normalization", module, "save_checkpoint", saved.wrap_save_checkpoint(checkpoint.save_checkpoint))]
    reader = partial(file_config, overrides=schedule_overrides(script_args))
    fixes += [("schedule", importlib.import_module("distiller"), "file_config", reader),
              ("schedule", importlib.import_module("distiller.config"), "file_config", reader)]
    fixes += [("summary_graph", summary_graph, "torch", ModuleView(torch, onnx=ModuleView(
                  torch.onnx, set_training=set_training, _optimize_trace=optimize_trace))),
              ("summary_graph", summary_graph, "jit", ModuleView(torch.jit, get_trace_graph=get_trace_graph)),
              ("summary_graph", torch._C.Node, "__getitem__", node_attribute),
              ("summary_graph", summary_graph.SummaryGraph, "_SummaryGraph__tensor_desc", tensor_desc),
              ("summary_eval", summaries, "model_performance_summary",
               in_eval_mode(summaries.model_performance_summary))]
    if not pandas_knows_precision():
        fixes.append(("pandas_precision", importlib.import_module("distiller.model_summaries"), "pd",
                      ModuleView(pandas, set_option=set_option_for_distiller)))
    return fixes


_MISSING = object()


@contextlib.contextmanager
def distiller_runtime_patches(script_args=None):
    """Apply the fixes (SCRIPT_ARGS: the arguments of the script they are for); yields their names; restores
    Distiller's modules on exit."""
    replaced, names = [], []
    try:
        for name, module, attribute, replacement in _fixes(script_args):
            replaced.append((module, attribute, getattr(module, attribute, _MISSING)))
            setattr(module, attribute, replacement)
            if name not in names:
                names.append(name)
        yield names
    finally:
        for module, attribute, original in reversed(replaced):
            if original is _MISSING:
                delattr(module, attribute)
            else:
                setattr(module, attribute, original)
