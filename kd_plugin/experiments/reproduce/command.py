"""``kd-plugin reproduce``: teachers, AvNet, JointNet, student baselines, every KD row, cards, plots, REPORT.md.

Resumable stage by stage: each training or ensemble stage is a jobs.Job with its done marker, each model
card a JSON file; a rerun of the same command skips what exists and carries on. OUT/state.json (written
atomically) records the profile and data the directory belongs to, and every stage's status and time.
"""
import glob
import os
import shlex
import subprocess
import time

import torch

from ...checkpoint import load_model
from ...data import detect_datasets, load_split, resolve_dataset, validation_split, write_synthetic
from ...reporting.plots import per_class_bars, plot_or_warn, training_curves
from ...reporting.report import latency_devices, report_card, write_report_card
from ...util.errors import KDPluginError
from ...util.fileio import ensure_writable_dir, read_json_record, write_json
from ..grid import REPRODUCE_FIELDS, refuse_owned_fields
from ..jobs import exclusive_directory
from ..launchers import add_launcher_args, make_runner
from ..naming import display_name, short
from ..sweep import table_rows, write_plots
from .cifar100 import REPORT as CIFAR100_REPORT
from .cifar100 import Cifar100Pipeline, write_cifar100_report
from .profiles import PROFILES
from .report_md import write_report
from .stages import ENSEMBLES, MODEL_ORDER, Pipeline

PIPELINES = {"original": Pipeline, "cifar100": Cifar100Pipeline}  # Profile.pipeline -> the table's runs


def add_reproduce_args(p):
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="smoke: generated data, 1 epoch (the default without --data); subset: a CIFAR-format subset, "
                        "epochs cut to about half an hour on an idle 2-core CPU (the default with --data); full: "
                        "CIFAR-10 with the original's epochs (meant for a GPU)")
    p.add_argument("--data", help="CIFAR-10 python batches dir (needed by subset and full)")
    p.add_argument("-o", "--out-dir", help="where everything goes (default reproduce-PROFILE); rerun to resume")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="runs at once inside a stage group (1: one after another, in this process)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--device", default="auto", help="latency devices for the cards: auto, cpu or cuda")
    p.add_argument("--schedules", help="folder of the original's schedules (default: the ones shipped with kd-plugin)")
    p.add_argument("--extra-args", help="more compress_classifier options for every training run, as one string")
    p.add_argument("--report-only", action="store_true",
                   help="only write REPORT.md from what OUT holds so far (also while a run is going on)")
    add_launcher_args(p)


STATE_ADVICE = "move it away to continue (finished stages are kept: each has its runs/NAME/result.json)"


def read_state(path):
    """OUT/state.json, refused with one line when truncated or malformed (nothing is overwritten then)."""
    state = read_json_record(path, "the reproduce state file", STATE_ADVICE)
    if not (isinstance(state.get("stages", {}), dict) and isinstance(state.get("invocations", []), list)
            and isinstance(state.get("profile"), str) and state["profile"] in PROFILES):
        raise KDPluginError(f"{path}: the reproduce state file is malformed (profile, stages, invocations); "
                            f"{STATE_ADVICE}")
    for name, stage in state.get("stages", {}).items():
        seconds = stage.get("seconds") if isinstance(stage, dict) else None
        if not (isinstance(stage, dict) and isinstance(stage.get("status"), str)
                and (seconds is None or isinstance(seconds, (int, float)) and not isinstance(seconds, bool))):
            raise KDPluginError(f"{path}: the reproduce state file is malformed (stage {name!r} must be an object "
                                f"with a status and seconds); {STATE_ADVICE}")
    state.setdefault("stages", {})
    state.setdefault("invocations", [])
    return state


