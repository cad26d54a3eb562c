"""The peers kd-plugin is raced against, written the way their users write them (shared by the benchmarks).

* the original experiment's style: a Dataset of PIL images through torchvision transforms and a DataLoader;
* torchdistill (``pip install 'kd-plugin[bench]'``): its ``DistillationBox`` built from its training
  configuration (data loader, teacher/student entries, optimizer, scheduler, ``WeightedSumLoss`` over its
  ``KDLoss``), stepped the way its ``examples/torchvision/image_classification.py`` does
  (``pre_epoch_process`` -> per batch ``forward_process`` + ``post_forward_process`` -> ``post_epoch_process``).
  The configuration is the dict its YAML files load into: torchdistill's own YAML loader resolves
  ``!import_call`` tags (arbitrary code), which this project does not use.
"""
import contextlib
import time
from collections.abc import Iterable

import torch


class PILCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per image (minus its MD5 checks): uint8 HWC -> PIL -> transform."""

    def __init__(self, image_set, transform) -> None:
        self.images = image_set.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = image_set.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def pil_transform(augment: str, normalization):
    """The original's pipeline: crop 32 pad 4 + flip for augment "y", then ToTensor + Normalize(mean, std)."""
    import torchvision.transforms as T

    crop = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment == "y" else []
    return T.Compose(crop + [T.ToTensor(), T.Normalize(normalization.mean, normalization.std)])


class MarkedLoader:
    """Iterates a loader and notes the time batch number ``mark`` is handed out and the time it ends."""

    def __init__(self, loader, mark: int) -> None:
        self.loader, self.mark = loader, mark
        self.sampler, self.batch_size = getattr(loader, "sampler", None), getattr(loader, "batch_size", None)
        self.began = self.ended = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.mark:
                self.began = time.perf_counter()
            yield batch
        self.ended = time.perf_counter()


def speed_context(device: torch.device, amp: str | None):
    """bf16 autocast for amp "bf16" (no gradient scaler needed), else nothing: how a user adds it to any loop."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()


def torchdistill_available() -> str | None:
    """None when torchdistill imports, else why not (one line)."""
    try:
        import torchdistill.core.distillation  # noqa: F401
    except Exception as err:  # any import failure means "not available here"
        return f"torchdistill not importable ({type(err).__name__}: {err}); pip install 'kd-plugin[bench]'"
    return None


def torchdistill_config(*, batch: int, workers: int, pin_memory: bool, epochs: int, lr: float, weight_decay: float,
                        temperature: float, distill_weight: float, student_weight: float, sampler_kwargs: dict,
                        cosine: bool = False, drop_last: bool = False) -> dict:
    """torchdistill's single-stage training configuration for Hinton KD: loss = student_weight * CE +
    distill_weight * T^2 * KL(teacher || student): its KDLoss with alpha = student_weight, beta = distill_weight."""
    kd = {"key": "KDLoss", "kwargs": {"student_module_path": ".", "student_module_io": "output",
                                      "teacher_module_path": ".", "teacher_module_io": "output",
                                      "temperature": temperature, "alpha": student_weight, "beta": distill_weight,
                                      "reduction": "batchmean"}}
    config = {
        "num_epochs": epochs,
        "train_data_loader": {
            "dataset_id": "train", "requires_supp": True,
            "sampler": {"class_or_func": torch.utils.data.RandomSampler, "kwargs": sampler_kwargs},
            "kwargs": {"batch_size": batch, "num_workers": workers, "pin_memory": pin_memory, "drop_last": drop_last},
        },
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {"key": "SGD", "kwargs": {"lr": lr, "momentum": 0.9, "weight_decay": weight_decay}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": kd, "weight": 1.0}}}},
    }
    if cosine:
        config["scheduler"] = {"key": "CosineAnnealingLR", "kwargs": {"T_max": epochs}, "scheduling_step": 0}
    return config


def torchdistill_box(teacher: torch.nn.Module, student: torch.nn.Module, train_dataset, config: dict,
                     device: torch.device):
    """torchdistill's DistillationBox (no distributed training). torchdistill leaves the teacher's mode to its
    caller (it never calls eval()); the teacher is put in eval mode here, as kd-plugin and the other loops do."""
    import logging

    from torchdistill.core.distillation import get_distillation_box

    logging.getLogger("torchdistill").setLevel(logging.WARNING)
    teacher.eval()
    return get_distillation_box(teacher, student, {"train": train_dataset}, config, device, None, False, 1)


def torchdistill_epoch(box, batches: Iterable, device: torch.device, amp: str | None = None, epoch: int = 0,
                      channels_last: bool = False) -> float:
    """One epoch of ``batches`` (the box's loader, possibly wrapped) the way torchdistill's example trains;
    returns the mean loss. Every step's loss is read (its example logs it every step)."""
    total, steps = 0.0, 0
    box.pre_epoch_process(epoch=epoch)
    for sample_batch, targets, supp_dict in batches:
        sample_batch, targets = sample_batch.to(device), targets.to(device)
        if channels_last:
            sample_batch = sample_batch.contiguous(memory_format=torch.channels_last)
        with speed_context(device, amp):
            loss = box.forward_process(sample_batch, targets, supp_dict)
        box.post_forward_process(loss=loss)
        total, steps = total + loss.item(), steps + 1
    box.post_epoch_process()
    return total / max(steps, 1)
