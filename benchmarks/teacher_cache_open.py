"""Cost of opening a verified teacher-output cache (issue 12): zip CRCs, payload digest, sample re-check.

    python benchmarks/teacher_cache_open.py [--data DIR] [--teacher cnn5] [--cache DIR] [--repeats 3]

Fills a FULL cache (every training image x every augmented view: 162 views; --views N fills fewer, the file
and its checks stay the same size) of the training split a run uses after its 10% validation split, once, at
batch 512 (kept under --cache, reused on the next call), then times
``open_cache`` on it --repeats times, and its parts: the cache key (hashes teacher weights and images), reading
the file with its checks (CRCs, digest) and the re-check of up to 64 rows with the live teacher.
--smoke: generated images (100), 2 views, 1 repeat, a temporary cache folder (seconds).
"""
import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from kd_plugin.checkpoint import verify_archive  # noqa: E402
from kd_plugin.data import TensorLoader, load_split, validation_split  # noqa: E402
from kd_plugin.distill.teacher import TeacherRunner  # noqa: E402
from kd_plugin.distill.teacher_cache import CacheFile, cache_key, open_cache, precompute  # noqa: E402
from kd_plugin.models import create_model  # noqa: E402


def seconds(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/cifar10-subset")
    p.add_argument("--teacher", default="cnn5")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "kd_plugin_cache_bench"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--views", type=int, default=162, help="fill only the first N views (the file has the same size "
                                                          "and the same checks run; only the fill is shorter)")
    p.add_argument("--smoke", action="store_true", help="generated images, 2 views, 1 repeat, temporary cache")
    args = p.parse_args()
    if args.smoke:
        from kd_plugin.data import write_synthetic_cifar

        with tempfile.TemporaryDirectory(prefix="teacher_cache_open_") as scratch:
            args.data = write_synthetic_cifar(os.path.join(scratch, "data"), train_images=100, test_images=10, seed=0)
            args.cache, args.views, args.repeats = os.path.join(scratch, "cache"), 2, 1
            return measure(args)
    return measure(args)


def measure(args):
    torch.manual_seed(0)
    teacher = create_model(args.teacher)
    train, _ = validation_split(load_split(args.data, "train"), 0.1, seed=0)
    loader = TensorLoader(train, 512, "y")
    runner = TeacherRunner(teacher)
    cached = open_cache(runner, train, loader.normalizer, "y", args.cache,
                        row_inputs=lambda i, v: loader.make_batch(i, v).inputs)
    fill = 0.0
    wanted = len(train) * args.views
    if cached.cache.num_filled < wanted:
        fill, _ = seconds(lambda: precompute(cached, loader, views=range(args.views), batch_size=512))
        cached.save()
    path = cached.cache_file.path
    times = {"open_cache": [], "cache key": [], "CRCs": [], "read with CRCs + digest": [], "re-check 64 rows": []}
    for _ in range(args.repeats):
        spent, opened = seconds(lambda: open_cache(runner, train, loader.normalizer, "y", args.cache,
                                                   row_inputs=lambda i, v: loader.make_batch(i, v).inputs))
        assert opened.cache.num_filled == wanted and not opened.cache_file.set_aside_as, "the cache did not open"
        times["open_cache"].append(spent)
        key = opened.cache.key
        times["cache key"].append(seconds(lambda: cache_key(teacher, train, loader.normalizer, "y"))[0])
        times["CRCs"].append(seconds(lambda: verify_archive(path, "teacher cache"))[0])
        spent, payload = seconds(lambda k=key: CacheFile(args.cache, k).read(len(train), 162))
        times["read with CRCs + digest"].append(spent)
        times["re-check 64 rows"].append(seconds(lambda c=opened, p=payload: c.check_rows(p))[0])
    print(json.dumps({"teacher": args.teacher, "images": len(train), "views filled": args.views,
                      "rows": opened.cache.size, "rows filled": opened.cache.num_filled,
                      "file bytes": os.path.getsize(path), "fill seconds": round(fill, 1),
                      "threads": torch.get_num_threads(), "load average": os.getloadavg(),
                      "seconds (min of repeats)": {k: round(min(v), 3) for k, v in times.items()},
                      "seconds (all)": {k: [round(x, 3) for x in v] for k, v in times.items()}}, indent=2))


if __name__ == "__main__":
    main()
