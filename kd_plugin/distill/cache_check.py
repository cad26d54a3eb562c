"""Checks a teacher-output cache file passes before any of its rows are used (issue 12).

A file is trusted only when its zip CRCs hold, its payload carries the digest of its logits and filled mask,
and a sample of its filled rows, recomputed with the live teacher, agrees. The sample is drawn afresh from the
operating system's randomness on every open: a sample derived from the file (its name or key) would tell a writer
which rows are never looked at. A file that fails is
renamed aside (never deleted) and reported in one warning line; the run continues with a cold cache.
"""
import hashlib
import os
import sys
import time

import torch

from .teacher import tensor_bytes

SAMPLE_ROWS = 64
# A cached row was computed inside another batch than the re-check's, by other kernels: fp32 results differ
# in the last bits, scaled by the row's largest logit. Autocast and GPU runs (TF32 convolutions) differ more.
FP32_BATCH_SLACK = 1e-3
LOW_PRECISION_BATCH_SLACK = 2.0 ** -6


def payload_digest(logits, filled):
    digest = hashlib.sha256(b"filled|" + tensor_bytes(filled))
    if logits is not None:
        digest.update(f"|logits|{logits.dtype}|{tuple(logits.shape)}|".encode())
        digest.update(tensor_bytes(logits))
    return digest.hexdigest()


def sample_rows(filled: torch.Tensor, limit: int = SAMPLE_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to LIMIT (indices, views) among FILLED's true positions, drawn at random on every call (its own
    generator: the run's seeded RNG streams are untouched)."""
    positions = filled.cpu().nonzero()
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
    chosen = positions[torch.randperm(len(positions), generator=generator)[:limit]]
    return chosen[:, 0], chosen[:, 1]


def recheck_slack(autocast_dtype, device):
    return FP32_BATCH_SLACK if autocast_dtype is None and torch.device(device).type == "cpu" \
        else LOW_PRECISION_BATCH_SLACK


def rows_mismatch(cached, fresh, fp16_relative_error, slack):
    """None if every cached fp16 row equals the fresh fp32 one up to fp16 rounding plus the batch slack,
    else a short description of the worst row."""
    cached, fresh = cached.float(), fresh.float()
    scale = fresh.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
    allowed = fp16_relative_error * fresh.abs() + slack * scale
    excess = (cached - fresh).abs() - allowed
    if not bool(torch.isfinite(cached).all()) or bool((excess > 0).any()):
        worst = int((cached - fresh).abs().amax(dim=1).argmax())
        return (f"{int((excess > 0).any(dim=1).sum())} of {len(fresh)} re-computed rows differ from the cached ones "
                f"(max |difference| {float((cached - fresh).abs()[worst].max()):.4g})")
    return None


def set_aside(path, reason, warn=None):
    """Rename PATH to ``<path>.corrupt-<UTC time>`` (a free name) and warn in one line; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = f"{path}.corrupt-{stamp}"
    for attempt in range(1, 1000):
        if not os.path.exists(target):
            break
        target = f"{path}.corrupt-{stamp}-{attempt}"
    try:
        os.rename(path, target)
        where = f"set aside as {os.path.basename(target)}"
    except OSError as err:
        target, where = None, f"could not be set aside ({err.strerror})"
    (warn or warn_on_stderr)(f"warning: teacher cache {path}: {reason}; {where}, continuing with a cold cache")
    return target


def warn_on_stderr(line):
    print(line, file=sys.stderr, flush=True)
