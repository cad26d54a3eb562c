"""REPORT.md: every table of the original (docs/DESIGN.md §4) with its number, ours and the difference."""
import os

from ...reporting.tables import markdown_lines
from ...util.fileio import write_text
from ..naming import display_name
from .reference import CLASS_ORDER, KD_ROWS, MODELS, PER_CLASS
from .stages import MODEL_ORDER

CLASS_ABBREVIATIONS = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STUDENTS = ("vgg7_bn_cifar", "cnn5_cifar")
TEACHERS = ("resnet18_cifar", "vgg16_bn_cifar", "avnet_cifar", "jointnet_cifar")
LEARNED_FACTOR = 2  # a teacher counts as having learned at this multiple of chance accuracy


def _num(value, digits=2):
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _diff(ours, original, digits=2):
    if ours is None or original is None:
        return "—"
    if isinstance(ours, int) and isinstance(original, int):
        return f"{ours - original:+,}"
    return f"{ours - original:+.{digits}f}"


def header_lines(context):
    p, data = context["profile"], context["data"]
    epochs = ", ".join(f"{display_name(arch)} {n} (original {MODELS[arch]['epochs']})"
                       for arch, n in p.epochs.items())
    wall = "" if context["wall_seconds"] is None else f"; this invocation {context['wall_seconds']:.0f} s wall"
    return [f"# Reproduction of the original's tables — profile `{p.name}`", "",
            f"- **Profile**: `{p.name}` — {p.description}.",
            f"- **Data**: `{data['path']}`{' (generated)' if data['generated'] else ''}: {data['train']:,} training "
            f"images ({data['train'] - data['valid']:,} trained on, {data['valid']:,} held out for choosing the best "
            f"checkpoint), {data['test']:,} test images. The original: full CIFAR-10, 50,000 / 10,000.",
            f"- **Epochs**: {epochs}; KD rows use their student's. Learning-rate steps scale with the epochs.",
            f"- **Batch size**: {p.batch_size or 'the schedules’ 128 (as the original)'}; seed {context['seed']}; "
            f"latency device(s): {', '.join(context['devices']) or '—'}.",
            f"- **Time**: {context['compute_seconds']:.0f} s of stage time in total{wall}. "
            f"Generated {context['when']}{', kd-plugin ' + context['commit'] if context.get('commit') else ''}.",
            *_progress_line(context["progress"]),
            "", "Δ = ours − original. " + ("With this data size and these epochs our numbers are not comparable "
                                           "to the original's; they show that every stage runs."
                                           if p.name != "full" else
                                           "Test accuracy is on our test split; latency depends on the machine."),
            ""]


def _progress_line(progress):
    runs, expected_runs, cards, expected_cards = progress
    if runs == expected_runs and cards == expected_cards:
        return []
    return [f"- **Partial**: {runs} of {expected_runs} runs and {cards} of {expected_cards} model cards are done; "
            f"missing numbers show as —. Rerun the same command to continue."]


def kd_verdict(kd_results, baselines):
    """One sentence: per student, in how many of this run's KD rows the student beat its own baseline."""
    parts = []
    for student in STUDENTS:
        rows = [r["test_top1"] for r in kd_results if r["student"] == student and r.get("test_top1") is not None]
        base = baselines.get(student)
        if not rows or base is None:
            continue
        wins = sum(top1 > base for top1 in rows)
        best = max(rows) - base
        noun = "row" if len(rows) == 1 else "rows"
        outcome = (f"beat {display_name(student)}'s baseline ({base:.2f}%) in {wins} of {len(rows)} {noun}"
                   if wins else f"did not beat {display_name(student)}'s baseline ({base:.2f}%) in any of its "
                                f"{len(rows)} {noun}")
        parts.append(f"{outcome} (best row {best:+.2f} points)")
    if not parts:
        return None
    return "**KD against the student baselines in this run:** KD " + " and ".join(parts) + "."


def teacher_warnings(cards, results, num_classes=10):
    """A warning per teacher whose test top-1 is below LEARNED_FACTOR x chance: its KD rows distil noise."""
    chance = 100.0 / num_classes
    lines = []
    for arch in TEACHERS:
        top1 = (cards.get(arch) or results.get(arch) or {}).get("test_top1")
        if top1 is not None and top1 < LEARNED_FACTOR * chance:
            lines.append(f"> **Warning**: teacher {display_name(arch)} scores {top1:.2f}% on the test images, below "
                         f"{LEARNED_FACTOR}x chance ({LEARNED_FACTOR * chance:.0f}%): it has not learned, so the KD "
                         f"rows that use it say nothing about distillation.")
    return lines + ([""] if lines else [])


