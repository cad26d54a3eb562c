"""KD training throughput: kd-plugin against the loops users would otherwise write, same job, same data.

    python benchmarks/kd_throughput.py [--data DIR] [--steps 12] [--augment n y] [--repeats 3]
    python benchmarks/kd_throughput.py --smoke          # generated data, batch 16, a few steps: seconds

Batch 128, VGG7 student <- ResNet18 teacher, KD T 1, weights 0.5/0.5, SGD lr 0.01, for each augmentation:
  a   original-style loop: a Dataset of PIL images through torchvision transforms + DataLoader, teacher every step
  td  torchdistill (when importable): its DistillationBox, KDLoss, dataset wrapper and DataLoader, configured by
      its training configuration and stepped as its example trains (benchmarks/peers.py)
  e   IntelLabs Distiller's image_classifier.train with its KnowledgeDistillationPolicy (when importable)
  b   kd-plugin engine, teacher every step (--teacher-cache off)
  c0  kd-plugin engine, cold teacher cache (the run that fills it; saves it to disk)
  c   kd-plugin engine, warm teacher cache (loaded from c0's file)
  d   kd-plugin engine, plain student training (no KD)
and on a GPU also ta/t: ResNet18 training (no KD), original-style loop against the engine. --amp bf16 and
--channels-last apply to every case that can take them (the engine's flags; autocast + channels_last memory
format in the a/td/ta loops). Each case runs in its own process (its peak RSS is its own) for --warmup untimed
then --steps timed steps; with --repeats R the cases run R rounds, every other round in reverse order, and each
case reports its best round. Data: --data, else ../shared/data/cifar10-subset from the repository root when
present, else generated images; the training split is what a run uses after its 10% validation split.
A case that fails (not one skipped because its framework is missing) makes the exit status 1.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # also for an interpreter (Distiller's venv) without kd-plugin installed
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import itertools  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peers  # noqa: E402
from kd_plugin.cli.args import OneLineParser  # noqa: E402

STUDENT, TEACHER, SEED = "vgg7_bn_cifar", "resnet18_cifar", 0
TEMPERATURE, WEIGHTS = 1.0, (0.5, 0.5)  # distill, student
CASES = {
    "a": "original-style loop: PIL transforms + DataLoader",
    "td": "torchdistill DistillationBox + KDLoss + its DataLoader",
    "e": "Distiller image_classifier.train + KD policy",
    "b": "kd-plugin, no cache (teacher every step)",
    "c0": "kd-plugin, cold cache (fills it)",
    "c": "kd-plugin, warm cache",
    "d": "kd-plugin, plain student (no KD)",
    "ta": "original-style ResNet18 training (no KD)",
    "t": "kd-plugin, ResNet18 training (no KD)",
}
GPU_CASES = ("ta", "t")  # the teacher-training comparison; by default only on a GPU
# (numerator, denominator, goal, what): warm-cache KD against each peer, and its cost against a plain step
GOALS = (("c", "a", 5.0, "warm-cache KD vs original-style loop"), ("c", "td", 3.0, "warm-cache KD vs torchdistill"),
         ("c", "e", None, "warm-cache KD vs Distiller"), ("c", "b", None, "warm-cache KD vs no cache"))
STEP_GOAL = 1.05  # a warm-cache KD step takes at most this many plain student steps


# --- the child: one case --------------------------------------------------------------------------------------
def train_split(data):
    from kd_plugin.data import load_split, validation_split

    return validation_split(load_split(data, "train"), 0.1, seed=SEED)[0]


def pil_loader(args, device, total_steps):
    from kd_plugin.util.normalization import DEFAULT

    dataset = peers.PILCifar(train_split(args.data), peers.pil_transform(args.augment, DEFAULT))
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=total_steps * args.batch,
                                             generator=torch.Generator().manual_seed(SEED))
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                                       pin_memory=device.type == "cuda", drop_last=True)


def fresh_models(args, device, student_arch=STUDENT):
    from kd_plugin.checkpoint import load_model
    from kd_plugin.models import create_model

    torch.manual_seed(SEED)
    models = create_model(student_arch).to(device), load_model(args.teacher, TEACHER)[0].to(device)
    if args.channels_last:
        models = tuple(m.to(memory_format=torch.channels_last) for m in models)
    return models


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def to_device(args, device, inputs, labels):
    inputs = inputs.to(device, non_blocking=True)
    if args.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, labels.to(device, non_blocking=True)


def original_style(args, device, kd=True):
    """(a): the per-image PIL pipeline and a plain KD loop, teacher forward every step; (ta): no KD, ResNet18."""
    student, teacher = fresh_models(args, device, STUDENT if kd else TEACHER)
    teacher.eval()
    optimizer = sgd(student)
    loader = peers.MarkedLoader(pil_loader(args, device, args.warmup + args.steps), args.warmup)
    student.train()
    for inputs, labels in loader:
        inputs, labels = to_device(args, device, inputs, labels)
        with peers.speed_context(device, args.amp):
            output = student(inputs).float()
            loss = F.cross_entropy(output, labels)
            if kd:
                with torch.no_grad():
                    teacher_logits = teacher(inputs).float()
                kl = F.kl_div(F.log_softmax(output / TEMPERATURE, 1), F.softmax(teacher_logits / TEMPERATURE, 1),
                              reduction="batchmean")
                loss = WEIGHTS[1] * loss + WEIGHTS[0] * TEMPERATURE ** 2 * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the original logs every step's loss
    return {"seconds": loader.ended - loader.began}


def torchdistill_loop(args, device):
    """(td): the same student, teacher, batch, augmentation and images through torchdistill's own box and loader."""
    student, teacher = fresh_models(args, device)
    dataset = peers.PILCifar(train_split(args.data), peers.pil_transform(args.augment, student.normalization))
    config = peers.torchdistill_config(
        batch=args.batch, workers=args.workers, pin_memory=device.type == "cuda", epochs=1, lr=0.01,
        weight_decay=5e-4, temperature=TEMPERATURE, distill_weight=WEIGHTS[0], student_weight=WEIGHTS[1],
        sampler_kwargs={"num_samples": (args.warmup + args.steps) * args.batch,
                        "generator": torch.Generator().manual_seed(SEED)}, drop_last=True)
    box = peers.torchdistill_box(teacher, student, dataset, config, device)
    batches = peers.MarkedLoader(box.train_data_loader, args.warmup)
    peers.torchdistill_epoch(box, batches, device, args.amp, channels_last=args.channels_last)
    import torchdistill

    return {"seconds": batches.ended - batches.began, "torchdistill": torchdistill.__version__}


