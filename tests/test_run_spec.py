"""The run spec: every field reaches the engine identically from flags, a schedule's YAML and a sweep cell, and
round-trips through spec.json, summary.json and a checkpoint; bad fields are named one per line."""
import json

import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, save_checkpoint
from kd_plugin.cli.compress_classifier import build_parser
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.cli.kd_plugin import build_parser as kd_plugin_parser
from kd_plugin.cli.training_args import RunArgs, settings_from_args
from kd_plugin.data import write_synthetic_cifar
from kd_plugin.experiments.sweep import CELL_FIELDS, plan_from_args, sweep_jobs
from kd_plugin.protocol.config import TRAINING_KEYS
from kd_plugin.spec import FLAG_FIELDS, RunSpec
from kd_plugin.spec.run import ROLE_FIELDS
from kd_plugin.util.errors import KDPluginError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    data = write_synthetic_cifar(str(root / "data"), train_images=40, test_images=20, seed=1)
    torch.manual_seed(0)
    (root / "t").mkdir()
    teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="teacher", dir=str(root / "t"))
    schedule = root / "plain.yaml"
    schedule.write_text("lr_schedulers:\n  s: {class: MultiStepLR, milestones: [1], gamma: 0.5}\n"
                        "policies:\n  - lr_scheduler: {instance_name: s}\n    starting_epoch: 0\n"
                        "    ending_epoch: 3\n    frequency: 1\n")
    return {"root": root, "data": data, "teacher": teacher, "schedule": str(schedule)}


def flag_table(files):
    """{flag destination: (compress_classifier tokens, the value the spec must hold)} for every spec field."""
    t, out = files["teacher"], str(files["root"] / "out")
    return {
        "data": ([], files["data"]), "dataset": (["--dataset", "cifar10"], "cifar10"),
        "augment": (["--augment", "n"], "n"), "validation_split": (["--vs", "0.2"], 0.2),
        "batch_size": (["-b", "7"], 7), "seed": (["--seed", "5"], 5),
        "normalization": (["--normalization", "distiller"], "distiller"), "download": (["--download"], True),
        "arch": (["-a", "cnn5"], "cnn5"), "load_weights_from": (["--exp-load-weights-from", t], t),
        "optimizer": (["--optimizer", "adam"], "adam"), "lr": (["--lr", "0.01"], 0.01),
        "momentum": (["--momentum", "0.8"], 0.8), "weight_decay": (["--wd", "0.001"], 0.001),
        "compress": (["--compress", files["schedule"]], files["schedule"]), "epochs": (["--epochs", "3"], 3),
        "kd_teacher": (["--kd-teacher", "cnn5", "cnn5"], ["cnn5", "cnn5"]),
        "kd_resume": (["--kd-resume", t, t], [t, t]),
        "kd_teacher_weights": (["--kd-teacher-weights", "1", "3"], [1.0, 3.0]),
        "kd_teacher_combine": (["--kd-teacher-combine", "probs"], "probs"),
        "kd_temperature": (["--kd-temp", "3"], 3.0), "kd_distill_wt": (["--kd-dw", "0.6"], 0.6),
        "kd_student_wt": (["--kd-sw", "0.4"], 0.4), "kd_teacher_wt": (["--kd-tw", "0"], 0.0),
        "kd_start_epoch": (["--kd-start-epoch", "1"], 1), "kd_loss": (["--kd-loss", "dkd"], "dkd"),
        "kd_loss_args": (["--kd-loss-arg", "beta=2"], {"beta": 2}),
        "kd_logit_standardize": (["--kd-logit-standardize"], True),
        "kd_random_teacher": (["--kd-random-teacher"], True), "teacher_cache": (["--teacher-cache", "off"], "off"),
        "device": (["--cpu"], "cpu"), "threads": (["--threads", "1"], 1), "amp": (["--amp", "bf16"], "bf16"),
        "channels_last": (["--channels-last"], True), "compile": (["--compile"], True),
        "sync_bn": (["--sync-bn"], True), "backend": (["--backend", "builtin"], "builtin"),
        "deterministic": (["--det"], True), "progress": (["--no-progress"], False),
        "print_freq": (["-p", "3"], 3), "out_dir": (["-o", out], out), "name": (["-n", "x"], "x"),
        "resume_from": (["--resume-from", t], t), "reset_optimizer": (["--reset-optimizer"], True),
        "resume_accept_changes": (["--resume-accept-changes"], True),
    }


