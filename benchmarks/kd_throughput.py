"""KD training throughput: an original-style PIL/DataLoader loop against kd-plugin's engine, same data.

    python benchmarks/kd_throughput.py [--data DIR] [--steps 20] [--augment n y] [--distiller-python PY]

Batch 128, VGG7 student <- ResNet18 teacher, for each augmentation:
  a   original-style: a Dataset of PIL images through torchvision transforms + DataLoader, teacher every step
  b   kd-plugin engine, teacher every step (--no-teacher-cache)
  c0  kd-plugin engine, cold teacher cache (the run that fills it; saves it to disk)
  c   kd-plugin engine, warm teacher cache (loaded from c0's file)
  d   kd-plugin engine, plain student training (no KD)
  e   IntelLabs Distiller's image_classifier.train with its KnowledgeDistillationPolicy (when importable)
plus, unless --no-extras, c and d with --channels-last --amp bf16. Each case runs in its own process (its
peak RSS is its own) for --warmup untimed then --steps timed steps. Data: --data, else
../shared/data/cifar10-subset from the repository root when present, else generated images; the training
split is what a run uses after its 10% validation split.
"""
import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # also for an interpreter (Distiller's venv) without kd-plugin installed

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BATCH, STUDENT, TEACHER, SEED = 128, "vgg7_bn_cifar", "resnet18_cifar", 0
TEMPERATURE, WEIGHTS = 1.0, (0.5, 0.5)
CASES = {
    "a": "original-style: PIL transforms + DataLoader",
    "b": "engine, no cache (teacher every step)",
    "c0": "engine, cold cache (fills it)",
    "c": "engine, warm cache",
    "d": "engine, plain student (no KD)",
    "e": "Distiller image_classifier.train + KD policy",
    "c+": "engine, warm cache, channels_last + bf16",
    "d+": "engine, plain student, channels_last + bf16",
    "ta": "original-style ResNet18 training (no KD)",
    "t+": "engine, ResNet18 training, channels_last + bf16",
}
EXTRAS = ("c+", "d+")
GPU_CASES = ("ta", "t+")  # the teacher-training comparison; by default only on a GPU


# --- the child: one case --------------------------------------------------------------------------------------
def train_split(data):
    from kd_plugin.data import load_split, validation_split

    return validation_split(load_split(data, "train"), 0.1, seed=SEED)[0]


class PILCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per image (minus its MD5 checks): uint8 HWC -> PIL -> transform."""

    def __init__(self, image_set, transform):
        self.images = image_set.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = image_set.labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class MarkedLoader:
    """Iterates a DataLoader and notes the time batch number ``mark`` is handed out and the time it ends."""

    def __init__(self, loader, mark):
        self.loader, self.mark = loader, mark
        self.sampler, self.batch_size = loader.sampler, loader.batch_size
        self.began = self.ended = None

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.mark:
                self.began = time.perf_counter()
            yield batch
        self.ended = time.perf_counter()


def pil_loader(image_set, augment, total_steps, workers, device):
    import torchvision.transforms as T

    from kd_plugin.data import MEAN, STD

    crop = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment == "y" else []
    dataset = PILCifar(image_set, T.Compose(crop + [T.ToTensor(), T.Normalize(MEAN, STD)]))
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=total_steps * BATCH,
                                             generator=torch.Generator().manual_seed(SEED))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers,
                                       pin_memory=device.type == "cuda", drop_last=True)


def fresh_models(device, teacher_path, student_arch=STUDENT):
    from kd_plugin.checkpoint import load_model
    from kd_plugin.models import create_model

    torch.manual_seed(SEED)
    return create_model(student_arch).to(device), load_model(teacher_path, TEACHER)[0].to(device)


def original_style(args, device, kd=True):
    """(a): the per-image PIL pipeline and a plain KD loop, teacher forward every step; (ta): no KD, ResNet18."""
    student, teacher = fresh_models(device, args.teacher, STUDENT if kd else TEACHER)
    teacher.eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = MarkedLoader(pil_loader(train_split(args.data), args.augment, args.warmup + args.steps, args.workers,
                                     device), args.warmup)
    student.train()
    for inputs, labels in loader:
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        output = student(inputs)
        loss = F.cross_entropy(output, labels)
        if kd:
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            kl = F.kl_div(F.log_softmax(output / TEMPERATURE, 1), F.softmax(teacher_logits / TEMPERATURE, 1),
                          reduction="batchmean")
            loss = WEIGHTS[1] * loss + WEIGHTS[0] * TEMPERATURE ** 2 * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the original logs every step's loss
    return {"seconds": loader.ended - loader.began}


def distiller_loop(args, device):
    """(e): Distiller's own training loop and KD policy over the same PIL pipeline."""
    import logging

    import distiller
    from distiller.apputils.image_classifier import train as distiller_train

    logging.getLogger().setLevel(logging.WARNING)
    student, teacher = fresh_models(device, args.teacher)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    policy = distiller.KnowledgeDistillationPolicy(student, teacher, TEMPERATURE,
                                                   distiller.DistillationLossWeights(*WEIGHTS, 0.0))
    scheduler = distiller.CompressionScheduler(student)
    scheduler.add_policy(policy, starting_epoch=0, ending_epoch=1, frequency=1)
    loader = MarkedLoader(pil_loader(train_split(args.data), args.augment, args.warmup + args.steps, args.workers,
                                     device), args.warmup)
    run_args = argparse.Namespace(device=device, kd_policy=policy, print_freq=10 ** 9, log_params_histograms=False,
                                  arch=STUDENT, earlyexit_lossweights=None, earlyexit_thresholds=None)
    scheduler.on_epoch_begin(0)
    distiller_train(loader, student, torch.nn.CrossEntropyLoss().to(device), optimizer, 0, scheduler, [], run_args)
    return {"seconds": loader.ended - loader.began, "distiller": distiller.__version__}


