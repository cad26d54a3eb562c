"""The teacher side of distillation: building a teacher from a checkpoint, and running it for logits."""
import torch

from ..checkpoint import load_model
from ..data import to_model_input
from ..models import create_model
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


def build_teacher(student_model, teacher_arch, teacher_checkpoint=None):
    """A teacher network on the student's device, from a checkpoint (or freshly initialised without one)."""
    if teacher_checkpoint:
        teacher, _ = load_model(teacher_checkpoint, teacher_arch)
    else:
        teacher = create_model(teacher_arch)
    device = next(student_model.parameters()).device
    return teacher.to(device)
