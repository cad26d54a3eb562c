"""A run's speed options: channels_last memory format, bf16/fp16 autocast, torch.compile, CPU threads.

Autocast and compile wrap the model's ``forward`` on the instance, so state_dict keys, checkpoints and the
forward hooks policies install (KD captures the student's output there) are unchanged; the hooks run
outside the autocast region and the teacher keeps its own precision (TeacherRunner.autocast_dtype).
"""
import functools

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp):
    return AMP_DTYPES[amp] if amp else None


def autocast_forward(forward, device_type, dtype):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            output = forward(*args, **kwargs)
        return output.float() if isinstance(output, torch.Tensor) else output
    return run


def accelerate_model(model, device, channels_last=False, amp=None, compile_model=False):
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile_model:
        model.forward = torch.compile(model.forward)
    if amp:
        model.forward = autocast_forward(model.forward, torch.device(device).type, AMP_DTYPES[amp])
    return model


def accelerate_teachers(policies, channels_last=False, amp=None):
    """The KD teachers get the student's memory format and run under the same autocast precision."""
    for policy in policies:
        if channels_last:
            policy.teacher.to(memory_format=torch.channels_last)
        if hasattr(policy.teacher_outputs, "autocast_dtype"):
            policy.teacher_outputs.autocast_dtype = amp_dtype(amp)


def grad_scaler(amp, device):
    """fp16 needs loss scaling against gradient underflow; bf16 has fp32's exponent range and does not."""
    return torch.amp.GradScaler(torch.device(device).type) if amp == "fp16" else None


def set_cpu_threads(threads):
    """Intra-op threads for CPU work (None keeps torch's default: one per physical core)."""
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()