def engine_run(args, device, kd=True, cache="off", fast=False, arch=STUDENT):
    from kd_plugin.engine.settings import RunSettings
    from kd_plugin.engine.trainer import TrainingRun

    settings = RunSettings(data=args.data, arch=arch, batch_size=BATCH, lr=0.01, weight_decay=5e-4, seed=SEED,
                           augment=args.augment, out_dir=args.out, device=str(device), progress=False, verbose=False,
                           kd_teacher=TEACHER if kd else None, kd_resume=args.teacher if kd else None,
                           kd_temperature=TEMPERATURE, kd_distill_wt=WEIGHTS[0], kd_student_wt=WEIGHTS[1],
                           teacher_cache=cache, channels_last=fast, amp="bf16" if fast else None,
                           threads=args.threads)
    return TrainingRun(settings).setup()


class StepLimit:
    """A TensorLoader cut to ``count`` batches from ``start_batch`` (train_epoch's own resume argument)."""

    def __init__(self, loader, count):
        self.loader, self.count, self.device = loader, count, loader.device

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
    kd = args.case in ("b", "c0", "c", "c+")
    cache = os.path.join(args.out, "teacher_cache") if args.case in ("c0", "c", "c+") else "off"
    began = time.perf_counter()
    run = engine_run(args, device, kd, cache, fast=args.case.endswith("+"), arch=TEACHER if args.case == "t+"
                     else STUDENT)
    result = {"setup_seconds": time.perf_counter() - began}
    if args.case == "c+":  # bf16 teacher logits are another cache (its key holds the precision): fill it first
        engine_steps(run, 0, args.warmup + args.steps)
        for cache in run.teacher_caches:
            cache.epoch_counters()
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


def run_case(args):
    device = torch.device(args.device)
    (args.augment,) = args.augment
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case in ("a", "ta"):
        result = original_style(args, device, kd=args.case == "a")
    elif args.case == "e":
        try:
            import distiller  # noqa: F401
        except Exception as err:  # Distiller pulls in many packages; any import failure means "not available"
            print(json.dumps({"case": "e", "skipped": f"import distiller failed ({type(err).__name__}: {err})"}))
            return
        result = distiller_loop(args, device)
    else:
        result = engine_case(args, device)
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result.update(case=args.case, img_s=args.steps * BATCH / result["seconds"], rss_mib=self_kib / 1024,
                  worker_rss_mib=children_kib / 1024, threads=torch.get_num_threads())
    print(json.dumps(result))


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


def child(args, case, augment, out):
    python = args.distiller_python if case == "e" and args.distiller_python else sys.executable
    argv = [python, os.path.abspath(__file__), "--case", case, "--augment", augment, "--data", args.data,
            "--teacher", args.teacher, "--out", out, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--workers", str(args.workers), "--device", args.device]
    argv += ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ)
    if args.omp_wait_policy != "keep":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"case": case, "skipped": "failed: " + " | ".join(tail)}
    return json.loads(lines[-1])


def machine_line(args):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU {cpu}, {os.cpu_count()} cores"
    return (f"{device}; torch {torch.__version__}; threads {args.threads or torch.get_num_threads()}; "
            f"OMP_WAIT_POLICY={args.omp_wait_policy if args.omp_wait_policy != 'keep' else os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
            f"DataLoader workers {args.workers}")


def keep_best(by_case, case, result):
    """Best of the rounds (the least disturbed by other work on the machine); every round's img/s is kept."""
    previous = by_case.get(case)
    rounds = (previous or {}).get("rounds", []) + ([round(result["img_s"], 1)] if "img_s" in result else [])
    if previous is None or result.get("img_s", 0) > previous.get("img_s", 0):
        by_case[case] = result
    by_case[case]["rounds"] = rounds


def fmt(result, key="img_s"):
    return f"{result[key]:8.1f}" if key in result else f"{'-':>8}"


