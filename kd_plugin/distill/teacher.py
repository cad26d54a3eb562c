"""The teacher side of distillation: building a teacher from a checkpoint, and running it for logits."""
import hashlib

import torch

from ..checkpoint import load_model
from ..data import to_model_input
from ..models import create_model
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of


class TeacherRunner:
    """The teacher's logits for a batch: eval mode, no gradients, optionally under autocast.

    Inputs come normalized for the student (INPUT_NORMALIZATION, the student's own); a teacher that expects
    another normalization gets its own view of the same images (kd_plugin.data.renormalize), a teacher
    that expects the same gets the batch as it is."""

    def __init__(self, teacher, autocast_dtype=None, input_normalization=None):
        self.teacher = teacher
        self.autocast_dtype = autocast_dtype
        self.input_normalization = input_normalization or normalization_of(teacher)
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)

    def __call__(self, inputs):
        self.teacher.eval()
        inputs = to_model_input(inputs, self.input_normalization, self.teacher)
        with torch.no_grad():
            if self.autocast_dtype is None:
                return self.teacher(inputs)
            with torch.autocast(inputs.device.type, dtype=self.autocast_dtype):
                return self.teacher(inputs).float()


def build_teacher(student_model, teacher_arch, teacher_checkpoint=None, random_teacher=False, where="--kd-teacher"):
    """A teacher network on the student's device, from a checkpoint; freshly initialised only when asked for
    explicitly (RANDOM_TEACHER: --kd-random-teacher, or ``random_teacher: true`` in the schedule)."""
    classes = getattr(student_model, "classes", None)  # the teacher must know the student's classes
    if teacher_checkpoint:
        teacher, _ = load_model(teacher_checkpoint, teacher_arch, classes=classes)
    elif random_teacher:
        teacher = create_model(teacher_arch, classes=classes)
    else:
        raise KDPluginError(f"{where} {teacher_arch}: no teacher weights; pass --kd-resume CHECKPOINT (or "
                            f"teacher_checkpoint in the schedule), or --kd-random-teacher to distil from a randomly "
                            f"initialised teacher deliberately")
    device = next(student_model.parameters()).device
    return teacher.to(device)


def tensor_bytes(tensor):
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def update_with_weights(digest, module):
    """Feed every weight and buffer of MODULE (names, dtypes, shapes, bytes) into a hashlib DIGEST."""
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor_bytes(tensor))
    return digest


def weights_digest(module):
    """A short sha256 of MODULE's weights and buffers: another teacher checkpoint gives another digest."""
    return update_with_weights(hashlib.sha256(), module).hexdigest()[:16]