def models_table(cards, results):
    header = ["model", "epochs (orig / ours)", "train top-1 orig", "ours", "Δ", "test top-1 orig", "ours", "Δ",
              "memory MiB orig", "ours", "params orig", "ours", "Δ", "CPU s/img orig", "ours",
              "GPU s/img orig", "ours", "batch-1 CPU median / p90 (s)"]
    rows = []
    for arch in MODEL_ORDER:
        ref, card, run = MODELS[arch], cards.get(arch), results.get(arch)
        if card is None and run is None:
            continue
        card = card or {"test_top1": run.get("test_top1"), "latency": {}}  # trained, no card yet
        cpu, gpu = card["latency"].get("cpu", {}), card["latency"].get("cuda", {})
        epochs = (run or {}).get("epochs")
        test_orig = f"{ref['test_top1']:.2f}" + (f" ({ref['note']})" if ref.get("note") else "")
        rows.append([display_name(arch), f"{ref['epochs'] or '—'} / {epochs or '—'}",
                     _num(ref["train_top1"], 3), _num(card.get("train_top1")),
                     _diff(card.get("train_top1"), ref["train_top1"]),
                     test_orig, _num(card["test_top1"]), _diff(card["test_top1"], ref["test_top1"]),
                     _num(ref["size_mib"]), _num(card.get("size_mib")),
                     _num(ref["parameters"]), _num(card.get("parameters")),
                     _diff(card.get("parameters"), ref["parameters"]),
                     _num(ref["latency_cpu"], 4), _num(cpu.get("batched_s_per_image"), 4),
                     _num(ref["latency_gpu"], 6), _num(gpu.get("batched_s_per_image"), 6),
                     f"{_num(cpu.get('batch1_median_s'), 4)} / {_num(cpu.get('batch1_p90_s'), 4)}"])
    return ["## Models", "", "Memory is the fp32 weight size (parameters × 4 B / 2^20), as the original measured it. "
            "Latency is the original's batched figure: test-split evaluation wall time at batch 1024 / images.", "",
            *markdown_lines(header, rows), ""]


def kd_table(kd_results, baselines):
    header = ["teacher → student", "our teacher", "alpha", "T", "original", "ours", "Δ",
              "ours − our student baseline"]
    rows = []
    for student in STUDENTS:
        rows.append([f"(no teacher) {display_name(student)}", "—", "—", "—", _num(MODELS[student]["test_top1"]),
                     _num(baselines.get(student)), _diff(baselines.get(student), MODELS[student]["test_top1"]), "—"])
    for (teacher, student, alpha, temperature), original in KD_ROWS.items():
        run = next((r for r in kd_results if (r["teacher"], r["student"], r["alpha"], r["temperature"]) ==
                    (teacher, student, alpha, temperature)), {})
        ours, base = run.get("test_top1"), baselines.get(student)
        rows.append([f"{display_name(teacher)} → {display_name(student)}", _num(run.get("teacher_top1")),
                     f"{alpha:g}", f"{temperature:g}", _num(original), _num(ours), _diff(ours, original),
                     _diff(ours, base) if ours is not None and base is not None else "—"])
    return ["## Knowledge distillation (student test top-1, %)", "",
            "alpha weights the distillation term: loss = (1-alpha)·CE + alpha·T²·KL (Distiller's --kd-dw alpha "
            "--kd-sw 1-alpha), without the original's extra T² factor. \"our teacher\": the teacher's test top-1 "
            "as the KD run recorded it, on the same test split as the student's.", "",
            *markdown_lines(header, rows), ""]


def per_class_table(cards):
    rows = []
    for arch in MODEL_ORDER:
        card = cards.get(arch)
        if card is None:
            continue
        ours = [card["test_per_class"].get(name) for name in CLASS_ORDER]
        rows.append([display_name(arch), "original", *PER_CLASS[arch]])
        rows.append(["", "ours", *(_num(v, 1) for v in ours)])
        rows.append(["", "Δ", *(_diff(v, o, 1) for v, o in zip(ours, PER_CLASS[arch], strict=True))])
    return ["## Per-class test accuracy (%)", "", *markdown_lines(["model", "", *CLASS_ABBREVIATIONS], rows), ""]


def stages_table(results, out_dir):
    rows = [[name, _num(r.get("epochs")) if r.get("epochs") else "—", f"{r.get('seconds', 0):.1f}",
             _num(r.get("test_top1")), f"`{os.path.relpath(r.get('run_dir') or r['checkpoint'], out_dir)}`"]
            for name, r in results.items()]
    return ["## Stages", "", *markdown_lines(["stage", "epochs", "seconds", "test top-1", "output"], rows), ""]


def figures(pngs, curves, out_dir):
    lines = ["## Figures", ""]
    for title, path in pngs:
        lines += [f"### {title}", "", f"![{title}]({os.path.relpath(path, out_dir)})", ""]
    if curves:
        lines += ["### Training curves (loss components, top-1, learning rate per epoch)", "",
                  " · ".join(f"[{name}]({os.path.relpath(path, out_dir)})" for name, path in curves), ""]
    return lines


def write_report(path, context, cards, results, kd_results, baselines, pngs, curves):
    out_dir = os.path.dirname(os.path.abspath(path))
    trained = {r["arch"]: r for r in results.values() if r.get("arch") and not r.get("teacher")}
    verdict = kd_verdict(kd_results, baselines)
    header = header_lines(context)
    lines = [*header[:2], *([verdict, ""] if verdict else []), *teacher_warnings(cards, trained), *header[2:],
             *models_table(cards, trained), *kd_table(kd_results, baselines),
             *per_class_table(cards), *stages_table(results, out_dir), *figures(pngs, curves, out_dir)]
    return write_text(path, "\n".join(lines) + "\n")
