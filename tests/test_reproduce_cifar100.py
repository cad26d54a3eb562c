"""Issue 26: ``reproduce --profile cifar100`` plans the CIFAR-100 table from the shipped c100_* schedules and puts the
published numbers (DESIGN.md §12) beside ours."""
import os
from pathlib import Path

from kd_plugin.experiments.reproduce.cifar100 import Cifar100Pipeline, table_rows, write_cifar100_report
from kd_plugin.experiments.reproduce.profiles import PROFILES
from kd_plugin.protocol.config import read_schedule


def test_the_plan_is_the_table(tmp_path):
    profile = PROFILES["cifar100"]
    pipeline = Cifar100Pipeline(str(tmp_path), "data", profile)
    alone = pipeline.plain_jobs()
    assert [job.name for job in alone] == ["resnet32x4", "resnet8x4", "wrn_40_2", "wrn_16_2"]
    checkpoints = {"resnet32x4_cifar100": "t1.pth.tar", "wrn_40_2_cifar100": "t2.pth.tar"}
    jobs = pipeline.kd_jobs(checkpoints)
    assert len(jobs) == 10 and len({j.name for j in jobs}) == 10
    crd = next(j for j in jobs if j.name == "c100_crd_resnet32x4_to_resnet8x4")
    assert crd.argv[crd.argv.index("--kd-resume") + 1] == "t1.pth.tar" and "--kd-loss-arg" not in crd.argv
    sched = read_schedule(crd.argv[crd.argv.index("--compress") + 1])
    training = sched["training"]
    assert (training["dataset"], training["epochs"], training["lr"], training["batch_size"]) == ("cifar100", 240,
                                                                                                 0.05, 64)
    assert training["weight_decay"] == 5e-4 and sched["lr_schedulers"]["mdistiller_steps"]["milestones"] == [150, 180,
                                                                                                              210]
    assert sched["extensions"]["distillation"]["loss"] == "crd"
    smoke = Cifar100Pipeline(str(tmp_path / "s"), "data", PROFILES["cifar100-smoke"]).kd_jobs(checkpoints)
    assert "nce_k=256" in next(j for j in smoke if "_crd_" in j.name).argv


def test_the_report_puts_published_numbers_beside_ours(tmp_path):
    results = {"resnet8x4": {"arch": "resnet8x4_cifar100", "test_top1": 70.0},
               "c100_dkd_resnet32x4_to_resnet8x4": {"arch": "resnet8x4_cifar100", "teacher": "resnet32x4_cifar100",
                                                    "student": "resnet8x4_cifar100", "method": "dkd",
                                                    "test_top1": 75.0}}
    rows = table_rows(results)
    assert len(rows) == 14
    assert ["resnet32x4 → resnet8x4", "student alone", 70.0, 72.50] in rows
    assert ["resnet32x4 → resnet8x4", "DKD", 75.0, 76.32] in rows
    assert ["wrn_40_2 → wrn_16_2", "KD", None, 74.92] in rows
    text = Path(write_cifar100_report(str(tmp_path), PROFILES["cifar100"], "d", results)).read_text()
    assert "| resnet32x4 → resnet8x4 | DKD | 75.00 | 76.32 | -1.32 |" in text and "2 of 14 cells" in text
    assert os.path.basename(tmp_path / "CIFAR100_REPORT.md") in os.listdir(tmp_path)
