"""Test accuracy of every branch of an ensemble (vgg, resnet, mix and, for JointNet, head) in one pass."""
import torch

from ...data import TensorLoader
from ...util.fileio import write_json
from ...util.normalization import normalization_of


@torch.no_grad()
def branch_accuracy(model, image_set, device="cpu", batch_size=1024):
    """{branch: top-1 %} from ``model.forward_all`` (a namedtuple or a dict); each member runs once per batch,
    in eval mode."""
    model.eval()
    loader = TensorLoader(image_set, batch_size, "n", device=device, normalization=normalization_of(model))
    correct = {}
    for batch in loader.epoch(0):
        outputs = model.forward_all(batch.inputs)
        for name, logits in (outputs._asdict() if hasattr(outputs, "_asdict") else outputs).items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == batch.labels).sum())
    return {name: 100.0 * hits / loader.num_images for name, hits in correct.items()}


def branch_table(columns):
    """Rows of branch accuracies, one column per entry of ``columns`` ({title: {branch: top-1}})."""
    titles = list(columns)
    branches = list(next(iter(columns.values())))
    width = max(8, *map(len, branches))
    lines = [f"{'branch':{width}}" + "".join(f"{t:>10}" for t in titles)]
    lines += [f"{b:{width}}" + "".join(f"{columns[t][b]:10.2f}" for t in titles) for b in branches]
    return "\n".join(lines)


def report_branches(path, columns, **details):
    """Print the table and write {details..., columns...} as JSON to ``path``."""
    print("test top-1 (%) per branch:\n" + branch_table(columns))
    write_json(path, {**details, **columns})
    print(f"wrote {path}")