# Fields with no compress_classifier flag of their own (set by the runs that start one) and the two that only a
# mutual-learning run takes (checked on their own below).
NO_FLAG = {"verbose"}
MUTUAL_ONLY = {"mutual", "mutual_temperature"}


def values(spec):
    return spec.flat()


def test_every_field_has_a_flag_a_value_here_and_a_declared_role(files):
    table = flag_table(files)
    assert set(FLAG_FIELDS) == set(table) | NO_FLAG | MUTUAL_ONLY
    declared = [key for role in ROLE_FIELDS.values() for key in role]
    assert sorted(declared) == sorted(FLAG_FIELDS.values()) and len(declared) == len(set(declared))


def test_flags_reach_every_field(files):
    table = flag_table(files)
    argv = [files["data"], *(token for tokens, _ in table.values() for token in tokens)]
    spec = settings_from_args(build_parser().parse_args(argv))
    got = values(spec)
    assert {dest: got[dest] for dest in table} == {dest: value for dest, (_, value) in table.items()}
    mutual = settings_from_args(build_parser().parse_args([files["data"], "--mutual", "cnn5", "vgg6as",
                                                           "--mutual-temp", "2"]))
    assert (mutual.mutual.peers, mutual.mutual.temperature) == (["cnn5", "vgg6as"], 2.0)


def test_a_schedules_training_section_sets_the_same_fields_as_the_flags(files, tmp_path):
    table = flag_table(files)
    training = {key: table[key][1] for key in TRAINING_KEYS if key in table}
    schedule = tmp_path / "training.yaml"
    schedule.write_text("training:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in training.items()))
    from_yaml = values(settings_from_args(build_parser().parse_args([files["data"], "--compress", str(schedule)])))
    flags = [token for key in training for token in table[key][0]]
    from_flags = values(settings_from_args(build_parser().parse_args([files["data"], *flags])))
    assert {k: from_yaml[k] for k in training} == {k: from_flags[k] for k in training} == training


def test_a_sweep_cell_holds_every_field_its_extra_args_set(files, tmp_path):
    table = flag_table(files)
    cell_owned = set(CELL_FIELDS) | {"download", "compile", "sync_bn", "amp", "channels_last"}  # not on a CPU run
    free = {dest: value for dest, value in table.items() if dest not in cell_owned and dest not in
            ("kd_teacher", "kd_resume", "kd_teacher_weights")}
    extra = " ".join(token for dest in free for token in table[dest][0])
    args = kd_plugin_parser().parse_args(["sweep", "--data", files["data"], "--teacher", f"cnn5={files['teacher']}",
                                          "--student", "cnn5", "-o", str(tmp_path / "sw"), f"--extra-args={extra}"])
    (job,) = sweep_jobs(plan_from_args(args, RunArgs), RunArgs)
    got = values(job.spec)
    assert {dest: got[dest] for dest in free} == {dest: value for dest, (_, value) in free.items()}
    written = RunSpec.read(job.start_attempt()[1])
    assert written == job.spec  # the child reads back exactly the cell's spec


def test_the_spec_round_trips_through_its_record_and_a_file(files, tmp_path):
    table = flag_table(files)
    argv = [files["data"], *(token for dest, (tokens, _) in table.items() for token in tokens)]
    spec = settings_from_args(build_parser().parse_args(argv))
    assert RunSpec.from_record(json.loads(json.dumps(spec.record()))) == spec
    moved = tmp_path / "elsewhere"
    assert RunSpec.from_record(spec.record(str(moved)), str(moved)) == spec
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.record(str(tmp_path))))
    assert RunSpec.read(str(path)) == spec


