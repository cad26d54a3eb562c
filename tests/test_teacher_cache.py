"""The exact teacher-output cache: same losses as the teacher itself (to fp16), persistence and invalidation."""
import csv
import glob
import os

import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, save_checkpoint
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.data import NUM_VIEWS, TensorLoader, load_split
from kd_plugin.distill.teacher import TeacherRunner
from kd_plugin.distill.teacher_cache import FP16_RELATIVE_ERROR, CacheFile, open_cache, precompute
from kd_plugin.spec import RunSpec
from kd_plugin.engine.trainer import run_training

# A cached row is the teacher's fp32 logit rounded to fp16: |error| <= 2**-11 * |logit| (plus 2**-24 absolute
# for values in fp16's subnormal range).
FP16_ABS_FLOOR = 2.0 ** -24
# Epoch-mean losses of a KD run fed fp16-rounded teacher logits vs the fp32 ones. The KL's derivative in a
# teacher logit is (p_teacher - p_student) / T, bounded by 1/T, so a step's loss moves by at most about
# max|logit| * 2**-11 (~1e-4 here; measured 2e-5 relative over the first epoch's 4 steps). Later epochs
# follow a slightly different SGD trajectory, which amplifies that (measured 5e-4 relative in epoch 1).
FIRST_EPOCH_LOSS_RTOL = 2e-4
LATER_EPOCH_LOSS_RTOL = 5e-3


