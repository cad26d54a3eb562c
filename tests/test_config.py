import textwrap

import pytest
import torch

from kd_plugin import create_model
from kd_plugin.distill.extension import KnowledgeDistillationExtension
from kd_plugin.protocol.config import file_config, read_schedule
from kd_plugin.protocol.policy import LRPolicy
from kd_plugin.util.errors import KDPluginError
from kd_plugin.util.safe_yaml import load_yaml

GOOD = """
training: {arch: cnn5_cifar, epochs: 4, lr: 1e-3}
lr_schedulers:
  steps: {class: MultiStepLR, milestones: [2, 3], gamma: 0.1}
extensions:
  kd: {class: KnowledgeDistillationExtension, teacher_arch: vgg6as, temperature: 2.5, distill_weight: 0.7,
       student_weight: 0.3, random_teacher: true}
policies:
  - lr_scheduler: {instance_name: steps}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
  - extension: {instance_name: kd}
    epochs: [1, 2, 3]
"""


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_good_schedule_builds_lr_and_kd_policies(tmp_path):
    path = write(tmp_path, GOOD)
    assert read_schedule(path)["training"]["lr"] == 1e-3  # YAML 1.1 would give the string '1e-3'
    model = create_model("cnn5")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = file_config(model, optimizer, path)
    kinds = {type(p) for p in scheduler.sched_metadata}
    assert kinds == {LRPolicy, KnowledgeDistillationExtension}
    kd = next(p for p in scheduler.sched_metadata if isinstance(p, KnowledgeDistillationExtension))
    assert kd.temperature == 2.5 and kd.loss_wts.distill == 0.7 and kd.teacher.arch == "vgg6as_bn_cifar"
    assert sorted(e for e, ps in scheduler.policies.items() if kd in ps) == [1, 2, 3]
    lrs = []
    for epoch in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.on_epoch_end(epoch, optimizer, metrics={"min": 0, "max": 0})
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_flags_override_the_files_kd_arguments(tmp_path):
    model = create_model("cnn5")
    scheduler = file_config(model, torch.optim.SGD(model.parameters(), lr=0.1), write(tmp_path, GOOD),
                            overrides={"extensions": {"temperature": 4.0, "distill_weight": None}})
    kd = next(p for p in scheduler.sched_metadata if isinstance(p, KnowledgeDistillationExtension))
    assert kd.temperature == 4.0 and kd.loss_wts.distill == 0.7


@pytest.mark.parametrize("text,message", [
    ("pruners: {}\nfoo: {}\n", "unknown section 'foo'"),
    ("lr_schedulers:\n  s: {class: Bogus}\n", "lr_schedulers.s: unknown class 'Bogus'"),
    ("lr_schedulers:\n  s: {class: StepLR, step_size: 2, colour: red}\n", "unknown argument 'colour'"),
    ("lr_schedulers:\n  s: {class: MultiStepLR, milestones: [5, 2]}\n", "strictly increasing"),
    ("lr_schedulers:\n  s: {class: StepLR}\n", "missing argument 'step_size'"),
    ("lr_schedulers:\n  s: {class: StepLR, step_size: 1.5}\n", "step_size must be an integer > 0"),
    ("lr_schedulers:\n  s: {class: CosineAnnealingLR, T_max: 2.5}\n", "T_max must be an integer > 0"),
    ("lr_schedulers:\n  s: {class: StepLR, step_size: 1, last_epoch: 7}\n", "last_epoch must be -1"),
    ("extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: vgg7, temperature: 0}\n",
     "temperature must be a number > 0"),
    ("extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: vgg7, student_weight: -1}\n",
     "student_weight must be a number >= 0"),
    ("policies:\n  - lr_scheduler: {instance_name: nope}\n    epochs: [0]\n", "'nope' is not defined"),
    ("lr_schedulers:\n  s: {class: StepLR, step_size: 2}\npolicies:\n  - lr_scheduler: {instance_name: s}\n"
     "    starting_epoch: 3\n    ending_epoch: 2\n    frequency: 1\n", "bad epoch range"),
    ("lr_schedulers:\n  s: {class: StepLR, step_size: 2}\npolicies:\n  - lr_scheduler: {instance_name: s}\n",
     "needs 'epochs' or all of"),
    ("training: {epochs: 0}\n", "training.epochs must be an integer >= 1"),
    ("training: {batch: 3}\n", "training.batch: unknown key"),
    ("pruners:\n  p: {class: AutomatedGradualPruner}\n", "needs Distiller's own runtime"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("a: &x [1]\nb: *x\n", "anchors"),
    ("a: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ("- just\n- a list\n", "must be a mapping of sections"),
])
def test_schedule_errors_name_file_and_entry(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(KDPluginError, match=message) as err:
        read_schedule(path)
    assert path in str(err.value)


def test_oversized_yaml_is_refused(tmp_path):
    path = write(tmp_path, "a: '" + "x" * (1024 * 1024 + 10) + "'\n")
    with pytest.raises(KDPluginError, match="byte limit"):
        load_yaml(path)