def test_a_run_records_its_spec_in_summary_and_checkpoint_and_the_engine_used_it(files, tmp_path):
    argv = [files["data"], "-a", "cnn5", "--epochs", "2", "-b", "8", "--lr", "0.03", "--momentum", "0.7", "--wd",
            "0.002", "--seed", "4", "--kd-teacher", "cnn5", "--kd-resume", files["teacher"], "--kd-temp", "2.5",
            "--kd-dw", "0.3", "--kd-sw", "0.7", "--kd-loss", "dkd", "--kd-loss-arg", "beta=3", "--no-progress",
            "-o", str(tmp_path / "out"), "-n", "r"]
    assert compress_classifier(argv) == 0
    spec = settings_from_args(build_parser().parse_args(argv))
    (summary_path,) = (tmp_path / "out").glob("r___*/summary.json")
    summary = json.loads(summary_path.read_text())
    run_dir = str(summary_path.parent)
    recorded = RunSpec.from_record(summary["spec"], run_dir)
    assert recorded.model_copy(update={"command": None}) == spec
    assert not summary["spec"]["data"]["path"].startswith("/")  # relative to the run directory
    checkpoint = load_checkpoint_file(summary["checkpoint"])
    assert RunSpec.from_record(checkpoint.plugin_state["spec"], run_dir).model_copy(update={"command": None}) == spec
    identity = checkpoint.plugin_state["identity"]
    assert (identity["lr"], identity["momentum"], identity["weight_decay"], identity["seed"]) == \
        (0.03, 0.7, 0.002, 4)
    (kd,) = summary["distillation"]
    assert (kd["temperature"], kd["distill_weight"], kd["student_weight"], kd["loss"]) == (2.5, 0.3, 0.7,
                                                                                          "dkd:beta=3")


@pytest.mark.parametrize("argv, lines", [
    (["--lr", "-1", "--epochs", "0", "-b", "0"],
     ["--epochs must be an integer >= 1", "--batch-size must be an integer >= 1, got 0",
      "--lr must be a number > 0, got -1.0"]),
    (["--momentum", "1.5"], ["--momentum must be in [0, 1), got 1.5"]),
    (["--vs", "1"], ["--validation-split must be in [0, 1), got 1.0"]),
])
def test_every_bad_field_is_named_on_a_line_of_its_own(files, argv, lines):
    with pytest.raises(KDPluginError) as err:
        settings_from_args(build_parser().parse_args([files["data"], "-a", "cnn5", *argv]))
    assert sorted(str(err.value).splitlines()) == sorted(
        next(line for line in str(err.value).splitlines() if line.startswith(want)) for want in lines)
    assert len(str(err.value).splitlines()) == len(lines)