def settings(data, out, **overrides):
    values = dict(data=data, arch="cnn5", epochs=2, batch_size=50, lr=0.05, seed=4, augment="y", out_dir=out,
                  kd_teacher="cnn5", kd_random_teacher=True, progress=False, verbose=False, validation_split=0.1)
    values.update(overrides)
    return RunSpec.from_flags(**values)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two cnn5 teacher checkpoints with different weights."""
    root = tmp_path_factory.mktemp("teachers")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name=f"t{seed}", dir=str(root)))
    return paths


def losses(summary, column):
    return [float(row[column]) for row in summary["rows"]]


def counters(summary):
    return [(int(r["teacher cache hits"]), int(r["teacher cache misses"])) for r in summary["rows"]]


def test_cached_rows_equal_teacher_logits_to_fp16_rounding(tiny_data):
    torch.manual_seed(0)
    teacher = create_model("cnn5")
    loader = TensorLoader(load_split(tiny_data, "train"), 64, "y", shuffle=True, seed=3)
    cached = open_cache(TeacherRunner(teacher), loader.image_set, loader.normalizer, "y")
    for epoch in (0, 0):  # the second pass is served from the cache
        for batch in loader.epoch(epoch):
            exact = TeacherRunner(teacher)(batch.inputs)
            cached.set_batch(batch)
            got = cached(batch.inputs)
            assert got.dtype == torch.float32
            assert ((got - exact).abs() <= FP16_RELATIVE_ERROR * exact.abs() + FP16_ABS_FLOOR).all()
    assert cached.epoch_counters() == {"teacher cache hits": 200, "teacher cache misses": 200}


def test_cache_hits_equal_the_live_teacher_row_by_row_over_shuffled_augmented_epochs(tiny_data):
    """Over many shuffled, augmented epochs each image meets some of its 162 views again: every row the cache
    serves, hit or miss, is compared with the live teacher on that very batch (a wrong (image, view) slot
    returns another view's or image's logits and fails here). The teacher has BatchNorm in eval mode."""
    torch.manual_seed(0)
    teacher = create_model("cnn5")
    images = load_split(tiny_data, "train").subset(torch.arange(6))
    loader = TensorLoader(images, 4, "y", shuffle=True, seed=11)
    cached = open_cache(TeacherRunner(teacher), images, loader.normalizer, "y")
    live = TeacherRunner(teacher)
    hits = 0
    for epoch in range(40):
        for batch in loader.epoch(epoch):
            cached.set_batch(batch)
            got = cached(batch.inputs)
            exact = live(batch.inputs)
            assert ((got - exact).abs() <= FP16_RELATIVE_ERROR * exact.abs() + FP16_ABS_FLOOR).all(), epoch
        hits += cached.epoch_counters()["teacher cache hits"]
    assert hits >= 20  # measured 31 of the 240 rows: the comparison covered hits, not only misses


def test_inputs_other_than_the_announced_batch_go_to_the_teacher(tiny_data):
    teacher = create_model("cnn5")
    loader = TensorLoader(load_split(tiny_data, "train"), 16, "n")
    cached = open_cache(TeacherRunner(teacher), loader.image_set, loader.normalizer, "n")
    batch = next(loader.epoch(0))
    cached.set_batch(batch)
    other = batch.inputs.clone()
    assert torch.equal(cached(other), TeacherRunner(teacher)(other))
    assert cached.epoch_counters() == {"teacher cache hits": 0, "teacher cache misses": 0}


def test_ensemble_teacher_caches_its_combined_output(tiny_data):
    torch.manual_seed(0)
    avnet = create_model("avnet_cifar")
    images = load_split(tiny_data, "train").subset(torch.arange(6))
    loader = TensorLoader(images, 6, "n")
    cached = open_cache(TeacherRunner(avnet), images, loader.normalizer, "n")
    batch = next(loader.epoch(0))
    cached.set_batch(batch)
    cached(batch.inputs)
    cached.set_batch(batch)
    got = cached(batch.inputs)
    exact = TeacherRunner(avnet)(batch.inputs)
    assert cached.epoch_counters() == {"teacher cache hits": 6, "teacher cache misses": 6}
    assert ((got - exact).abs() <= FP16_RELATIVE_ERROR * exact.abs() + FP16_ABS_FLOOR).all()


def test_precompute_fills_every_view_and_persists(tiny_data, tmp_path):
    images = load_split(tiny_data, "train").subset(torch.arange(3))
    teacher = create_model("cnn5")
    for augment in ("n", "y"):
        loader = TensorLoader(images, 8, augment)
        cached = open_cache(TeacherRunner(teacher), images, loader.normalizer, augment, str(tmp_path))
        precompute(cached, loader, batch_size=3)
        assert cached.cache.complete and cached.cache.num_filled == 3 * NUM_VIEWS[augment]
        assert cached.save()
        again = open_cache(TeacherRunner(teacher), images, loader.normalizer, augment, str(tmp_path))
        assert again.cache.complete and torch.equal(again.cache.logits, cached.cache.logits)
    assert len(os.listdir(tmp_path)) == 2


def test_a_corrupt_cache_file_is_a_cold_cache_and_gets_rewritten(tiny_data, tmp_path):
    images = load_split(tiny_data, "train").subset(torch.arange(10))
    loader = TensorLoader(images, 10, "n")
    runner = TeacherRunner(create_model("cnn5"))
    cached = open_cache(runner, images, loader.normalizer, "n", str(tmp_path))
    with open(cached.cache_file.path, "wb") as fh:
        fh.write(b"not a torch file")
    cached = open_cache(runner, images, loader.normalizer, "n", str(tmp_path))
    assert cached.cache.num_filled == 0
    precompute(cached, loader)
    cached.save()
    assert CacheFile(str(tmp_path), cached.cache.key).read(10, 1)["filled"].all()


def test_kd_run_with_cache_gives_the_losses_of_a_run_without(tiny_data, teachers, tmp_path):
    out = str(tmp_path / "logs")
    plain = run_training(settings(tiny_data, out, kd_resume=teachers[0], teacher_cache="off", name="plain"))
    cold = run_training(settings(tiny_data, out, kd_resume=teachers[0], name="cold"))
    warm = run_training(settings(tiny_data, out, kd_resume=teachers[0], name="warm"))
    for column in ("train Overall Loss", "train Distill Loss", "train Objective Loss", "valid Loss"):
        assert losses(cold, column)[0] == pytest.approx(losses(plain, column)[0], rel=FIRST_EPOCH_LOSS_RTOL)
        assert losses(cold, column) == pytest.approx(losses(plain, column), rel=LATER_EPOCH_LOSS_RTOL)
        assert losses(warm, column) == losses(cold, column)  # hits and misses return the same fp16 rows
    assert "teacher cache hits" not in plain["rows"][0]
    train_images = 180
    assert counters(cold)[0] == (0, train_images) and sum(h for h, _ in counters(cold)) < train_images
    assert counters(warm) == [(train_images, 0), (train_images, 0)]
    cold_weights = load_checkpoint_file(cold["checkpoint"]).state_dict
    warm_weights = load_checkpoint_file(warm["checkpoint"]).state_dict
    assert all(torch.equal(cold_weights[k], warm_weights[k]) for k in cold_weights)
    assert len(glob.glob(os.path.join(out, "teacher_cache", "teacher-*.pt"))) == 1


def test_another_teacher_or_split_invalidates_the_cache(tiny_data, teachers, tmp_path):
    shared = str(tmp_path / "cache")
    first = run_training(settings(tiny_data, str(tmp_path / "a"), kd_resume=teachers[0], teacher_cache=shared,
                                  epochs=1))
    other_teacher = run_training(settings(tiny_data, str(tmp_path / "b"), kd_resume=teachers[1],
                                          teacher_cache=shared, epochs=1))
    other_split = run_training(settings(tiny_data, str(tmp_path / "c"), kd_resume=teachers[0],
                                        teacher_cache=shared, epochs=1, validation_split=0.2))
    same_weights = save_checkpoint(5, "cnn5_cifar", _model_from(teachers[0]), name="copy", dir=str(tmp_path))
    reused = run_training(settings(tiny_data, str(tmp_path / "d"), kd_resume=same_weights, teacher_cache=shared,
                                   epochs=1))
    assert counters(first) == [(0, 180)]
    assert counters(other_teacher) == [(0, 180)]
    assert counters(other_split) == [(0, 160)]
    assert counters(reused) == [(180, 0)]  # keyed by the weights, not by the checkpoint file
    assert len(os.listdir(shared)) == 3


def _model_from(path):
    model = create_model("cnn5")
    model.load_state_dict(load_checkpoint_file(path).state_dict)
    return model


# One tiny KD epoch (3 steps; fp32, teacher cache on) against the same run with speed flags, epoch losses compared.
# channels_last changes only the memory layout, so other conv kernels: fp32 round-off, grown by 3 SGD steps
# (measured 1.2e-4 relative); bf16 autocast rounds activations to 8 mantissa bits (measured up to 1.4e-2 relative,
# on the Distill Loss); without the cache the teacher's logits are not fp16-rounded (measured 8e-5).
SPEED_FLAG_RTOL = {"channels_last": 1e-3, "bf16": 5e-2, "bf16_channels_last": 5e-2, "no_cache": FIRST_EPOCH_LOSS_RTOL}
SPEED_FLAGS = {"channels_last": ["--channels-last"], "bf16": ["--amp", "bf16"],
               "bf16_channels_last": ["--amp", "bf16", "--channels-last"],
               "no_cache": ["--no-teacher-cache", "--threads", "1"]}
LOSS_COLUMNS = ("train Overall Loss", "train Distill Loss", "train Objective Loss", "valid Loss")


def one_kd_epoch(tiny_data, teacher, out, flags):
    assert compress_classifier([tiny_data, "-a", "cnn5", "--epochs", "1", "-b", "64", "--seed", "1", "-o", out,
                                "-n", "s", "--kd-teacher", "cnn5", "--kd-resume", teacher, "--cpu",
                                "--no-progress", *flags]) == 0
    (run_dir,) = glob.glob(os.path.join(out, "s___*"))
    with open(os.path.join(run_dir, "training.csv")) as fh:
        (row,) = list(csv.DictReader(fh))
    return row


@pytest.fixture(scope="module")
def fp32_epoch(tiny_data, teachers, tmp_path_factory):
    return one_kd_epoch(tiny_data, teachers[0], str(tmp_path_factory.mktemp("fp32")), [])


@pytest.mark.parametrize("case", sorted(SPEED_FLAGS))
def test_speed_flags_stay_within_their_tolerance_of_fp32(tiny_data, teachers, tmp_path, fp32_epoch, case):
    flags = SPEED_FLAGS[case]
    out = str(tmp_path / "logs")
    row = one_kd_epoch(tiny_data, teachers[0], out, flags)
    assert float(row["train Distill Loss"]) > 0
    for column in LOSS_COLUMNS:
        assert float(row[column]) == pytest.approx(float(fp32_epoch[column]), rel=SPEED_FLAG_RTOL[case]), column
    assert ("teacher cache misses" in row) == (case != "no_cache")
    assert os.path.isdir(os.path.join(out, "teacher_cache")) == (case != "no_cache")
