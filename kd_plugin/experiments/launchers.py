"""Where a sweep's or reproduce's jobs run: local processes (jobs.JobRunner, the default) or a Ray cluster.

``--launcher ray`` makes each pending job a Ray Tune trial (``ray.tune.Tuner`` over a function trainable) that
runs the very job the local launcher runs, in the trial's worker process (``jobs.run_in_process``), resuming an
interrupted attempt from its checkpoint; its ``result.json`` goes into the same directory, so tables, done
checks and reruns are the local launcher's. The directory must be visible to every node (a shared filesystem)
and kd-plugin installed on them. Without ``--address`` a local Ray instance is started (``ray.init(num_cpus=...)``;
Ray's removed ``local_mode`` is not used).
"""
import os
import socket
import time
from urllib.parse import urlparse

from ..util.errors import KDPluginError
from .jobs import JobRunner, run_in_process

LAUNCHERS = ("local", "ray")
CONNECT_TIMEOUT_S = 5


def add_launcher_args(p):
    group = p.add_argument_group("Where runs go")
    group.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local: processes on this machine (-j); ray: one Ray Tune trial per run, on a Ray "
                            "cluster (--address) or a local Ray instance (needs pip install kd-plugin[ray])")
    group.add_argument("--address", help="with --launcher ray: the cluster to join (HOST:PORT, ray://HOST:PORT or "
                                         "auto); default: start a local Ray instance")
    group.add_argument("--gpus-per-run", type=float, default=None, help="with --launcher ray: GPUs per trial")
    group.add_argument("--cpus-per-run", type=float, default=None, help="with --launcher ray: CPUs per trial "
                                                                        "(default 1)")
    group.add_argument("--ray-num-cpus", type=int, default=None,
                       help="with --launcher ray and no --address: CPUs of the local instance (default: all)")


def make_runner(args, parallel, say=print, keep_fds=()):
    """The runner the flags ask for; bad combinations are refused before anything runs."""
    ray_only = [flag for flag, value in (("--address", args.address), ("--gpus-per-run", args.gpus_per_run),
                                         ("--cpus-per-run", args.cpus_per_run), ("--ray-num-cpus", args.ray_num_cpus))
                if value is not None]
    if args.launcher == "local":
        if ray_only:
            raise KDPluginError(f"{ray_only[0]} needs --launcher ray")
        return JobRunner(parallel=parallel, say=say, keep_fds=keep_fds)
    for flag, value in (("--gpus-per-run", args.gpus_per_run), ("--cpus-per-run", args.cpus_per_run),
                        ("--ray-num-cpus", args.ray_num_cpus)):
        if value is not None and (value < 0 or (flag != "--gpus-per-run" and value <= 0)):
            raise KDPluginError(f"{flag} must be > 0, got {value:g}")
    return RayRunner(args.address, args.cpus_per_run or 1, args.gpus_per_run or 0, args.ray_num_cpus, say)


def import_ray():
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no per-experiment tables on stdout
    try:
        import ray
        from ray import tune
    except ImportError:
        raise KDPluginError('--launcher ray needs Ray Tune: pip install "kd-plugin[ray]" (or pip install '
                            '"ray[tune]")') from None
    return ray, tune


def check_reachable(address, timeout=CONNECT_TIMEOUT_S):
    """Fail in TIMEOUT seconds with one line when nothing listens at ADDRESS (ray.init would wait much longer)."""
    if address in (None, "auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise KDPluginError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise KDPluginError(f"--address {address}: no Ray cluster reachable there within {timeout} s "
                            f"({err.strerror or err})") from None


def local_gpu_count():
    import torch

    return torch.cuda.device_count()


def run_job_trial(config, jobs):
    """The Ray Tune function trainable: one job, exactly as the local launcher runs it."""
    from ray import tune

    job = jobs[config["job"]]
    argv = job.start_attempt()
    began = time.perf_counter()
    code = run_in_process(job, argv)
    if code == 0:
        job.complete(time.perf_counter() - began)
    tune.report({"exit_code": code, "seconds": time.perf_counter() - began})


class RayRunner(JobRunner):
    """JobRunner whose pending jobs run as Ray Tune trials."""

    def __init__(self, address=None, cpus_per_run=1, gpus_per_run=0, num_cpus=None, say=print):
        super().__init__(parallel=1, say=say)
        self.address, self.cpus, self.gpus, self.num_cpus = address, cpus_per_run, gpus_per_run, num_cpus
        self.ray, self.tune = import_ray()
        check_reachable(address)
        if address is None and gpus_per_run and local_gpu_count() < gpus_per_run:
            raise KDPluginError(f"--gpus-per-run {gpus_per_run:g}: this machine has {local_gpu_count()} GPU(s); "
                                f"drop the flag or give --address of a cluster with GPUs")

    def _connect(self):
        ray = self.ray
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), num_gpus=local_gpu_count(),
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
        have = ray.cluster_resources()
        if self.gpus and have.get("GPU", 0) < self.gpus:
            raise KDPluginError(f"--gpus-per-run {self.gpus:g}: the Ray cluster has {have.get('GPU', 0):g} GPU(s)")
        if have.get("CPU", 0) < self.cpus:
            raise KDPluginError(f"--cpus-per-run {self.cpus:g}: the Ray cluster has {have.get('CPU', 0):g} CPU(s)")

    def _launch(self, jobs):
        if not jobs:
            return []
        self._connect()
        tune = self.tune
        root = jobs[0].root_dir
        self.say(f"ray: {len(jobs)} trial(s), {self.cpus:g} CPU and {self.gpus:g} GPU each, on "
                 f"{self.address or 'a local Ray instance'}")
        trainable = tune.with_resources(tune.with_parameters(run_job_trial, jobs=jobs),
                                        {"cpu": self.cpus, "gpu": self.gpus})
        tuner = tune.Tuner(trainable, param_space={"job": tune.grid_search(list(range(len(jobs))))},
                           tune_config=tune.TuneConfig(reuse_actors=False),
                           run_config=tune.RunConfig(name=f"trials-{int(time.time())}", verbose=0,
                                                     storage_path=os.path.join(root, "ray")))
        began = time.perf_counter()
        tuner.fit()
        failures = []
        for index, job in enumerate(jobs, 1):
            result = job.result()
            if result is None:
                failures.append(job)
                self.say(f"[{index}/{len(jobs)}] {job.name}: failed (see {job.log_path})")
            else:
                top1 = f", test top-1 {result['test_top1']:.2f}%" if "test_top1" in result else ""
                self.say(f"[{index}/{len(jobs)}] {job.name}: done in {result['seconds']:.1f}s{top1}")
        self.say(f"ray: {len(jobs) - len(failures)} of {len(jobs)} trial(s) done in {time.perf_counter() - began:.1f}s")
        return failures
