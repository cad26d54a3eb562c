"""Resumable command-line jobs (a training run, an ensemble build) run in-process or as parallel processes.

A job has a deterministic name and directory. Once its command succeeds, ``result.json`` is written there
atomically: that file is the done marker, so a rerun skips finished jobs. It records the command with the
paths inside the job's root (the sweep or reproduce directory) relative to it and without the interpreter, so
the check holds on another node or after the directory moved. A training run that a killed attempt left
with a checkpoint resumes from it (``--resume-from``; exact, see the trainer); other leftovers are removed
and the job starts afresh. Child processes get SIGTERM if the parent dies (Linux), so a killed sweep leaves no
orphan writing into a directory the next attempt will use. Launchers other than local processes (Ray) are in
``launchers.py``.
"""
import contextlib
import ctypes
import ctypes.util
import fcntl
import glob
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..spec import RunSpec
from ..util.errors import KDPluginError
from ..util.fileio import read_json_record, write_json

ENTRY_POINTS = {"compress_classifier": "kd_plugin.compress_classifier", "kd-plugin": "kd_plugin.cli.kd_plugin"}


class JobsFailed(KDPluginError):
    exit_code = 1


def run_summary(job):
    """The summary.json of the job's newest run directory ({directory}/{name}___*), or None."""
    runs = sorted(glob.glob(os.path.join(glob.escape(job.directory), f"{glob.escape(job.name)}___*", "summary.json")),
                  key=os.path.getmtime)
    if not runs:
        return None
    try:
        with open(runs[-1]) as fh:
            summary = json.load(fh)
    except ValueError:  # written atomically, so only a damaged file gets here: the job then reports no result
        return None
    if not isinstance(summary, dict):
        return None
    summary.pop("rows", None)
    return summary


