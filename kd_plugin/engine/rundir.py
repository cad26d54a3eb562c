"""Distiller's log directory layout: ``{out}/{name}___{YYYY.MM.DD-HHMMSS}/`` with log, CSV and configs/."""
import csv
import logging
import os
import shutil
import time

from ..util.errors import KDPluginError
from ..util.fileio import atomic_write, ensure_writable_dir
from ..util.rundir_names import check_run_name


def create_run_dir(out_dir, name):
    """A new, never-reused run directory (a suffix is added if the timestamp is taken)."""
    check_run_name(name)
    ensure_writable_dir(out_dir)
    stamp = time.strftime("%Y.%m.%d-%H%M%S")
    base = os.path.join(out_dir, f"{name}___{stamp}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise KDPluginError(f"cannot create run directory {path} ({err.strerror})") from None
    raise KDPluginError(f"cannot find a free run directory name under {out_dir}")


def make_logger(run_dir, name, verbose=True):
    logger = logging.getLogger(f"kd_plugin.run.{run_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    file_handler = logging.FileHandler(os.path.join(run_dir, f"{name}.log"))
    file_handler.setFormatter(logging.Formatter("%(asctime)s - %(message)s"))
    logger.addHandler(file_handler)
    if verbose:
        logger.addHandler(logging.StreamHandler())
    return logger


def close_logger(logger):
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def copy_configs(run_dir, paths):
    configs = os.path.join(run_dir, "configs")
    for path in paths:
        if path:
            os.makedirs(configs, exist_ok=True)
            shutil.copy(path, configs)


class CsvLog:
    """Appends one row per epoch; the header grows if a later row brings new columns (e.g. KD starts)."""

    def __init__(self, path):
        self.path = path
        self.rows = []
        if os.path.exists(path):
            with open(path, newline="") as fh:
                self.rows = list(csv.DictReader(fh))

    def append(self, row):
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        columns = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]

        def write(fh):
            writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)

        atomic_write(self.path, write, mode="w")


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value