def distiller_loop(args, device):
    """(e): Distiller's own training loop and KD policy over the same PIL pipeline."""
    import logging

    import distiller
    from distiller.apputils.image_classifier import train as distiller_train

    logging.getLogger().setLevel(logging.WARNING)
    student, teacher = fresh_models(args, device)
    optimizer = sgd(student)
    policy = distiller.KnowledgeDistillationPolicy(student, teacher, TEMPERATURE,
                                                   distiller.DistillationLossWeights(*WEIGHTS, 0.0))
    scheduler = distiller.CompressionScheduler(student)
    scheduler.add_policy(policy, starting_epoch=0, ending_epoch=1, frequency=1)
    loader = peers.MarkedLoader(pil_loader(args, device, args.warmup + args.steps), args.warmup)
    run_args = argparse.Namespace(device=device, kd_policy=policy, print_freq=10 ** 9, log_params_histograms=False,
                                  arch=STUDENT, earlyexit_lossweights=None, earlyexit_thresholds=None)
    scheduler.on_epoch_begin(0)
    distiller_train(loader, student, torch.nn.CrossEntropyLoss().to(device), optimizer, 0, scheduler, [], run_args)
    return {"seconds": loader.ended - loader.began, "distiller": distiller.__version__}


def engine_run(args, device, kd=True, cache="off", arch=STUDENT):
    from kd_plugin.spec import RunSpec
    from kd_plugin.engine.trainer import TrainingRun

    teaching = dict(kd_teacher=TEACHER, kd_resume=args.teacher, kd_temperature=TEMPERATURE,
                    kd_distill_wt=WEIGHTS[0], kd_student_wt=WEIGHTS[1]) if kd else {}
    settings = RunSpec.from_flags(data=args.data, arch=arch, batch_size=args.batch, lr=0.01, weight_decay=5e-4,
                                  seed=SEED,
                           augment=args.augment, out_dir=args.out, device=str(device), progress=False, verbose=False,
                           teacher_cache=cache, channels_last=args.channels_last, amp=args.amp,
                           threads=args.threads, **teaching)
    return TrainingRun(settings).setup()