@pytest.mark.parametrize("content, message", [
    ({"data": {"path": "d"}, "optimizer": {"lr": "fast"}}, "--lr must be a number > 0, got 'fast'"),
    ({"data": {"path": "d"}, "schedule": {"epochs": 2.5}}, "--epochs must be an integer >= 1"),
    ({"data": {"path": "d"}, "bogus": 1}, "bogus: no such run setting"),
    ({"data": {"path": "d"}, "distillation": {"teacher_checkpoint": [1, "t.pth.tar"]}},
     "--kd-resume must be checkpoint files"),
    ({"optimizer": {}}, "data is required"),
    ([1, 2], "spec: "),
])
def test_a_bad_spec_file_is_refused_with_the_field_named(tmp_path, content, message):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(content))
    with pytest.raises(KDPluginError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RunSpec.read(str(path))


def test_compress_classifier_spec_runs_the_file_and_refuses_a_bad_one(files, tmp_path, capsys):
    spec = RunSpec.from_flags(data=files["data"], arch="cnn5", epochs=1, batch_size=8, seed=1,
                              out_dir=str(tmp_path / "o"), name="s", progress=False)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(spec.record(str(tmp_path))))
    assert compress_classifier(["--spec", str(path)]) == 0
    (summary_path,) = (tmp_path / "o").glob("s___*/summary.json")
    assert RunSpec.from_record(json.loads(summary_path.read_text())["spec"], str(summary_path.parent)).model_copy(
        update={"command": None}) == spec
    path.write_text("{not json")
    capsys.readouterr()
    assert compress_classifier(["--spec", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable JSON spec" in err[0]


def test_identity_partition_names_resume_changes_by_flag(files, tmp_path, capsys):
    out = str(tmp_path / "o")
    base = [files["data"], "-a", "cnn5", "--epochs", "1", "-b", "8", "--seed", "2", "--no-progress", "-o", out]
    assert compress_classifier([*base, "-n", "a"]) == 0
    (checkpoint,) = (tmp_path / "o").glob("a___*/a_checkpoint.pth.tar")
    capsys.readouterr()
    assert compress_classifier([*base, "--vs", "0.2", "--resume-from", str(checkpoint), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "--validation-split: 0.1 -> 0.2" in err
    # a free field (threads, output, name) changes nothing a resume compares
    assert compress_classifier([*base[:-1], str(tmp_path / "o2"), "--threads", "1", "-n", "b", "--resume-from",
                                str(checkpoint), "--epochs", "2"]) == 0


def test_an_empty_or_malformed_spec_record_is_refused_and_none_is_noted(files, tmp_path, capsys):
    out = str(tmp_path / "o")
    base = [files["data"], "-a", "cnn5", "--epochs", "1", "-b", "8", "--seed", "2", "--no-progress", "-o", out]
    assert compress_classifier([*base, "-n", "a"]) == 0
    (checkpoint,) = (tmp_path / "o").glob("a___*/a_checkpoint.pth.tar")
    content = torch.load(checkpoint, weights_only=False)
    for record, message in (({}, "recorded run spec is empty"), ({"data": 3}, "recorded run spec is malformed")):
        content["kd_plugin"]["spec"] = record
        bad = tmp_path / "bad.pth.tar"
        torch.save(content, bad)
        capsys.readouterr()
        assert compress_classifier([*base, "--resume-from", str(bad), "--epochs", "2"]) == 2
        assert message in capsys.readouterr().err
    del content["kd_plugin"]["spec"]
    older = tmp_path / "older.pth.tar"
    torch.save(content, older)
    assert compress_classifier([*base, "-n", "c", "--resume-from", str(older), "--epochs", "2"]) == 0
    (log,) = (tmp_path / "o").glob("c___*/c.log")
    assert "records no run spec" in log.read_text() and "--validation-split" in log.read_text()


KD_ONLY_TOKENS = {"teacher_checkpoint": ["--kd-resume", "{t}"], "teacher_weights": ["--kd-teacher-weights", "1"],
                  "teacher_combine": ["--kd-teacher-combine", "probs"], "temperature": ["--kd-temp", "4"],
                  "distill_weight": ["--kd-dw", "0.7"], "student_weight": ["--kd-sw", "0.3"],
                  "teacher_weight": ["--kd-tw", "0"], "loss": ["--kd-loss", "dkd"],
                  "loss_args": ["--kd-loss", "kd", "--kd-loss-arg", "beta=6"],
                  "logit_standardize": ["--kd-logit-standardize"], "start_epoch": ["--kd-start-epoch", "0"],
                  "random_teacher": ["--kd-random-teacher"]}


@pytest.mark.parametrize("field", sorted(KD_ONLY_TOKENS))
def test_a_teachers_settings_without_a_teacher_are_refused(files, field, tmp_path, capsys):
    from kd_plugin.spec.run import KD_ONLY

    assert set(KD_ONLY) == set(KD_ONLY_TOKENS)
    tokens = [token.format(t=files["teacher"]) for token in KD_ONLY_TOKENS[field]]
    argv = [files["data"], "-a", "cnn5", "--epochs", "1", "--no-progress", "-o", str(tmp_path / "o"), *tokens]
    if field == "loss_args":  # beta is dkd's: kd refuses it outright; dkd with it still needs a teacher
        argv[-3] = "dkd"
    assert compress_classifier(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--kd-teacher (or a KD extension in the schedule)" in err[0], err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*___*"))


def test_the_command_line_prints_a_line_per_bad_field(files, tmp_path, capsys):
    argv = [files["data"], "-a", "cnn5", "--epochs", "0", "-b", "0", "--lr", "-1", "-o", str(tmp_path / "o")]
    assert compress_classifier(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(err) == ["compress_classifier: error: --batch-size must be an integer >= 1, got 0",
                           "compress_classifier: error: --epochs must be an integer >= 1 (at most 100000), got 0",
                           "compress_classifier: error: --lr must be a number > 0, got -1.0"]
    assert not (tmp_path / "o").exists()
