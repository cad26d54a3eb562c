"""Every benchmark script runs (its --smoke mode, in a subprocess: a broken benchmark fails CI), and the parts of
the benchmarks that turn measurements into claims compute what they say."""
import glob
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def scripts():
    """Every benchmark script (a file with a __main__ block); a new one is smoke-tested without editing this list."""
    found = sorted(glob.glob(os.path.join(BENCHMARKS, "*.py")))
    return [os.path.basename(p) for p in found if '__name__ == "__main__"' in open(p).read()]


def own_smoke_test(script):
    """tests/test_<name>.py when it runs the script's --smoke itself (then it is not run twice)."""
    path = os.path.join(REPO, "tests", f"test_{script[:-3]}.py")
    return path if os.path.isfile(path) and '"--smoke"' in open(path).read() else None


def smoke_params():
    return [pytest.param(s, marks=pytest.mark.skip(reason=f"{os.path.basename(own_smoke_test(s))} runs its --smoke"))
            if own_smoke_test(s) else s for s in scripts()]


def load(name):
    sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_list_is_not_empty():
    assert {"kd_throughput.py", "time_to_accuracy.py", "ddp_scaling.py", "teacher_cache_open.py",
            "loss_comparison.py"} <= set(scripts())


@pytest.mark.parametrize("script", smoke_params())
def test_every_benchmark_runs_its_smoke_mode(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"


def test_throughput_ratios_and_goals():
    bench = load("kd_throughput")
    results = {"a": {"img_s": 20.0}, "td": {"img_s": 40.0}, "c": {"img_s": 110.0}, "d": {"img_s": 100.0},
               "e": {"skipped": "no distiller"}}
    by_what = {what.split(" (")[0]: (value, goal, met) for what, value, _, goal, met in bench.ratios(results)}
    assert by_what["warm-cache KD vs original-style loop"] == (pytest.approx(5.5), 5.0, True)
    assert by_what["warm-cache KD vs torchdistill"] == (pytest.approx(2.75), 3.0, False)
    assert by_what["warm-cache KD vs Distiller"] == (None, None, None)
    assert by_what["warm-cache KD step / plain student step"] == (pytest.approx(100 / 110), 1.05, True)
    slow = bench.ratios({"c": {"img_s": 90.0}, "d": {"img_s": 100.0}})
    assert (slow[-1][1], slow[-1][3], slow[-1][4]) == (pytest.approx(100 / 90), 1.05, False)


def test_ratios_over_rounds_are_the_median_of_each_rounds_ratio():
    """Best rounds of two cases can come from a quiet and a busy minute: the ratio pairs each round's own."""
    bench = load("kd_throughput")
    by_case = {}
    for a, c in ((20.0, 100.0), (10.0, 30.0), (18.0, 90.0)):
        bench.keep_best(by_case, "a", {"img_s": a})
        bench.keep_best(by_case, "c", {"img_s": c})
    bench.keep_best(by_case, "td", {"failed": "x"})
    bench.keep_best(by_case, "td", {"img_s": 50.0})
    assert by_case["a"]["img_s"] == 20.0 and by_case["td"]["rounds"] == [None, 50.0]
    (what, value, per_round, goal, met), *_ = bench.ratios(by_case)
    assert per_round == [pytest.approx(5.0), pytest.approx(3.0), pytest.approx(5.0)]
    assert (value, goal, met) == (pytest.approx(5.0), 5.0, True)  # the median; best over best would be 100/20 too
    assert bench.ratios(by_case)[1][2] == [pytest.approx(30 / 50)]  # c/td: only round 1 had both


def test_every_other_round_reverses_the_order_but_fills_the_cache_first():
    bench = load("kd_throughput")
    cases = ["a", "td", "c0", "c", "d"]
    assert bench.round_order(cases, 0) == cases
    assert bench.round_order(cases, 1) == ["d", "c0", "c", "td", "a"]
    assert bench.round_order(["a", "c0"], 1) == ["c0", "a"]


def test_torchdistill_configuration_is_the_same_kd_loss():
    """Its KDLoss takes alpha for CE and beta for the KL: weights swapped would still train, so check the value."""
    pytest.importorskip("torchdistill")
    from torchdistill.losses.registry import get_high_level_loss

    peers = load("peers")
    config = peers.torchdistill_config(batch=8, workers=0, pin_memory=False, epochs=1, lr=0.1, weight_decay=0.0,
                                       temperature=3.0, distill_weight=0.7, student_weight=0.3, sampler_kwargs={})
    criterion = get_high_level_loss(config["criterion"])
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=generator), torch.randn(8, 10, generator=generator)
    labels = torch.randint(0, 10, (8,), generator=generator)
    io = {"student": {".": {"output": student}}, "teacher": {".": {"output": teacher}}}
    got = criterion(io, {}, labels)
    p_t = torch.softmax(teacher / 3, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / 3, 1))).sum() / 8
    assert float(got) == pytest.approx(float(0.3 * F.cross_entropy(student, labels) + 0.7 * 9 * kl), rel=1e-5)


def test_time_to_accuracy_summary_is_mean_and_sample_std_over_seeds():
    tta = load("time_to_accuracy")
    runs = [{"tool": "kd-plugin", "seed": s, "top1": top1, "epoch_seconds": [9.0, 2.0, 4.0], "wall_seconds": 20.0}
            for s, top1 in ((0, 60.0), (1, 62.0))]
    rows = tta.summarize(runs)
    assert list(rows) == ["kd-plugin"]
    assert rows["kd-plugin"]["epoch_seconds"] == [3.0, 3.0]  # the first (warm-up) epoch apart
    assert rows["kd-plugin"]["train_seconds"] == [15.0, 15.0]
    assert tta.pm(rows["kd-plugin"]["top1"]) == "61.00 ± 1.41"