class StepLimit:
    """A TensorLoader cut to ``count`` batches from ``start_batch`` (train_epoch's own resume argument)."""

    def __init__(self, loader, count):
        self.loader, self.count = loader, count

    def __getattr__(self, name):  # everything else (device, normalization, ...) is the loader's own
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch, start_batch=0):
        return itertools.islice(self.loader.epoch(epoch, start_batch), self.count)


def engine_steps(run, first, count):
    """Train global steps [first, first + count) of ``run`` with the engine's loop; returns the seconds."""
    from kd_plugin.engine.loop import train_epoch

    hooks = [cache.set_batch for cache in run.teacher_caches]
    per_epoch = len(run.train_loader)
    began = time.perf_counter()
    while count > 0:
        epoch, start = divmod(first, per_epoch)
        n = min(count, per_epoch - start)
        run.scheduler.on_epoch_begin(epoch, run.optimizer)
        meter, _, _ = train_epoch(run.model, StepLimit(run.train_loader, n), run.criterion, run.optimizer,
                                  run.scheduler, epoch, start_batch=start, progress=False,
                                  batch_hook=(lambda batch: [h(batch) for h in hooks]) if hooks else None,
                                  check_every=1 if run.device.type == "cpu" else 50, grad_scaler=run.grad_scaler)
        meter.results()  # the one host sync, as at the end of an epoch
        first, count = first + n, count - n
    return time.perf_counter() - began


def engine_case(args, device):
    kd = args.case in ("b", "c0", "c")
    cache = os.path.join(args.out, "teacher_cache") if args.case in ("c0", "c") else "off"
    began = time.perf_counter()
    run = engine_run(args, device, kd, cache, arch=TEACHER if args.case == "t" else STUDENT)
    result = {"setup_seconds": time.perf_counter() - began}
    engine_steps(run, 0, args.warmup)
    result["seconds"] = engine_steps(run, args.warmup, args.steps)
    for cache in run.teacher_caches:
        counters = cache.epoch_counters()
        result.update(hits=counters["teacher cache hits"], misses=counters["teacher cache misses"],
                      rows=cache.cache.num_filled, views=cache.cache.num_views, images=cache.cache.num_images)
        if args.case == "c0":
            began = time.perf_counter()
            cache.save()
            result["save_seconds"] = time.perf_counter() - began
            result["file_mib"] = os.path.getsize(cache.cache_file.path) / 2 ** 20
            result["teacher_inference_img_s"] = teacher_inference_speed(cache, run.train_loader)
    return result


def teacher_inference_speed(cached, loader, images=1024):
    """Images/s of the teacher alone, batch 512, as a full precompute would run it."""
    runner = cached.runner
    indices = torch.arange(min(images, loader.num_images), device=loader.device)
    batches = [loader.make_batch(chunk, torch.zeros_like(chunk)).inputs for chunk in indices.split(512)]
    runner(batches[0][:8])
    began = time.perf_counter()
    for inputs in batches:
        runner(inputs)
    return len(indices) / (time.perf_counter() - began)


def missing_framework(case):
    """Why case a peer framework's case cannot run here (its package does not import), else None."""
    if case == "td":
        return peers.torchdistill_available()
    if case == "e":
        try:
            import distiller  # noqa: F401
        except Exception as err:  # Distiller pulls in many packages; any import failure means "not available"
            return f"import distiller failed ({type(err).__name__}: {err}); --distiller-python PY for another venv"
    return None