@dataclass
class Job:
    name: str
    directory: str
    argv: list
    entry: str = "compress_classifier"
    meta: dict = field(default_factory=dict)
    collect: object = run_summary  # job -> result dict (None if the command left no result)
    leftovers: list = None  # globs removed before a fresh attempt; default: the run directories
    root: str = None  # the sweep/reproduce directory its paths are recorded relative to (default: ../..)
    result_keys: tuple = ("test_top1",)  # numbers a finished job's result.json must hold (a training run's)
    spec: RunSpec = None  # a training run given as a spec (``compress_classifier --spec FILE``), not argv

    @classmethod
    def training_run(cls, name, directory, argv, entry="compress_classifier", **kwargs):
        """A compress_classifier-style run named NAME in DIRECTORY (``-n``/``-o`` appended)."""
        return cls(name, directory, [*argv, "-n", name, "-o", directory, "--no-progress"], entry, **kwargs)

    @classmethod
    def spec_run(cls, name: str, directory: str, spec: RunSpec, entry: str = "compress_classifier",
                 prefix: tuple = (), **kwargs) -> "Job":
        """The training run SPEC named NAME in DIRECTORY: its child (ENTRY with PREFIX, e.g. kd-plugin
        train-jointnet and its member flags) gets the spec file DIRECTORY/spec.json."""
        spec = spec.changed(name=name, out_dir=directory, progress=False)
        return cls(name, directory, [*prefix, "--spec", os.path.join(directory, "spec.json")], entry, spec=spec,
                   **kwargs)

    @property
    def spec_path(self) -> str:
        return self.argv[self.argv.index("--spec") + 1]

    def spec_record(self):
        """What the done check compares for a spec run: the spec's fields that define the run, paths relative to
        the root (threads, device, progress and output are free to differ)."""
        return self.spec.defining_record(self.root_dir) if self.spec is not None else None

    @property
    def result_path(self):
        return os.path.join(self.directory, "result.json")

    @property
    def log_path(self):
        return os.path.join(self.directory, f"{self.name}.out")

    def result(self):
        if not os.path.isfile(self.result_path):
            return None
        result = read_json_record(self.result_path, f"the done marker of {self.name}",
                                  f"move it away to run {self.name} again (its run directory is then replaced)")
        bad = [key for key in self.result_keys if not _number(result.get(key))]
        if not isinstance(result.get("command"), list) or bad:
            needs = "".join(f", '{key}' a number" for key in self.result_keys)
            raise KDPluginError(f"{self.result_path}: the done marker of {self.name} is malformed ('command' must "
                                f"be a list{needs}); move it away to run {self.name} again")
        return result

    def command(self, argv=None):
        return [sys.executable, "-m", ENTRY_POINTS[self.entry], *(self.argv if argv is None else argv)]

    @property
    def root_dir(self):
        return os.path.abspath(self.root or os.path.dirname(os.path.dirname(self.directory)))

    def portable_command(self):
        """The command as the done check compares it: no interpreter, paths under the root relative to it."""
        root = self.root_dir + os.sep
        return [ENTRY_POINTS[self.entry],
                *(os.path.join("{root}", a[len(root):]) if isinstance(a, str) and a.startswith(root) else a
                  for a in self.argv)]

    def same_command(self, result):
        if self.spec is not None and result.get("spec") != self.spec_record():
            return False
        return result.get("command") in (self.portable_command(), self.command()[2:])  # the latter: older sweeps

    def resumable_checkpoint(self):
        """The newest checkpoint an interrupted attempt of this training run left, or None."""
        if self.leftovers is not None:
            return None
        found = glob.glob(os.path.join(glob.escape(self.directory), f"{glob.escape(self.name)}___*",
                                       f"{glob.escape(self.name)}_checkpoint.pth.tar"))
        return max(found, key=os.path.getmtime) if found else None

    def start_attempt(self):
        """The argv of a new attempt: resuming from an interrupted attempt's checkpoint when there is one (its
        run directory is kept), else from scratch with every leftover removed."""
        os.makedirs(self.directory, exist_ok=True)
        if self.spec is not None:
            write_json(self.spec_path, self.spec.record(self.directory))
        checkpoint = self.resumable_checkpoint()
        patterns = [glob.escape(path) for path in self.leftovers] if self.leftovers else \
            [os.path.join(glob.escape(self.directory), f"{glob.escape(self.name)}___*")]
        for path in (p for pattern in patterns for p in glob.glob(pattern)):
            if checkpoint is not None and os.path.dirname(checkpoint) == path:
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        return [*self.argv, "--resume-from", checkpoint] if checkpoint else list(self.argv)

    def complete(self, seconds):
        result = self.collect(self)
        if result is None:
            raise JobsFailed(f"{self.name}: the command succeeded but left no result (see {self.log_path})")
        result = {**self.meta, **result, "seconds": round(seconds, 2), "command": self.portable_command(),
                  **({"spec": self.spec_record()} if self.spec is not None else {})}
        write_json(self.result_path, result)
        return result


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _die_with_parent():
    """preexec_fn: ask Linux to SIGTERM this child when the parent exits (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _last_line(path):
    with contextlib.suppress(OSError):
        with open(path, errors="replace") as fh:
            lines = [line.strip() for line in fh if line.strip()]
        return lines[-1] if lines else ""
    return ""


def run_in_process(job, argv=None):
    """Run the job's entry point (with ARGV, default its own) in this process, output to its log; returns the
    exit code."""
    main = importlib.import_module(ENTRY_POINTS[job.entry]).main
    with open(job.log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            return main(list(job.argv if argv is None else argv))
        except SystemExit as exit_:  # argparse
            return exit_.code if isinstance(exit_.code, int) else 1


class JobRunner:
    """Runs jobs one at a time in-process (parallel=0) or as up to ``parallel`` child processes."""

    def __init__(self, parallel=1, say=print, threads=None, keep_fds=()):
        self.parallel = parallel
        self.keep_fds = tuple(keep_fds)  # e.g. a lock that must stay held while any child lives
        self.say = say
        cores = os.cpu_count() or 1
        self.threads = threads or max(1, cores // max(parallel, 1))

    def run(self, jobs):
        """Run every unfinished job; returns {name: result} for all finished ones. Failures: JobsFailed."""
        for job in jobs:
            done = job.result()
            if done is not None and not job.same_command(done):
                raise KDPluginError(f"{job.directory} holds a finished run of another command (different options "
                                    f"or inputs); use another output directory, or remove it to run it again")
        pending = [job for job in jobs if job.result() is None]
        skipped = len(jobs) - len(pending)
        if skipped:
            self.say(f"{skipped} of {len(jobs)} runs already done, skipped")
        failures = self._launch(pending)
        if failures:
            names = ", ".join(f"{job.name} ({job.log_path})" for job in failures[:3])
            raise JobsFailed(f"{len(failures)} of {len(jobs)} runs failed: {names}; rerun the same command to retry "
                             f"them (finished runs are kept)")
        return {job.name: job.result() for job in jobs}

    def _finish(self, job, code, began, index, total):
        seconds = time.perf_counter() - began
        if code == 0:
            result = job.complete(seconds)
            top1 = f", test top-1 {result['test_top1']:.2f}%" if "test_top1" in result else ""
            self.say(f"[{index}/{total}] {job.name}: done in {seconds:.1f}s{top1}")
            return True
        self.say(f"[{index}/{total}] {job.name}: failed (exit {code}): {_last_line(job.log_path)}")
        return False

    def _launch(self, jobs):
        """Run JOBS (none finished yet); returns the failed ones."""
        return self._run_inline(jobs) if self.parallel == 0 else self._run_parallel(jobs)

    def _run_inline(self, jobs):
        failures = []
        for index, job in enumerate(jobs, 1):
            argv = job.start_attempt()
            self.say(f"[{index}/{len(jobs)}] {job.name}: {resuming(job, argv)} (log: {job.log_path})")
            began = time.perf_counter()
            code = run_in_process(job, argv)
            if code in (130, 143):
                raise KeyboardInterrupt
            if not self._finish(job, code, began, index, len(jobs)):
                failures.append(job)
        return failures

    def _run_parallel(self, jobs):
        queue, running, failures, done = list(jobs), {}, [], 0
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        try:
            while queue or running:
                while queue and len(running) < self.parallel:
                    job = queue.pop(0)
                    argv = job.start_attempt()
                    log = open(job.log_path, "a")  # noqa: SIM115  (the job's output; closed when the job ends, below)
                    proc = subprocess.Popen(job.command(argv), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            preexec_fn=preexec, pass_fds=self.keep_fds)
                    running[proc] = (job, log, time.perf_counter())
                    self.say(f"started {job.name} ({resuming(job, argv)}, pid {proc.pid}, {self.threads} threads, "
                             f"log: {job.log_path})")
                time.sleep(0.2)
                for proc in [p for p in running if p.poll() is not None]:
                    job, log, began = running.pop(proc)
                    log.close()
                    done += 1
                    if not self._finish(job, proc.returncode, began, done, len(jobs)):
                        failures.append(job)
        finally:
            _stop(running)
        return failures


def resuming(job, argv):
    return f"resuming from {argv[-1]}" if argv[-2:-1] == ["--resume-from"] and len(argv) > len(job.argv) \
        else "running"


def _stop(running):
    """On the way out (interrupt, error): SIGTERM the children (they save a checkpoint), then wait for them."""
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    for proc, (_, log, _) in running.items():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def exclusive_directory(out_dir, what, wait_s=60):
    """Hold OUT/.lock for a sweep or pipeline; yields the lock's fd. Pass it to JobRunner(keep_fds=...) so the
    runs inherit the lock: it stays held until the last one exits, and a rerun right after a killed parent
    waits for the killed parent's runs to stop instead of racing them."""
    with open(os.path.join(out_dir, ".lock"), "w") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise KDPluginError(f"another {what} (or runs it left behind) is still running in {out_dir}; "
                                        f"wait for it or use another output directory") from None
                time.sleep(0.5)
        yield fh.fileno()
