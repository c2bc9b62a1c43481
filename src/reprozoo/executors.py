"""Where `reprozoo repro` runs a stage's command: local processes, SLURM (submitit) or Ray.

Every executor runs the stage's own `cmd` from `dvc.yaml` in a shell (locally, a plain `reprozoo ...`
command is forked from a server that has imported torch once: the same command, without ~2 s of
imports per run), in the stage's working directory, with the job's environment (thread count,
`CUDA_VISIBLE_DEVICES`) and its output in a log file, and reports the command's exit status. The coordinator (`reprozoo.repro`) decides what
runs where and records results in DVC; executors only run commands. SLURM and Ray assume the
project folder is on a file system that every node sees at the same path (docs/scaling.md).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

# exit statuses of a process that was killed rather than failed: a signal (negative in Python),
# 128+signal from a shell, or SLURM/submitit's preemption. These are retried; anything else is not.
KILLED = {137, 143, 130, 129}


def was_killed(returncode: int) -> bool:
    return returncode < 0 or returncode in KILLED


@dataclass
class Job:
    """One pending DVC stage to run."""

    stage: str  # DVC's address, e.g. `train_mnist1d_cnn@0` or `pipelines/x/dvc.yaml:train_y@1`
    cmd: str
    wdir: Path
    log: Path
    threads: int = 1
    gpus: int = 0  # GPUs it gets from the pool (--gpus): the recipe's devices, at least --gpus-per-run
    estimate: float = 0.0  # seconds, from earlier runs of the recipe; 0 = unknown
    env: dict = field(default_factory=dict)  # added to the environment: thread count, and GPUs when shared out
    attempt: int = 0
    width: int = 1  # processes the run starts (a recipe's `devices: N` on CPUs: N DDP processes)


def run_shell(cmd: str, cwd: str, env: dict, log: str) -> int:
    """Run `cmd` in a shell with `env` added, appending its output to `log`; its exit status.

    Module-level so submitit and Ray can pickle it. A SIGTERM (SLURM's preemption notice, Ray's
    cancel) is passed on to the command's process group, so it stops like an interrupted run."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = _start(cmd, cwd, env, out)
        try:
            return proc.wait()
        except BaseException:
            _kill_group(proc)
            raise


