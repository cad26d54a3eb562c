"""Which checkpoint a run's test result describes (issue 12): the best epoch's, also after a resume.

A resumed run writes into a new run directory; until one of its epochs beats the checkpoint's best, the best
weights live in the resumed run's ``*_best.pth.tar``. They are copied into the new run directory at the start,
so the test split is always evaluated on the checkpoint of the best epoch that summary.json names.
"""
import os
import shutil

from ..checkpoint import check_arch, checkpoint_paths, load_checkpoint_file
from ..util.errors import KDPluginError
from ..util.fileio import atomic_write

CHECKPOINT_SUFFIX, BEST_SUFFIX = "checkpoint.pth.tar", "best.pth.tar"


def best_beside(path):
    """The best-checkpoint file saved beside checkpoint PATH (Distiller's naming), or None."""
    folder, base = os.path.split(path)
    if base.endswith(BEST_SUFFIX):
        return path
    if base.endswith(CHECKPOINT_SUFFIX):
        return os.path.join(folder, base[:-len(CHECKPOINT_SUFFIX)] + BEST_SUFFIX)
    return None


def carry_best_forward(resume, best, run_dir, name):
    """Copy the resumed run's best checkpoint into RUN_DIR when it holds BEST's epoch; returns the copy or None."""
    source = best_beside(resume.path)
    if best["epoch"] < 0 or source is None or not os.path.isfile(source):
        return None
    try:
        held = check_arch(load_checkpoint_file(source), resume.arch)
    except KDPluginError:
        return None
    if held.epoch != best["epoch"] or held.extras.get("current_top1") != best["top1"]:
        return None

    def copy(fh):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh)

    return atomic_write(checkpoint_paths(run_dir, name)[1], copy)


def tested_checkpoint(run_dir, name, arch, best, logger):
    """(path, Checkpoint or None) of what the test split is evaluated on: the best checkpoint, else the last."""
    last_path, best_path = checkpoint_paths(run_dir, name)
    chosen = best_path if os.path.exists(best_path) else last_path
    if not os.path.exists(chosen):
        return chosen, None
    tested = check_arch(load_checkpoint_file(chosen), arch)
    if tested.epoch != best["epoch"]:
        logger.info("The checkpoint of the best epoch (%d) is not available; testing %s (epoch %s) instead",
                    best["epoch"], chosen, tested.epoch)
    return chosen, tested


def best_chosen_on(valid_loader):
    """What "best" ranked epochs by, for summary.json: without a validation split (--vs 0) it is the training
    top-1, never the test split."""
    return "training top1 (no validation split)" if valid_loader is None else "validation top1"