def run_case(args):
    """One case in this process: its result (img/s, seconds, ...) or {"skipped": why}."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = missing_framework(args.case)
    if missing:
        return {"case": args.case, "skipped": missing}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # each case's own peak, also when the cases share a process
    loops = {"a": original_style, "ta": lambda a, d: original_style(a, d, kd=False), "td": torchdistill_loop,
             "e": distiller_loop}
    result = loops.get(args.case, engine_case)(args, device)
    if device.type == "cuda":
        result["max_memory_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result.update(case=args.case, img_s=args.steps * args.batch / result["seconds"], rss_mib=self_kib / 1024,
                  worker_rss_mib=children_kib / 1024, threads=torch.get_num_threads())
    return result


# --- the parent: all cases, one table --------------------------------------------------------------------------
def find_data(path, scratch):
    from kd_plugin.data import write_synthetic_cifar

    if path:
        return path, path
    subset = os.path.join(REPO, "..", "shared", "data", "cifar10-subset")
    if os.path.isdir(subset):
        return os.path.normpath(subset), "cifar10-subset (real CIFAR-10 images)"
    generated = os.path.join(scratch, "generated")
    return write_synthetic_cifar(generated, train_images=4000, test_images=100, seed=0), "generated images"


def make_teacher(path, scratch):
    if path:
        return path
    from kd_plugin.checkpoint import save_checkpoint
    from kd_plugin.models import create_model

    torch.manual_seed(SEED)  # timing does not depend on the weights; the cache key does, so all cases share them
    return save_checkpoint(0, TEACHER, create_model(TEACHER), name="teacher", dir=scratch)


CHILD_FLAGS = ("data", "teacher", "steps", "warmup", "workers", "device", "batch", "threads", "amp")


def child(args, case, augment, out):
    """One case in a fresh process (its own peak RSS, nothing shared with the other cases)."""
    python = args.distiller_python if case == "e" and args.distiller_python else sys.executable
    argv = [python, os.path.abspath(__file__), "--case", case, "--augment", augment, "--out", out]
    for flag in CHILD_FLAGS:
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += ["--channels-last"] if args.channels_last else []
    env = dict(os.environ)
    if args.omp_wait_policy != "keep":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"case": case, "failed": " | ".join(tail) or f"exit status {done.returncode}"}
    return json.loads(lines[-1])


def in_process(args, case, augment, out):
    """One case in this process (--in-process, --smoke): no start-up cost; RSS is not the case's own."""
    import traceback

    case_args = argparse.Namespace(**{**vars(args), "case": case, "augment": augment, "out": out})
    try:
        result = run_case(case_args)
    except Exception as err:  # reported as the case's failure, like a failing child process
        traceback.print_exc()
        return {"case": case, "failed": f"{type(err).__name__}: {err}"}
    result.pop("rss_mib", None)
    result.pop("worker_rss_mib", None)
    return result


def round_order(cases, round_):
    """Every other round runs the cases in reverse order (c0 still before c: c0 fills the cache c reads)."""
    if round_ % 2 == 0:
        return list(cases)
    order = list(reversed(cases))
    if "c0" in order and "c" in order:
        order.remove("c0")
        order.insert(order.index("c"), "c0")
    return order


def machine_line(args):
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if os.path.exists("/proc/cpuinfo") else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU {cpu}, {os.cpu_count()} cores"
    wait = args.omp_wait_policy if args.omp_wait_policy != "keep" else os.environ.get("OMP_WAIT_POLICY", "unset")
    return (f"{device}; torch {torch.__version__}; threads {args.threads or torch.get_num_threads()}; "
            f"OMP_WAIT_POLICY={wait}; DataLoader workers {args.workers}; amp {args.amp or 'off'}; "
            f"channels_last {'on' if args.channels_last else 'off'}")


def keep_best(by_case, case, result):
    """Best of the rounds (the least disturbed by other work on the machine); every round's img/s is kept, in
    round order (None where the case did not run), for the per-round ratios."""
    previous = by_case.get(case)
    rounds = (previous or {}).get("rounds", []) + [round(result["img_s"], 1) if "img_s" in result else None]
    if previous is None or result.get("img_s", 0) > previous.get("img_s", 0):
        by_case[case] = result
    by_case[case]["rounds"] = rounds


def round_ratios(by_case, num, den):
    """num/den within each round where both ran (the two measured minutes apart, under the same load)."""
    # a case may have run fewer rounds (or none): only the rounds both ran are paired
    pairs = zip(by_case.get(num, {}).get("rounds", []), by_case.get(den, {}).get("rounds", []), strict=False)
    return [a / b for a, b in pairs if a and b]


