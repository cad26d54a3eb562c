"""JointNet training on the ordinary engine (``run_training``), with each branch's test accuracy before and after."""
import os

from ...checkpoint import load_model
from ...data import load_split
from ...engine.distributed import is_main_process
from ...engine.trainer import run_training
from ...models import resolve_arch
from ...util.errors import KDPluginError
from .branches import branch_accuracy, report_branches
from .members import build_ensemble, save_model_checkpoint

JOINTNET = "jointnet_cifar"


def start_from_members(arch, members, folder):
    """Build the ensemble from its members and save it as ``folder/{arch}_init.pth.tar``; returns the path."""
    return save_model_checkpoint(build_ensemble(arch, members), arch, os.path.join(folder, f"{arch}_init.pth.tar"))


def train_jointnet(settings, origin=None):
    """Train a JointNet from ``settings.model.load_weights_from`` (or ``resume_from``) with the engine.

    The model the engine creates is already frozen for joint training and trains with JointNet's own
    criterion. Writes ``branch_accuracy.json`` (vgg, resnet, mix and head test top-1, before and after)
    into the run directory and returns the run's summary with that report added.
    """
    start = settings.resume.checkpoint or settings.model.load_weights_from
    if resolve_arch(settings.model.arch) != JOINTNET:
        raise KDPluginError(f"train_jointnet trains {JOINTNET}, not {settings.model.arch}")
    if not start:
        raise KDPluginError("JointNet training starts from pretrained members: give an initial checkpoint")
    test = load_split(settings.data.path, "test")
    before = branch_accuracy(load_model(start, JOINTNET)[0].to(settings.runtime.device), test, settings.runtime.device)
    summary = run_training(settings)
    trained = load_model(summary["checkpoint"], JOINTNET)[0].to(settings.runtime.device)
    after = branch_accuracy(trained, test, settings.runtime.device)
    summary["branch_accuracy"] = {"before": before, "after": after}
    if is_main_process():
        report_branches(os.path.join(summary["run_dir"], "branch_accuracy.json"), summary["branch_accuracy"],
                        start=origin or start, checkpoint=summary["checkpoint"], test_images=len(test))
    return summary
