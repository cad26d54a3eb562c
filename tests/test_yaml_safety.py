"""Issue 8, clause 2: schedules are parsed without building objects, bombs and oversized files are refused,
numbers are numbers, and every out-of-range value or unknown key is named."""
import textwrap

import pytest

from kd_plugin.protocol.config import read_schedule
from kd_plugin.util.errors import KDPluginError
from kd_plugin.util.safe_yaml import MAX_YAML_BYTES, load_yaml

BILLION_LAUGHS = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def refused(path, match, reader=read_schedule):
    with pytest.raises(KDPluginError, match=match) as info:
        reader(path)
    assert path in str(info.value) and "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!python/object/apply:os.system", "!!python/name:os.system",
                                 "tag:yaml.org,2002:python/object/apply:os.system"])
def test_python_tags_are_rejected_and_never_run(tmp_path, tag):
    marker = tmp_path / "marker"
    text = f"training:\n  lr: {tag} ['touch {marker}']\n" if not tag.startswith("tag:") else \
        f"training:\n  lr: !<{tag}> ['touch {marker}']\n"
    refused(write(tmp_path, text), "invalid YAML .*(constructor|tag)")
    assert not marker.exists()


def test_anchor_and_alias_bombs_are_rejected_before_expansion(tmp_path):
    refused(write(tmp_path, BILLION_LAUGHS), r"anchors \(&name\) are not allowed")
    refused(write(tmp_path, "a: *undefined\n"), r"aliases \(\*name\) are not allowed|undefined alias")
    refused(write(tmp_path, "base: &defaults {lr: 0.1}\ntraining:\n  <<: *defaults\n"), "anchors")


def test_duplicate_keys_at_any_depth(tmp_path):
    refused(write(tmp_path, "training: {epochs: 2}\ntraining: {epochs: 3}\n"), "duplicate key 'training'")
    refused(write(tmp_path, "training:\n  lr: 0.1\n  lr: 0.2\n"), "duplicate key 'lr'")


def test_oversized_nested_and_undecodable_files(tmp_path):
    refused(write(tmp_path, "#" * (MAX_YAML_BYTES + 1)), "byte limit", load_yaml)
    refused(write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n"), "unreadable YAML|invalid YAML", load_yaml)
    path = tmp_path / "latin1.yaml"
    path.write_bytes("training: {arch: caf\xe9}\n".encode("latin-1"))
    refused(str(path), "unreadable YAML|invalid YAML", load_yaml)


@pytest.mark.parametrize("text,match", [
    ("training:\n  lr: [0.1\n", r"invalid YAML \(line 3"),
    ("training:\n\tlr: 0.1\n", "invalid YAML"),
    ("a: 2001-13-45\n", "invalid YAML value"),
    ("a: b: c\n", "invalid YAML"),
])
def test_malformed_yaml_names_the_place(tmp_path, text, match):
    refused(write(tmp_path, text), match, load_yaml)


@pytest.mark.parametrize("text,value", [
    ("1e-3", 1e-3), ("5E-4", 5e-4), ("+1e3", 1000.0), ("-2.5e-1", -0.25), (".5", 0.5), ("-.5", -0.5),
    ("1.", 1.0), ("0.1", 0.1), ("1_000.5", 1000.5), ("3", 3), ("'1e-3'", "1e-3"), ("1e-3x", "1e-3x"), ("._", "._"),
])
def test_yaml_12_floats_are_numbers_on_purpose(tmp_path, text, value):
    loaded = load_yaml(write(tmp_path, f"v: {text}\n"))["v"]
    assert loaded == value and type(loaded) is type(value)


def test_1e_minus_3_reaches_the_run_as_a_float(tmp_path):
    sched = read_schedule(write(tmp_path, """
        training: {lr: 1e-3, weight_decay: 5e-4}
        lr_schedulers:
          cos: {class: CosineAnnealingLR, T_max: 4, eta_min: 1e-5}
        policies:
          - lr_scheduler: {instance_name: cos}
            epochs: [0, 1]
    """))
    assert sched["training"] == {"lr": 0.001, "weight_decay": 0.0005}
    assert sched["lr_schedulers"]["cos"]["eta_min"] == 1e-5


KD = "extensions:\n  kd: {{class: KnowledgeDistillationExtension, teacher_arch: cnn5, {}}}\n"
MS = "lr_schedulers:\n  ms: {{class: MultiStepLR, {}}}\n"


@pytest.mark.parametrize("text,match", [
    ("training: {lr: 0}\n", "training.lr must be a number > 0, got 0"),
    ("training: {lr: -1e-3}\n", "training.lr must be a number > 0"),
    ("training: {lr: .inf}\n", "training.lr must be a number > 0, got inf"),
    ("training: {lr: .nan}\n", "training.lr must be a number > 0, got nan"),
    ("training: {lr: '0.1'}\n", "training.lr must be a number > 0, got '0.1'"),
    ("training: {lr: true}\n", "training.lr must be a number > 0, got True"),
    ("training: {epochs: 0}\n", "training.epochs must be an integer >= 1"),
    ("training: {epochs: 2.5}\n", "training.epochs must be an integer >= 1"),
    ("training: {batch_size: 0}\n", "training.batch_size must be an integer >= 1"),
    ("training: {momentum: 1}\n", r"training.momentum must be a number in \[0, 1\)"),
    ("training: {weight_decay: -1}\n", "training.weight_decay must be a number >= 0"),
    ("training: {epochs: 3, batchsize: 8}\n", "training.batchsize: unknown key"),
    (KD.format("temperature: 0"), "temperature must be a number > 0"),
    (KD.format("temperature: .inf"), "temperature must be a number > 0, got inf"),
    (KD.format("distill_weight: -0.5"), "distill_weight must be a number >= 0"),
    (KD.format("student_weight: '0.5'"), "student_weight must be a number >= 0"),
    (KD.format("temprature: 2"), "unknown argument 'temprature'"),
    (MS.format("milestones: [3, 3]"), "milestones must be a strictly increasing list"),
    (MS.format("milestones: [4, 2]"), "milestones must be a strictly increasing list"),
    (MS.format("milestones: []"), "milestones must be a strictly increasing list"),
    (MS.format("milestones: [1, 2.5]"), "milestones must be a strictly increasing list"),
    (MS.format("milestones: [2], gamma: -0.1"), "gamma must be a number > 0"),
    ("schedule: {}\n", "unknown section 'schedule'"),
    (MS.format("milestones: [2]") + "policies:\n  - lr_scheduler: {instance_name: ms}\n    epochs: [0]\n"
     "    every: 2\n", "policies\\[0\\]: unknown key 'every'"),
])
def test_ranges_and_unknown_keys_are_named(tmp_path, text, match):
    refused(write(tmp_path, text), match)