def ratios(by_case):
    """[(what, value, per-round values, goal, met)] for the issue's goals. value: the median of the per-round
    ratios when there are rounds (a best round of one case is not set against another case's best), else the
    ratio of the two results; None when a side did not run."""
    lines = []
    for num, den, goal, what, better in [(*g, "higher") for g in GOALS] + [
            ("d", "c", STEP_GOAL, "warm-cache KD step / plain student step", "lower")]:
        per_round = round_ratios(by_case, num, den)
        a, b = by_case.get(num, {}).get("img_s"), by_case.get(den, {}).get("img_s")
        value = statistics.median(per_round) if per_round else (a / b if a and b else None)
        met = None if value is None or goal is None else (value >= goal if better == "higher" else value <= goal)
        lines.append((f"{what} ({num}/{den}), {'x faster' if better == 'higher' else 'x the time'}", value,
                      per_round, goal, met))
    return lines


def cell(r):
    if "img_s" not in r:
        return "failed" if "failed" in r else "skipped"
    rounds = r.get("rounds", [])
    spread = f" ({'/'.join('-' if x is None else str(x) for x in rounds)})" if len(rounds) > 1 else ""
    return f"{r['img_s']:.1f}{spread}"


def memory_cell(r):
    if "max_memory_mib" in r:
        return f"{r['max_memory_mib']:.0f} (GPU)"
    if "rss_mib" not in r:
        return "-"
    workers = r.get("worker_rss_mib", 0)
    return f"{r['rss_mib']:.0f}" + (f" (+workers {workers:.0f})" if workers > 1 and r["case"] in ("a", "td", "e")
                                    else "")


def print_report(args, source, num_images, results, loads):
    cases = [c for c in CASES if any(c in r for r in results.values())]
    print(f"\nKD throughput, batch {args.batch}, {STUDENT} <- {TEACHER}, {num_images} training images ({source}), "
          f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats} round(s)"
          f"{' (every other round in reverse order)' if args.repeats > 1 else ''}")
    print(f"machine: {machine_line(args)}; load average {loads[0]:.2f} at start, {loads[1]:.2f} at end\n")
    memory = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print("| case | " + " | ".join(f"aug {a} img/s | aug {a} {memory}" for a in results) + " |")
    print("|" + "---|" * (1 + 2 * len(results)))
    for case in cases:
        cells = [text for augment in results for text in (cell(results[augment].get(case, {})),
                                                           memory_cell(results[augment].get(case, {})))]
        print(f"| {case} {CASES[case]} | " + " | ".join(cells) + " |")
    for augment, by_case in results.items():
        print(f"\naugment {augment}:")
        for case, r in by_case.items():
            if "skipped" in r or "failed" in r:
                print(f"  {case}: {'skipped' if 'skipped' in r else 'FAILED'}: {r.get('skipped') or r['failed']}")
        print("  | ratio | measured (median of rounds) | per round | goal | met |\n  |---|---|---|---|---|")
        for what, value, per_round, goal, met in ratios(by_case):
            sign = "<=" if "time" in what else ">="
            print(f"  | {what} | {'-' if value is None else f'{value:.2f}'} | "
                  f"{' / '.join(f'{v:.2f}' for v in per_round) or '-'} | {'-' if goal is None else f'{sign} {goal:g}'}"
                  f" | {'-' if met is None else 'yes' if met else 'no'} |")
        cache_lines(by_case)
        if "img_s" in by_case.get("t", {}) and "img_s" in by_case.get("ta", {}):
            print(f"  ResNet18 training, engine vs original-style loop: "
                  f"{by_case['t']['img_s'] / by_case['ta']['img_s']:.2f}x")


def cache_lines(by_case):
    cold, warm, plain = by_case.get("c0", {}), by_case.get("c", {}), by_case.get("b", {})
    if "teacher_inference_img_s" not in cold:
        return
    views, images = cold["views"], cold["images"]
    inference = cold["teacher_inference_img_s"]
    full_mib = images * views * 10 * 2 / 2 ** 20
    print(f"  cache: {views} view(s) x {images} images = {images * views:,} rows, {full_mib:.1f} MiB of fp16 logits "
          f"when full; this run's file {cold['file_mib']:.1f} MiB, saved in {cold['save_seconds']:.2f} s; "
          f"warm run loaded it in its {warm.get('setup_seconds', float('nan')):.1f} s set-up; "
          f"warm hits {warm.get('hits', '-')}, misses {warm.get('misses', '-')}")
    if "img_s" in plain:
        print(f"  cold cache (c0) vs no cache (b): {cold['img_s'] / plain['img_s']:.2f}x")
    if "img_s" in plain and "img_s" in warm:
        build_s = images * views / inference
        saved_per_epoch = images / plain["img_s"] - images / warm["img_s"]
        print(f"  building it all up front: {views} teacher-epochs = {build_s / 60:.1f} min at the teacher's "
              f"{inference:.0f} img/s (batch 512, inference); it saves {saved_per_epoch:.0f} s per student KD epoch"
              + (f", so it pays off after {build_s / saved_per_epoch:.1f} student-epochs (epochs x students) in total"
                 if saved_per_epoch > 0 else ""))
        print("  filled lazily: nothing up front; the first run costs what c0 costs, every later run of the sweep "
              "with the same seed and split is warm" + (
                  "; with other seeds a run of E epochs finds a fraction 1-(161/162)^E of its rows "
                  "(E=30: 17%, E=350: 89%)" if views > 1 else ""))