def _start(cmd: str, cwd, env: dict, out) -> subprocess.Popen:
    """`cmd` in a shell in its own process group (so it can be stopped whole), output to `out`."""
    return subprocess.Popen(cmd, shell=True, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # a forked run not yet its own session leader (or gone: raises again)
        os.kill(pid, sig)


def _kill_group(proc, sig=signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop `proc` (a `subprocess.Popen` or a `_Forked`) with its process group: `sig`, then SIGKILL after `grace` s."""
    try:
        _signal_group(proc.pid, sig)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# modules a forked `reprozoo` command would import first: about 2 s of a run's start (most of a seed's
# that only takes its block's result) and of a report stage's
PRELOAD = ["torch", "dvclive", "setproctitle", "reprozoo.cli", "reprozoo.preflight", "reprozoo.recipes", "reprozoo.runs",
           "reprozoo.compare", "reprozoo.reports", "reprozoo.ablations", "reprozoo.ablation_reports", "reprozoo.site"]
_SHELL = re.compile(r"[;&|<>`$()*?\\\n~{}\[\]!#]")


def cli_argv(cmd: str) -> list[str] | None:
    """The arguments of `cmd` if it is a plain `reprozoo ...` command (no shell syntax) and `reprozoo` on
    PATH is this interpreter's own, else None."""
    if _SHELL.search(cmd):
        return None
    try:
        argv = shlex.split(cmd)
    except ValueError:  # an unbalanced quote: the shell reports it as it would
        return None
    if not argv or argv[0] != "reprozoo":
        return None
    found = shutil.which("reprozoo")
    if not found or Path(found).parent != Path(sys.executable).parent:
        return None
    return argv[1:]


def _cli_child(argv: list[str], cwd: str, env: dict, log: str) -> None:
    """A forked `reprozoo ARGV`, as the shell would start it: own session, output to `log`, `env`, `cwd`."""
    import multiprocessing

    import setproctitle

    # what ps and pgrep show, as for a shell's run; before the environment changes, whose memory it reuses
    setproctitle.setproctitle(shlex.join(["reprozoo", *argv]))
    multiprocessing.set_start_method(None, force=True)  # the platform's default, as in a process of its own
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [str(Path(sys.executable).parent / "reprozoo"), *argv]
    from reprozoo.cli import main

    sys.exit(main(argv))


def _source_state() -> dict[str, tuple[int, int]]:
    """Modification time and size of every source file of the reprozoo package."""
    package = Path(__file__).resolve().parent
    out = {}
    for f in package.rglob("*.py"):
        try:
            st = f.stat()
        except OSError:
            continue
        out[str(f)] = (st.st_mtime_ns, st.st_size)
    return out


class _Forked:
    """A job run by forking the executor's preloaded server (`multiprocessing`'s forkserver): the same
    command in the same interpreter, without importing torch again for every run."""

    def __init__(self, context, argv: list[str], job: Job):
        self.proc = context.Process(target=_cli_child, args=(argv, str(job.wdir), {**os.environ, **job.env}, str(job.log)))
        main = sys.modules["__main__"]
        # multiprocessing re-imports the parent's main module in the child (a `python -m reprozoo.cli` parent:
        # the CLI again, with runpy's warning); the child needs only this module, so it gets none
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self.proc.start()
        finally:
            sys.modules["__main__"] = main
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        rc = self.proc.exitcode
        if rc is not None:
            self.proc.close()
        return 128 - rc if rc is not None and rc < 0 else rc  # killed by a signal: as a shell reports it

    def wait(self, timeout: float | None = None) -> int:
        """As `Popen.wait`: the exit status, or `subprocess.TimeoutExpired` after `timeout` s."""
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.proc.name, timeout)
        return self.poll()


class LocalExecutor:
    """Processes on this machine: one per job, each in its own process group. Plain `reprozoo` commands
    (every train stage's) are forked from a server that has imported torch and reprozoo once (Linux;
    `fork=False` or REPROZOO_FORK=0 turns it off); any other command runs in a shell."""

    def __init__(self, fork: bool | None = None, threads: int = 1, preload: list[str] = ()):
        self.procs: dict[str, tuple[object, object]] = {}
        if fork is None:  # REPROZOO_FORK=0: every command in a shell, as `dvc repro` starts it
            fork = os.environ.get("REPROZOO_FORK", "1") != "0"
        self.fork = fork and sys.platform.startswith("linux")
        self.threads = threads
        self.preload = PRELOAD + list(preload)  # e.g. the families the runs need
        self._context = None
        self._code: dict = {}  # reprozoo's source files when the server imported them

    def _server(self):
        """The forkserver context, started with the run's thread count in its environment (OpenMP reads it
        when torch is loaded). multiprocessing keeps one server per process: the first executor's preload
        and thread count hold for later ones."""
        if self._context is None:
            import multiprocessing

            self._code = _source_state()
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(self.preload)  # a module that fails to import is skipped
            saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            os.environ.update({k: str(self.threads) for k in saved})
            try:
                from multiprocessing import forkserver

                forkserver.ensure_running()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            self._context = ctx
        return self._context

    def submit(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        argv = cli_argv(job.cmd) if self.fork and not job.gpus and job.width == 1 else None
        if argv is not None and self._context is not None and _source_state() != self._code:
            argv = None  # reprozoo's code was edited since the server imported it: a fresh process runs the new code
        if argv is not None:
            self.procs[job.stage] = (_Forked(self._server(), argv, job), None)
            return
        out = open(job.log, "ab")
        self.procs[job.stage] = (_start(job.cmd, job.wdir, job.env, out), out)

    def poll(self) -> dict[str, int]:
        """Jobs that ended since the last call: stage -> exit status."""
        done = {}
        for stage, (proc, out) in list(self.procs.items()):
            rc = proc.poll()
            if rc is not None:
                if out is not None:
                    out.close()
                done[stage] = rc
                del self.procs[stage]
        return done

    def cancel_all(self) -> None:
        for proc, out in self.procs.values():
            _kill_group(proc)
            if out is not None:
                out.close()
        self.procs.clear()

    def close(self) -> None:
        pass


class SubmititExecutor:
    """SLURM through submitit (`cluster='slurm'`), or submitit's own local/debug executors.

    One SLURM job per stage with the job's CPUs and GPUs; `-o KEY=VALUE` adds sbatch options
    (partition, account, time). A job that hits its time limit or is preempted is requeued by
    submitit's checkpointing and resumes from the run's checkpoint (`reprozoo run` resumes by itself)."""

    def __init__(self, folder: Path, cluster: str | None = "slurm", params: dict | None = None):
        import submitit

        self.submitit = submitit
        self.folder = folder
        self.cluster = cluster
        self.params = dict(params or {})
        self.jobs: dict[str, object] = {}

    def _executor(self, job: Job):
        ex = self.submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        name = "reprozoo-" + "".join(c if c.isalnum() or c in "-_@." else "_" for c in job.stage)
        params = {"timeout_min": 60 * 24, "cpus_per_task": job.threads * job.width, "nodes": 1, "tasks_per_node": 1, "name": name}
        if job.gpus:
            params["gpus_per_node"] = job.gpus
        if self.cluster == "slurm":
            params["slurm_additional_parameters"] = {}
        extra = dict(self.params)
        for key in ("slurm_partition", "slurm_account", "timeout_min", "slurm_qos", "slurm_constraint"):
            if key in extra:
                params[key] = int(extra.pop(key)) if key == "timeout_min" else extra.pop(key)
        if extra and self.cluster == "slurm":
            params["slurm_additional_parameters"].update(extra)
        ex.update_parameters(**params)
        return ex

    def submit(self, job: Job) -> None:
        ex = self._executor(job)
        self.jobs[job.stage] = ex.submit(ResumableCommand(), job.cmd, str(job.wdir), job.env, str(job.log))

    def job_ids(self) -> dict[str, str]:
        return {stage: j.job_id for stage, j in self.jobs.items()}

    def attach(self, stage: str, job_id: str) -> None:
        """Follow a job submitted by an earlier `reprozoo repro --detach`."""
        cls = self.submitit.SlurmJob if self.cluster == "slurm" else self.submitit.LocalJob
        self.jobs[stage] = cls(folder=str(self.folder / "%j"), job_id=job_id)

    def poll(self) -> dict[str, int]:
        done = {}
        for stage, j in list(self.jobs.items()):
            if j.done():
                try:
                    done[stage] = int(j.result())
                except Exception as e:  # the job itself failed (node failure, cancelled): show why in its log
                    with open(self.folder / f"{stage.replace('/', '_')}.error", "w") as f:
                        f.write(str(e))
                    done[stage] = 143 if "cancel" in str(e).lower() or "preempt" in str(e).lower() else 1
                del self.jobs[stage]
        return done

    def cancel_all(self) -> None:
        for j in self.jobs.values():
            j.cancel(check=False)
        self.jobs.clear()

    def close(self) -> None:
        pass


class ResumableCommand:
    """A stage command for submitit, requeued on timeout or preemption (`submitit.helpers.Checkpointable`).

    Nothing needs saving: `reprozoo run` resumes from its own last checkpoint when started again."""

    def __call__(self, cmd: str, cwd: str, env: dict, log: str) -> int:
        return run_shell(cmd, cwd, env, log)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class RayExecutor:
    """Ray tasks with `num_cpus` (the job's threads) and `num_gpus` (its devices) on a running cluster
    (`address`), or on a local one started for this command."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
        # Ray >= 2.43 re-creates a driver's `uv run` environment for its workers by packaging the working
        # directory; workers here only start shell commands in the project's own environment.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        try:
            import ray
        except ImportError:
            raise ConfigError("command line", "--executor", "Ray is not installed: `uv sync --extra ray` "
                              "(or `pip install 'reprozoo[ray]'`)", ["local", "slurm", "ray"]) from None
        self.ray = ray
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": num_cpus, "num_gpus": num_gpus, "include_dashboard": False}
            ray.init(log_to_driver=False, **kw)
        self.remote = ray.remote(run_shell)
        self.refs: dict[str, object] = {}

    def submit(self, job: Job) -> None:
        env = {k: v for k, v in job.env.items() if k != "CUDA_VISIBLE_DEVICES"}  # Ray assigns the GPUs itself
        task = self.remote.options(num_cpus=job.threads * job.width, num_gpus=job.gpus, max_retries=0)
        self.refs[job.stage] = task.remote(job.cmd, str(job.wdir), env, str(job.log))

    def poll(self) -> dict[str, int]:
        if not self.refs:
            return {}
        by_ref = {ref: stage for stage, ref in self.refs.items()}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        done = {}
        for ref in ready:
            stage = by_ref[ref]
            try:
                done[stage] = int(self.ray.get(ref))
            except Exception:  # the worker died (node lost, OOM-killed): treat as killed, so it is retried
                done[stage] = 137
            del self.refs[stage]
        return done

    def cancel_all(self) -> None:
        for ref in self.refs.values():
            self.ray.cancel(ref, force=False)
        self.refs.clear()

    def close(self) -> None:
        self.ray.shutdown()


def wait_any(executor, poll_every: float = 0.5) -> dict[str, int]:
    """Block until at least one job ends."""
    while True:
        done = executor.poll()
        if done:
            return done
        time.sleep(poll_every)
