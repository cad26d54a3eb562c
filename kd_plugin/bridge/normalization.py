"""Inside Distiller, every network sees the images normalized the way it was trained.

Distiller's CIFAR-10 loader normalizes every batch with mean = std = 0.5 (docs/DESIGN.md §7), whatever network it
feeds. Each network kd-plugin lets Distiller build gets an input adapter (``kd_plugin.data.renormalize``):
a forward pre-hook that recovers the batch's 8-bit pixels and normalizes them again as the network expects
(``model.normalization``), bitwise the inputs kd-plugin's own loader would give it. Which normalization a
network expects follows its weights:

* created by Distiller (``--arch``, ``--kd-teacher``): its zoo default (``kd_plugin.models.default_cfg``);
* loaded from a checkpoint (``--exp-load-weights-from``, ``--resume-from``, ``--kd-resume``): the file's
  record, else the documented assumption for its kind (``kd_plugin.checkpoint.files.ASSUMED_NORMALIZATION``:
  a Distiller-written file without a record was trained on Distiller's 0.5/0.5, so its adapter is the identity);
* saved by Distiller (``save_checkpoint``): the network's normalization is written as the top-level key
  ``normalization`` (Distiller's loaders ignore unknown keys), so kd-plugin reads it back exactly.
"""
import sys

from ..checkpoint import load_checkpoint_file, normalization_line
from ..data import install_input_adapter
from ..models import create_model
from ..util.normalization import DISTILLER, normalization_of, set_normalization


def create_for_distiller(arch, dataset):
    """The factory registered with ``distiller.models.register_user_model``."""
    model = install_input_adapter(create_model(arch, dataset), DISTILLER)
    print(f"kd-plugin: {normalization_line(model, 'its default')} until a checkpoint says otherwise; Distiller's "
          f"0.5/0.5 input is converted to it", file=sys.stderr)
    return model


def adapt_to_checkpoint(model, path):
    """Give MODEL (just loaded from PATH by Distiller) the normalization its weights were trained with."""
    used, how = load_checkpoint_file(path).normalization()
    set_normalization(model, used)
    install_input_adapter(model, DISTILLER)
    print(f"kd-plugin: {path}: {normalization_line(model, how)}; Distiller's 0.5/0.5 input is converted to it",
          file=sys.stderr)
    return model


def wrap_load_checkpoint(original):
    def load_checkpoint(model, chkpt_file, *args, **kwargs):
        result = original(model, chkpt_file, *args, **kwargs)
        adapt_to_checkpoint(result[0], chkpt_file)
        return result

    load_checkpoint.__wrapped__ = original
    return load_checkpoint


class SavedNormalization:
    """``save_checkpoint`` wrapper + ``torch.save`` replacement: the network being saved has its normalization
    written into the checkpoint dictionary."""

    def __init__(self, torch_save):
        self.torch_save = torch_save
        self.model = None

    def wrap_save_checkpoint(self, original):
        def save_checkpoint(epoch, arch, model, *args, **kwargs):
            self.model = model
            try:
                return original(epoch, arch, model, *args, **kwargs)
            finally:
                self.model = None

        save_checkpoint.__wrapped__ = original
        return save_checkpoint

    def save(self, obj, f, *args, **kwargs):
        if self.model is not None and isinstance(obj, dict) and "state_dict" in obj:
            obj = {**obj, "normalization": normalization_of(self.model).record()}
        return self.torch_save(obj, f, *args, **kwargs)
