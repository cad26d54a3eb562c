"""The shape of what a resume reads from a checkpoint beyond the weights: ``extras``, ``kd_plugin`` (run
identity, RNG states, mid-epoch position and meter), ``compression_sched`` and ``optimizer_state_dict``.
A malformed field is refused with one line when the file is loaded, never met as a traceback mid-resume."""
import math
import random

import numpy as np
import torch

from ..util.errors import KDPluginError


def _int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tensor(value, dtype, numel):
    return isinstance(value, torch.Tensor) and value.dtype == dtype and value.numel() == numel


def _rng_problem(rng):
    """What is wrong with a checkpoint's RNG states (sizes are those of this machine's generators), or None."""
    if not isinstance(rng, dict):
        return "must be a mapping"
    if "torch" in rng and not _tensor(rng["torch"], torch.uint8, torch.get_rng_state().numel()):
        return f"torch state must be a uint8 tensor of {torch.get_rng_state().numel()} bytes"
    if "python" in rng:
        live = random.getstate()
        state = rng["python"]
        if not (isinstance(state, (tuple, list)) and len(state) == 3 and state[0] == live[0]
                and isinstance(state[1], (tuple, list)) and len(state[1]) == len(live[1])
                and all(_int(v) for v in state[1]) and (state[2] is None or _number(state[2]))):
            return f"python state must be (version {live[0]}, {len(live[1])} integers, gauss)"
    if "numpy" in rng:
        state, keys = rng["numpy"], len(np.random.get_state()[1])
        if not (isinstance(state, dict) and _tensor(state.get("keys"), torch.int64, keys)
                and _int(state.get("pos")) and state["pos"] <= keys and _int(state.get("has_gauss"))
                and _number(state.get("cached_gaussian"))):
            return f"numpy state must hold {keys} int64 keys, pos, has_gauss and cached_gaussian"
    if "cuda" in rng and not (isinstance(rng["cuda"], (list, tuple))
                              and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])):
        return "cuda states must be a list of uint8 tensors"
    return None


RUN_FIELDS = {"seed": _int, "batch_size": lambda v: _int(v, 1), "num_train": _int, "epochs": lambda v: _int(v, 1),
              "augment": lambda v: v in ("y", "n"), "train_data_hash": lambda v: isinstance(v, str),
              "arch": lambda v: isinstance(v, str), "data": lambda v: isinstance(v, str)}


def check_resume_sections(path, content):
    """Refuse a checkpoint whose resume sections are malformed; unknown keys are left alone (newer writers)."""
    def bad(what):
        raise KDPluginError(f"{path}: malformed checkpoint: {what}")

    extras = content.get("extras")
    if isinstance(extras, dict) and "best_epoch" in extras and not _int(extras["best_epoch"], -1):
        bad(f"extras['best_epoch'] must be an integer >= -1, found {extras['best_epoch']!r}")
    plugin = content.get("kd_plugin")
    if plugin is not None:
        if not isinstance(plugin, dict):
            bad(f"'kd_plugin' must be a mapping, found {type(plugin).__name__}")
        run = plugin.get("run", {})
        if not isinstance(run, dict):
            bad("kd_plugin['run'] must be a mapping")
        for key, ok in RUN_FIELDS.items():
            if key in run and not ok(run[key]):
                bad(f"kd_plugin['run'][{key!r}] has the wrong type or range: {run[key]!r}")
        batch = plugin.get("resume_batch")
        if batch is not None and not _int(batch):
            bad(f"kd_plugin['resume_batch'] must be an integer >= 0 or None, found {batch!r}")
        if batch is not None and "mutual" not in plugin:  # a mutual-learning group keeps a meter per peer
            meter = plugin.get("meter")
            if not (isinstance(meter, dict) and _int(meter.get("samples")) and isinstance(meter.get("sums"), dict)
                    and all(isinstance(k, str) and _number(v) for k, v in meter["sums"].items())):
                bad("kd_plugin['meter'] must hold 'samples' (an integer) and 'sums' (names to numbers) "
                    "for a mid-epoch checkpoint")
        cache_dir = plugin.get("teacher_cache_dir")
        if cache_dir is not None and not isinstance(cache_dir, str):
            bad(f"kd_plugin['teacher_cache_dir'] must be a path, found {type(cache_dir).__name__}")
        if "rng" in plugin:
            problem = _rng_problem(plugin["rng"])
            if problem:
                bad(f"kd_plugin['rng']: {problem}")
    sched = content.get("compression_sched")
    if sched is not None and not (isinstance(sched, dict) and isinstance(sched.get("policy_states", []), list)
                                  and all(isinstance(s, dict) for s in sched.get("policy_states", []))):
        bad("'compression_sched' must be a mapping whose 'policy_states' is a list of mappings")
    optimizer = content.get("optimizer_state_dict")
    if optimizer is not None and not (isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)
                                      and all(isinstance(g, dict) for g in optimizer["param_groups"])
                                      and isinstance(optimizer.get("state", {}), dict)):
        bad("'optimizer_state_dict' must hold 'state' (a mapping) and 'param_groups' (a list of mappings)")
