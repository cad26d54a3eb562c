import pytest
import torch
import torch.nn.functional as F

from kd_plugin import create_model
from kd_plugin.distill.policy import DistillationLossWeights, KnowledgeDistillationPolicy
from kd_plugin.protocol.scheduler import CompressionScheduler
from kd_plugin.util.errors import KDPluginError


def make_policy(temperature=2.0, weights=DistillationLossWeights(0.7, 0.3, 0.0)):
    torch.manual_seed(0)
    student, teacher = create_model("cnn5"), create_model("vgg6as")
    return student, teacher, KnowledgeDistillationPolicy(student, teacher, temperature, weights)


def test_loss_equals_hand_computed_formula():
    student, teacher, policy = make_policy()
    policy.on_epoch_begin(student, None, {"current_epoch": 0})
    student.train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    out = policy.forward(x)
    ce = F.cross_entropy(out, y)
    result = policy.before_backward_pass(student, 0, 0, 1, ce, None)
    with torch.no_grad():
        t = teacher.eval()(x)
    p_t = torch.softmax(t / 2.0, dim=1)
    log_p_s = torch.log_softmax(out.detach() / 2.0, dim=1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(dim=1).mean()
    assert result.loss_components[0].name == "Distill Loss"
    assert float(result.loss_components[0].value.detach()) == pytest.approx(float(kl), rel=1e-5)
    assert float(result.overall_loss) == pytest.approx(0.3 * float(ce) + 0.7 * 4.0 * float(kl), rel=1e-5)


def test_teacher_in_eval_mode_without_gradients_and_student_gets_kd_gradient():
    student, teacher, policy = make_policy(weights=DistillationLossWeights(1.0, 0.0, 0.0))
    teacher.train()
    policy.on_epoch_begin(student, None, {"current_epoch": 0})
    student.train()
    x = torch.randn(4, 3, 32, 32)
    running_mean = teacher.features[1].running_mean.clone()
    out = student(x)  # a loop calling the student directly, not policy.forward
    assert not teacher.training
    result = policy.before_backward_pass(student, 0, 0, 1, F.cross_entropy(out, torch.zeros(4, dtype=torch.long)),
                                         None)
    result.overall_loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert torch.equal(teacher.features[1].running_mean, running_mean)
    assert student.fc2.weight.grad is not None and float(student.fc2.weight.grad.abs().sum()) > 0


def test_inactive_outside_scheduled_epochs_and_in_eval():
    student, teacher, policy = make_policy()
    scheduler = CompressionScheduler(student)
    scheduler.add_policy(policy, starting_epoch=1, ending_epoch=2, frequency=1)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    loss = torch.tensor(1.0)
    scheduler.on_epoch_begin(0)
    student.train()
    student(torch.randn(2, 3, 32, 32))
    assert scheduler.before_backward_pass(0, 0, 1, loss) is loss and not calls
    scheduler.on_epoch_end(0)
    scheduler.on_epoch_begin(1)
    student.eval()
    student(torch.randn(2, 3, 32, 32))
    assert not calls  # validation forwards do not run the teacher
    student.train()
    student(torch.randn(2, 3, 32, 32))
    assert len(calls) == 1
    scheduler.on_epoch_end(1)
    assert policy._hook is None


@pytest.mark.parametrize("temperature,weights,message", [
    (0, (0.5, 0.5, 0), "temperature"), (-1, (0.5, 0.5, 0), "temperature"),
    (1, (-0.1, 0.5, 0), "distill loss weight"), (1, (0.5, 0.5, 0.2), "teacher loss weight")])
def test_bad_arguments(temperature, weights, message):
    with pytest.raises(KDPluginError, match=message):
        KnowledgeDistillationPolicy(create_model("cnn5"), create_model("cnn5"), temperature, weights)


def test_nonzero_teacher_weight_is_not_implemented_like_distiller():
    with pytest.raises(NotImplementedError):
        KnowledgeDistillationPolicy(create_model("cnn5"), create_model("cnn5"), 1.0, (0.5, 0.5, 0.1))
