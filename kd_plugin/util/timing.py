"""Latency of one call: median and p90 over repeats after a warm-up."""
import statistics
import time


def median_p90(call, repeats=50, warmup=5, sync=lambda: None):
    times = []
    for i in range(warmup + repeats):
        sync()
        began = time.perf_counter()
        call()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - began)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]