class State:
    """OUT/state.json: what this directory holds, kept current after every stage."""

    def __init__(self, out_dir, profile, data, seed, generated=False):
        self.path = os.path.join(out_dir, "state.json")
        identity = {"profile": profile, "data": data, "seed": seed}
        self.content = {**identity, "generated": generated, "stages": {}, "invocations": []}
        if os.path.isfile(self.path):
            previous = read_state(self.path)
            clash = [k for k, v in identity.items() if previous.get(k) != v]
            if clash:
                raise KDPluginError(f"{out_dir} holds a reproduce run with {clash[0]}={previous.get(clash[0])!r}, "
                                    f"not {identity[clash[0]]!r}; use another --out-dir")
            self.content = previous
        self.started = time.time()
        self.content["invocations"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_seconds": None})

    def record(self, name, status, seconds=None):
        self.content["stages"][name] = {"status": status, "seconds": seconds}
        self.save()

    def save(self):
        self.content["invocations"][-1]["wall_seconds"] = round(time.time() - self.started, 1)
        write_json(self.path, self.content)

    @property
    def wall_seconds(self):
        return time.time() - self.started


def _check(args, profile):
    if args.jobs < 1:
        raise KDPluginError(f"--jobs must be >= 1, got {args.jobs}")
    if args.seed < 0:
        raise KDPluginError(f"--seed must be >= 0, got {args.seed}")
    if profile.needs_data and not args.data:
        raise KDPluginError(f"--profile {profile.name} needs --data DIR (a {profile.dataset}-format dataset)")
    if args.data and not os.path.exists(args.data):
        raise KDPluginError(f"--data {args.data}: no such directory")
    if args.data:
        resolve_dataset(args.data, profile.dataset)  # the profile's dataset, or one line saying what DIR holds


def _dataset(args, profile, out_dir, say):
    """(path, generated?) — the smoke profile writes its own tiny dataset when none is given."""
    if args.data:
        return os.path.abspath(args.data), False
    path = os.path.join(out_dir, "data")
    if profile.dataset not in detect_datasets(path):
        say(f"generating {profile.synthetic[0]} training / {profile.synthetic[1]} test {profile.dataset} images in "
            f"{path}")
        write_synthetic(path, *profile.synthetic, seed=args.seed, dataset=profile.dataset)
    return path, True


def _run_group(title, jobs, runner, state, say):
    say(f"== {title}: {', '.join(job.name for job in jobs)}")
    results = runner.run(jobs)
    for job in jobs:
        state.record(job.name, "done", results[job.name].get("seconds"))
    return results


def _cards(checkpoints, data, profile, devices, out_dir, state, say):
    """A report card per model (OUT/cards/NAME.json, .md, _per_class.png); existing ones are kept."""
    train, test = load_split(data, "train"), load_split(data, "test")
    for arch in MODEL_ORDER:
        if os.path.isfile(os.path.join(out_dir, f"{short(arch)}.json")):
            continue
        began = time.perf_counter()
        model, _ = load_model(checkpoints[arch], arch)
        card = report_card(model, arch, test, train, devices, profile.latency_repeats, checkpoints[arch])
        write_report_card(card, out_dir, short(arch), warn=say)
        state.record(f"card {short(arch)}", "done", round(time.perf_counter() - began, 2))
        say(f"card {display_name(arch)}: test top-1 {card['test_top1']:.2f}%, train top-1 {card['train_top1']:.2f}%")


def _figures(results, kd_results, baselines, cards, plots_dir, say):
    pngs = []
    png = cards and plot_or_warn(per_class_bars, {display_name(a): c["test_per_class"] for a, c in cards.items()},
                                 os.path.join(plots_dir, "per_class.png"), warn=say)
    if png:
        pngs.append(("Per-class test accuracy, our models", png))
    for title, png in write_plots(table_rows(kd_results, baselines), plots_dir, warn=say):
        pngs.append((f"KD: student accuracy against T, {title}", png))
    curves = []
    for name, result in results.items():
        log = os.path.join(result.get("run_dir") or "", "training.csv")
        target = os.path.join(plots_dir, f"curves_{name}.png")
        if os.path.isfile(log) and (os.path.isfile(target) or plot_or_warn(training_curves, log, target,
                                                                            title=name, warn=say)):
            curves.append((name, target))
    return pngs, curves


def finished_results(out_dir):
    """{stage: result} of every finished run under OUT/runs, in pipeline order (networks, ensembles, KD)."""
    results = []
    for path in glob.glob(os.path.join(glob.escape(out_dir), "runs", "*", "result.json")):
        result = read_json_record(path, "a done marker", "move it away to run that stage again")
        arch, stage = result.get("arch"), result.get("stage") or os.path.basename(os.path.dirname(path))
        group = 2 if result.get("teacher") else 1 if arch in ENSEMBLES else 0
        rank = MODEL_ORDER.index(arch) if group < 2 and arch in MODEL_ORDER else 0
        results.append(((group, rank, stage), result))
    return {key[2]: result for key, result in sorted(results, key=lambda item: item[0])}


def finished_cards(cards_dir):
    cards = {}
    for arch in MODEL_ORDER:
        path = os.path.join(cards_dir, f"{short(arch)}.json")
        if os.path.isfile(path):
            cards[arch] = read_json_record(path, "a report card", "move it away to write the card again")
    return cards


def write_pipeline_report(out_dir, profile, data, generated, seed, state_content, wall_seconds, expected_runs, say):
    """REPORT.md from whatever OUT holds: complete after a full run, marked partial otherwise."""
    results, cards = finished_results(out_dir), finished_cards(os.path.join(out_dir, "cards"))
    kd_results = [r for r in results.values() if r.get("teacher")]
    baselines = {r["arch"]: r["test_top1"] for r in results.values()
                 if not r.get("teacher") and r["arch"] in ("vgg7_bn_cifar", "cnn5_cifar")}
    figures = _figures(results, kd_results, baselines, cards, os.path.join(out_dir, "plots"), say)
    train_split, test_split = load_split(data, "train"), load_split(data, "test")
    context = {"profile": profile, "seed": seed, "when": time.strftime("%Y-%m-%d %H:%M"), "commit": _commit(),
               "devices": sorted({lat["device"] for card in cards.values() for lat in card["latency"].values()}),
               "wall_seconds": wall_seconds,
               "compute_seconds": sum(s.get("seconds") or 0 for s in state_content["stages"].values()),
               "progress": (len(results), expected_runs, len(cards), len(MODEL_ORDER)),
               "data": {"path": data, "generated": generated, "train": len(train_split), "test": len(test_split),
                        "valid": len(validation_split(train_split, 0.1, seed=seed)[1] or [])}}
    return write_report(os.path.join(out_dir, "REPORT.md"), context, cards, results, kd_results, baselines,
                        *figures)


def _commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cmd_reproduce(args, run_args):
    """``kd-plugin reproduce``; RUN_ARGS reads compress_classifier's flags (cli.training_args.RunArgs)."""
    if args.report_only:
        return report_only(args)
    profile = PROFILES[args.profile or ("subset" if args.data else "smoke")]
    _check(args, profile)
    say = lambda text: print(text, flush=True)  # noqa: E731
    runner = make_runner(args, parallel=0 if args.jobs == 1 else args.jobs, say=say)
    devices = latency_devices(args.device)
    out_dir = os.path.abspath(ensure_writable_dir(args.out_dir or f"reproduce-{profile.name}"))
    try:
        extra = shlex.split(args.extra_args or "")
    except ValueError as err:
        raise KDPluginError(f"--extra-args: {err}") from None
    refuse_owned_fields(extra, dict.fromkeys(REPRODUCE_FIELDS, "reproduce (for every stage)"), run_args)
    with exclusive_directory(out_dir, "reproduce") as lock_fd:
        data, generated = _dataset(args, profile, out_dir, say)
        state = State(out_dir, profile.name, data, args.seed, generated)
        state.save()
        pipeline = PIPELINES[profile.pipeline](out_dir, data, profile, args.seed, args.schedules, extra, run_args)
        say(f"reproduce --profile {profile.name}: {len(load_split(data, 'train')):,} training / "
            f"{len(load_split(data, 'test')):,} test images from {data}; output in {out_dir}")
        runner.keep_fds = (lock_fd,)
        results = _run_group("stage 1/3, networks trained alone", pipeline.plain_jobs(), runner, state, say)
        checkpoints = {r["arch"]: r["checkpoint"] for r in results.values()}
        if profile.pipeline == "cifar100":
            return _cifar100_stages(pipeline, results, checkpoints, runner, state, out_dir, say)
        results.update(_run_group("stage 2/3, ensembles", pipeline.ensemble_jobs(checkpoints), runner, state, say))
        checkpoints.update({r["arch"]: r["checkpoint"] for r in results.values()})
        kd_jobs = pipeline.kd_jobs(checkpoints)
        _run_group("stage 3/3, knowledge distillation", kd_jobs, runner, state, say)
        say("== report cards")
        _cards(checkpoints, data, profile, devices, os.path.join(out_dir, "cards"), state, say)
        say("== figures and REPORT.md")
        report = write_pipeline_report(out_dir, profile, data, generated, args.seed, state.content,
                                       state.wall_seconds, len(results) + len(kd_jobs), say)
        state.record("REPORT.md", "done")
        say(f"wrote {report} ({state.wall_seconds:.0f} s this invocation; torch threads {torch.get_num_threads()})")
    return 0


def _cifar100_stages(pipeline, results, checkpoints, runner, state, out_dir, say):
    results.update(_run_group("stage 2/2, distillation", pipeline.kd_jobs(checkpoints), runner, state, say))
    report = write_cifar100_report(out_dir, pipeline.profile, pipeline.data, results)
    state.record(CIFAR100_REPORT, "done")
    say(f"wrote {report} ({state.wall_seconds:.0f} s this invocation)")
    return 0


def report_only(args):
    """REPORT.md from what a (possibly still running) reproduce directory holds so far; runs nothing."""
    out_dir = args.out_dir or f"reproduce-{args.profile or ('subset' if args.data else 'smoke')}"
    path = os.path.join(out_dir, "state.json")
    if not os.path.isfile(path):
        raise KDPluginError(f"{out_dir}: no reproduce run there (state.json missing)")
    state = read_state(path)
    profile = PROFILES[state["profile"]]
    if profile.pipeline == "cifar100":
        print(f"wrote {write_cifar100_report(out_dir, profile, state['data'], finished_results(out_dir))}")
        return 0
    schedules = Pipeline(out_dir, state["data"], profile, state["seed"], args.schedules).kd_schedule_stems()
    generated = state.get("generated", os.path.abspath(state["data"]) == os.path.abspath(os.path.join(out_dir, "data")))
    report = write_pipeline_report(os.path.abspath(out_dir), profile, state["data"], generated,
                                   state["seed"], state, None, 6 + len(schedules), print)
    print(f"wrote {report}")
    return 0
