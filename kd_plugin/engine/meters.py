"""Running sums kept on the device (no host sync per step), read once per epoch."""
import torch


def topk_correct(output, target, ks=(1, 5)):
    """Number of samples whose label is within the top-k predictions, for each k (tensors, no sync)."""
    maxk = min(max(ks), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    hits = pred.eq(target[:, None])
    return [hits[:, :min(k, maxk)].any(dim=1).sum() for k in ks]


class EpochMeter:
    """Sums of losses (weighted by batch size) and correct counts for one epoch."""

    def __init__(self):
        self.sums = {}
        self.samples = 0

    def add(self, batch_size, **values):
        self.samples += batch_size
        for name, value in values.items():
            value = value.detach().float() * batch_size if value.dim() == 0 and value.is_floating_point() else value
            self.sums[name] = self.sums.get(name, 0) + value

    def results(self):
        """Means per sample (losses) and percentages (names ending in 'correct' become top-k %)."""
        if not self.samples:
            return {}
        out = {}
        for name, total in self.sums.items():
            value = float(total) / self.samples
            if name.endswith("correct"):
                out[name.replace("correct", "").strip("_ ") or name] = 100.0 * value
            else:
                out[name] = value
        return out

    def state_dict(self):
        return {"samples": self.samples, "sums": {k: float(v) for k, v in self.sums.items()}}

    def load_state_dict(self, state):
        self.samples = int(state["samples"])
        self.sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in state["sums"].items()}