def print_report(args, source, num_images, results, loads):
    cases = [c for c in CASES if any(c in r for r in results.values())]
    print(f"\nKD throughput, batch {BATCH}, {STUDENT} <- {TEACHER}, {num_images} training images ({source}), "
          f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats} round(s)")
    print(f"machine: {machine_line(args)}; load average {loads[0]:.2f} at start, {loads[1]:.2f} at end\n")
    header = "| case | " + " | ".join(f"aug {a} img/s | aug {a} peak RSS MiB" for a in results) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(results)))
    for case in cases:
        cells = []
        for augment in results:
            r = results[augment].get(case, {})
            rss = f"{r['rss_mib']:.0f}" + (f" (+workers {r['worker_rss_mib']:.0f})" if r.get("worker_rss_mib", 0) > 1
                                             and case in ("a", "e") else "") if "rss_mib" in r else "-"
            spread = f" ({'/'.join(str(x) for x in r['rounds'])})" if len(r.get("rounds", [])) > 1 else ""
            cells += [(fmt(r).strip() + spread) if "img_s" in r else "skipped", rss]
        print(f"| {case} {CASES[case]} | " + " | ".join(cells) + " |")
    for augment, by_case in results.items():
        print(f"\naugment {augment}:")
        for case, r in by_case.items():
            if "skipped" in r:
                print(f"  {case}: skipped: {r['skipped']}")
        c = by_case.get("c", {})
        notes = {"a": "  (target >= 2.5)", "d": "  (KD overhead: a warm-cache KD step takes {:.3f}x a plain step; "
                                                 "target <= 1.10)"}
        for other in ("a", "e", "d", "b"):
            o = by_case.get(other, {})
            if "img_s" in c and "img_s" in o:
                print(f"  c/{other} = {c['img_s'] / o['img_s']:.2f}" + notes.get(other, "").format(
                    o["img_s"] / c["img_s"]))
        cache_lines(augment, by_case)
        if "img_s" in by_case.get("t+", {}) and "img_s" in by_case.get("ta", {}):
            print(f"  ResNet18 training, engine + channels_last + bf16 vs DataLoader baseline: "
                  f"{by_case['t+']['img_s'] / by_case['ta']['img_s']:.2f}x (GPU target >= 3)")


def cache_lines(augment, by_case):
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
    print(f"  cold cache (c0) vs no cache (b): {cold['img_s'] / plain['img_s']:.2f}x" if "img_s" in plain else "")
    if "img_s" in plain and "img_s" in warm:
        build_s = images * views / inference
        saved_per_epoch = images / plain["img_s"] - images / warm["img_s"]
        print(f"  building it all up front: {views} teacher-epochs = {build_s / 60:.1f} min at the teacher's "
              f"{inference:.0f} img/s (batch 512, inference); it saves {saved_per_epoch:.0f} s per student KD epoch, "
              f"so it pays off after {build_s / saved_per_epoch:.1f} student-epochs (epochs x students) in total")
        print("  filled lazily: nothing up front; the first run costs what c0 costs, every later run of the sweep "
              "with the same seed and split is warm" + (
                  "; with other seeds a run of E epochs finds a fraction 1-(161/162)^E of its rows "
                  "(E=30: 17%, E=350: 89%)" if views > 1 else ""))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CIFAR-10 python batches (default: ../shared/data/cifar10-subset, else generated)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per case (default 12)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--augment", nargs="+", choices=("n", "y"), default=["n", "y"])
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds over all cases; each case reports its best round (default 1)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), help="default: all")
    p.add_argument("--no-extras", action="store_true", help="skip the channels_last + bf16 cases")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of cases a and e (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY for every case (default PASSIVE: idle OpenMP threads sleep instead of "
                        "spinning, which matters when other processes share the cores); 'keep' leaves it alone")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--teacher", help="ResNet18 checkpoint (default: a freshly initialised one)")
    p.add_argument("--distiller-python", help="interpreter that can import distiller, for case e "
                                              "(default: this one)")
    p.add_argument("--json", help="also write all results to this JSON file")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        return run_case(args)
    with tempfile.TemporaryDirectory(prefix="kd_throughput_") as scratch:
        args.data, source = find_data(args.data, scratch)
        args.teacher = make_teacher(args.teacher, scratch)
        num_images = len(train_split(args.data))
        cases = args.cases or [c for c in CASES if not (args.no_extras and c in EXTRAS) and
                               (c not in GPU_CASES or args.device.startswith("cuda"))]
        loads, results = [os.getloadavg()[0]], {}
        for round_ in range(args.repeats):
            for augment in args.augment:
                out = os.path.join(scratch, f"round{round_}_{augment}")
                for case in cases:
                    r = child(args, case, augment, out)
                    print(f"round {round_} aug {augment} {case:>2}: " +
                          (f"{r['img_s']:.1f} img/s" if "img_s" in r else r["skipped"]), file=sys.stderr, flush=True)
                    keep_best(results.setdefault(augment, {}), case, r)
        loads.append(os.getloadavg()[0])
        print_report(args, source, num_images, results, loads)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"machine": machine_line(args), "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