def parse_args(argv=None):
    p = OneLineParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CIFAR-10 python batches (default: ../shared/data/cifar10-subset, else generated)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per case (default 12)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--batch", type=int, default=128, help="batch size of every case (default 128)")
    p.add_argument("--augment", nargs="+", choices=("n", "y"), default=["n", "y"])
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds over all cases, every other one in reverse order; each case reports its best round")
    p.add_argument("--cases", nargs="+", choices=list(CASES), help="default: all (ta and t only on a GPU)")
    p.add_argument("--amp", choices=("bf16",), help="bf16 autocast in every case that can take it")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format in every case")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of cases a, td and e (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY for every case (default PASSIVE: idle OpenMP threads sleep instead of "
                        "spinning, which matters when other processes share the cores); 'keep' leaves it alone")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--teacher", help="ResNet18 checkpoint (default: a freshly initialised one)")
    p.add_argument("--distiller-python", help="interpreter that can import distiller, for case e "
                                              "(default: this one)")
    p.add_argument("--in-process", action="store_true",
                   help="run every case in this process (no start-up per case; no per-case peak RSS)")
    p.add_argument("--smoke", action="store_true", help="a check that every case runs: generated images, "
                   "batch 16, 2 steps after 1, augmentation y, in this process (seconds)")
    p.add_argument("--json", help="also write all results to this JSON file")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.steps, args.warmup, args.augment, args.workers = 16, 2, 1, ["y"], 0
        args.in_process, args.threads = True, args.threads or 1
    for flag in ("steps", "batch", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1")
    if args.data and not os.path.isdir(args.data):
        p.error(f"--data: no folder {args.data!r}")
    if args.teacher and not os.path.isfile(args.teacher):
        p.error(f"--teacher: no file {args.teacher!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        (args.augment,) = args.augment
        print(json.dumps(run_case(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="kd_throughput_") as scratch:
        if args.smoke and not args.data:
            from kd_plugin.data import write_synthetic_cifar

            args.data = write_synthetic_cifar(os.path.join(scratch, "smoke"), train_images=120, test_images=20, seed=0)
        args.data, source = find_data(args.data, scratch)
        args.teacher = make_teacher(args.teacher, scratch)
        num_images = len(train_split(args.data))
        cases = args.cases or [c for c in CASES if c not in GPU_CASES or args.device.startswith("cuda")]
        run = in_process if args.in_process else child
        loads, results = [os.getloadavg()[0]], {}
        for round_ in range(args.repeats):
            for augment in args.augment:
                out = os.path.join(scratch, f"round{round_}_{augment}")
                for case in round_order(cases, round_):
                    r = run(args, case, augment, out)
                    print(f"round {round_} aug {augment} {case:>2}: " + (f"{r['img_s']:.1f} img/s" if "img_s" in r
                          else r.get("skipped") or "FAILED: " + r["failed"]), file=sys.stderr, flush=True)
                    keep_best(results.setdefault(augment, {}), case, r)
        loads.append(os.getloadavg()[0])
        print_report(args, source, num_images, results, loads)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"machine": machine_line(args), "load_average": loads, "source": source,
                           "results": results, "ratios": {a: ratios(r) for a, r in results.items()}}, fh, indent=1)
    failed = sorted({case for by_case in results.values() for case, r in by_case.items() if "failed" in r})
    if failed:
        print(f"failed cases: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
