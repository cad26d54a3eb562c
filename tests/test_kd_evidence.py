"""benchmarks/kd_evidence.py --smoke (issue 24): every stage on generated data, the KD row chosen on the
validation split only, the teacher's accuracy beside it, and a rerun that trains nothing again."""
import glob
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "kd_evidence.py")


def run_smoke(out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, SCRIPT, "--smoke", "-o", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)


def results(out, plan):
    return [json.loads(Path(p).read_text()) for p in glob.glob(os.path.join(out, plan, "runs", "*", "result.json"))]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("kd_evidence")
    done = run_smoke(out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, done.stdout


def test_every_stage_runs_and_the_table_is_written(smoke):
    out, stdout = smoke
    record = json.loads(Path(out / "kd_evidence.json").read_text())
    methods = [row["method"] for row in record["rows"]]
    assert methods[0] == "student alone" and methods[2:] == ["DKD", "DIST", "KD + logit standardization"]
    assert len(glob.glob(str(out / "members" / "*" / "result.json"))) == 2
    branches = json.loads(Path(out / "ensemble" / "ensemble_branches.json").read_text())["test_top1"]
    assert record["teacher"]["test_top1"] == branches["mix"]
    assert all(row["teacher_top1"] == branches["mix"] for row in record["rows"][1:])
    assert "| student alone |" in stdout and (out / "kd_evidence.md").read_text() in stdout


def test_kd_row_is_the_grid_cell_with_the_best_validation_mean(smoke):
    out, _ = smoke
    grid = [r for r in results(out, "grid") if r["teacher"]]
    cells = {}
    for r in grid:
        cells.setdefault((r["alpha"], r["temperature"]), []).append(r)
    chosen = max(sorted(cells), key=lambda key: statistics.mean(r["best_valid_top1"] for r in cells[key]))
    record = json.loads(Path(out / "kd_evidence.json").read_text())
    kd = record["rows"][1]
    assert kd["values"] == [r["test_top1"] for r in sorted(cells[chosen], key=lambda r: r["seed"])]
    assert [c for c in record["kd_grid"] if c["chosen"]] == [c for c in record["kd_grid"]
                                                              if (c["alpha"], c["temperature"]) == chosen]
    alone = [r["test_top1"] for r in sorted(results(out, "grid"), key=lambda r: r["seed"]) if not r["teacher"]]
    assert record["rows"][0]["values"] == alone
    assert kd["delta"] == pytest.approx(statistics.mean(kd["values"]) - statistics.mean(alone))
    assert kd["clears_spread"] == (statistics.mean(kd["values"]) - statistics.stdev(kd["values"]) >
                                   statistics.mean(alone) + statistics.stdev(alone))


def test_a_rerun_trains_nothing_and_gives_the_same_table(smoke):
    out, _ = smoke
    before = (out / "kd_evidence.json").read_text()
    again = run_smoke(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already done, skipped" in again.stdout + again.stderr
    assert ": done in " not in again.stdout + again.stderr
    assert (out / "kd_evidence.json").read_text() == before


def test_the_kd_cell_is_chosen_by_validation_never_by_test():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kd_evidence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = lambda alpha, valid, test: {"teacher": "ensemble_cifar", "alpha": alpha, "temperature": 4.0,  # noqa: E731
                                      "best_valid_top1": valid, "test_top1": test, "seed": 0}
    results = [run(0.5, 60.0, 90.0), run(0.5, 62.0, 90.0), run(0.9, 70.0, 50.0), run(0.9, 64.0, 50.0),
               {"teacher": None, "alpha": None, "temperature": None, "best_valid_top1": 99.0, "test_top1": 99.0}]
    cells, chosen = module.choose_kd_cell(results)
    assert chosen == (0.9, 4.0) and cells[chosen][0] == pytest.approx(67.0)  # best validation mean, worst test
