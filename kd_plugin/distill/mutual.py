"""Deep Mutual Learning (Zhang et al., CVPR 2018): K peers trained together, each distilling from the others.

Peer k minimises ``CE(y, p_k) + T^2 / (K-1) * sum_{l != k} KL(p_l^T || p_k^T)`` with the other peers' outputs
detached (p^T: softmax of logits / T). T = 1 is the paper's setting (T^2 = 1 then); another T scales the KL
term by T^2, as Hinton's KD does, so its gradients keep their size. The unscaled mean KL is the peer's
"Mutual Loss" component, as the KD policy logs its unscaled "Distill Loss".

Declared in a YAML schedule's ``extensions`` section (no ``policies`` entry: it covers the whole run)::

    extensions:
      mutual:
        class: MutualLearning
        peers: [resnet18_cifar, vgg7_bn_cifar]
        temperature: 1.0

``compress_classifier`` reads it from the schedule as if ``--mutual`` had been given (the flag wins) and runs
``kd_plugin.engine.mutual``; a single-model run's schedule parser refuses it.
"""
import math
from collections import namedtuple

import torch.nn.functional as F

from ..models import resolve_arch
from ..protocol.config import POSITIVE, register_component
from ..util.errors import KDPluginError
from .losses.kd import softened_kl

DEFAULT_MUTUAL_TEMPERATURE = 1.0
PeerLoss = namedtuple("PeerLoss", ["overall", "objective", "mutual"])


def mutual_losses(logits, labels, temperature=DEFAULT_MUTUAL_TEMPERATURE):
    """One PeerLoss per peer from all peers' LOGITS on the same batch: overall (to minimise), its CE
    (``objective``) and the unscaled mean KL from the other peers (``mutual``)."""
    others = len(logits) - 1
    losses = []
    for k, own in enumerate(logits):
        objective = F.cross_entropy(own, labels)
        mutual = sum(softened_kl(own.float(), other.detach().float(), temperature)
                     for j, other in enumerate(logits) if j != k) / others
        losses.append(PeerLoss(objective + temperature ** 2 * mutual, objective, mutual))
    return losses


def check_peers(peers, temperature=DEFAULT_MUTUAL_TEMPERATURE):
    """Canonical arch names of PEERS (two or more zoo models) and the temperature as a float, or KDPluginError."""
    if not isinstance(peers, (list, tuple)):
        raise KDPluginError(f"mutual learning needs a list of two or more peers, got {peers!r}")
    if len(peers) < 2:
        raise KDPluginError(f"mutual learning needs two or more peers, got {len(peers)} ({' '.join(map(str, peers))})")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or not temperature > 0:
        raise KDPluginError(f"mutual-learning temperature must be a number > 0, got {temperature!r}")
    return [resolve_arch(p) for p in peers], float(temperature)


def peer_labels(archs):
    """A name per peer for logs, CSV columns and files: its arch, numbered when several peers share it."""
    labels = []
    for k, arch in enumerate(archs):
        same = [i for i, a in enumerate(archs) if a == arch]
        labels.append(arch if len(same) == 1 else f"{arch}-{same.index(k) + 1}")
    return labels


class MutualLearning:
    """The schedule form of ``--mutual``: which peers train together and the temperature (see the module)."""

    def __init__(self, model, peers, temperature=DEFAULT_MUTUAL_TEMPERATURE):
        if model is not None:
            raise KDPluginError("MutualLearning trains several peers together: run the schedule with "
                                "compress_classifier (it reads the extension), not as a single-model run")
        self.peers, self.temperature = check_peers(peers, temperature)


def mutual_spec(sched_dict):
    """(MutualLearning or None, SCHED_DICT without it): the extension a schedule declares, and the schedule
    each peer's own scheduler is built from (its LR schedulers)."""
    extensions = dict((sched_dict or {}).get("extensions") or {})
    names = [n for n, d in extensions.items() if isinstance(d, dict) and d.get("class") == MutualLearning.__name__]
    if not names:
        return None, sched_dict
    if len(names) > 1:
        raise KDPluginError(f"a schedule declares MutualLearning once, found {len(names)} ({', '.join(names)})")
    for policy in (sched_dict.get("policies") or []):
        if isinstance(policy, dict) and (policy.get("extension") or {}).get("instance_name") == names[0]:
            raise KDPluginError(f"extensions.{names[0]}: MutualLearning covers the whole run; remove its policies "
                                f"entry")
    definition = extensions.pop(names[0])
    spec = MutualLearning(None, **{k: v for k, v in definition.items() if k != "class"})
    rest = {k: v for k, v in sched_dict.items() if k != "extensions"}  # the same schedule as flags' --mutual reads
    return spec, {**rest, "extensions": extensions} if extensions else rest


register_component("extensions", MutualLearning, {
    "peers": (lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(p, str) and p for p in v),
              "a list of two or more model names"),
    "temperature": POSITIVE})
