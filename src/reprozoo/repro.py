"""`reprozoo repro`: run a DVC pipeline's pending training runs side by side, then let DVC finish.

DVC runs stages one after another. This coordinator asks DVC which train stages are pending (after
the stages they need have run through `dvc repro`, and after DVC's run-cache has restored what it
can), runs each one's own `cmd` from `dvc.yaml` through an executor (`reprozoo.executors`), longest
first, and records each finished run with DVC's own `commit` (`dvc commit -f STAGE`) only if it
completed, its recipe hash is current, and none of its dependencies changed while it ran. Then the
comparisons and reports run as `dvc repro` runs them (`finish`: DVC's order, run-cache, save and
commit), their commands forked like the runs'. Afterwards `dvc status` is clean and `dvc.lock` holds
what a serial `dvc repro` writes (tested; stage order aside, which DVC itself varies from one
process to the next: its plan walks a graph built with Python's randomised string hashes). Only this process talks to DVC, so there is no race on
DVC's repository lock (treeverse/dvc#10465).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import ConfigError, ReprozooError
from .executors import Job, LocalExecutor, wait_any, was_killed
from .families import FAMILY_MODULES
from .fingerprint import CODE_MANIFESTS, code_hashes
from .runs import seed_block

TRAIN_PREFIX = "reprozoo run "


class ReproFailed(ReprozooError):
    """Some runs failed; the others are recorded."""


def pipeline_files(names: list[str]) -> list[str]:
    """DVC targets for the PIPELINE arguments: none = the root `dvc.yaml`; `all` = every pipeline; a baseline
    name or a folder = its `dvc.yaml`; anything else is passed to DVC as a stage target (`train_mnist1d_cnn`,
    `pipelines/x/dvc.yaml:train_y@0`), as `dvc repro TARGET` takes it."""
    root = paths.project_root()
    if not names:
        names = ["dvc.yaml"]
    out = []
    for n in names:
        if n == "all":
            out += ["dvc.yaml"] + sorted(str(p.relative_to(root)) for p in [*(root / "pipelines").glob("*/dvc.yaml"),
                                                                             *(root / "pipelines").glob("studies/*/dvc.yaml")])
            continue
        for cand in (root / n, root / n / "dvc.yaml", root / "pipelines" / n / "dvc.yaml"):
            if cand.is_file():
                out.append(str(cand.relative_to(root)))
                break
        else:
            out.append(n)
    return list(dict.fromkeys(out))


def _check_targets(targets: list[str]) -> None:
    from dvc.exceptions import DvcException

    with _dvc_repo() as repo:
        for t in targets:
            try:
                repo.stage.collect(t)
            except DvcException:
                known = ["all", "dvc.yaml"] + sorted(p.parent.name for p in (paths.project_root() / "pipelines").glob("*/dvc.yaml"))
                raise ConfigError("command line", "PIPELINE", f"no pipeline or stage {t!r}", known) from None


def _dvc_repo():
    from dvc.repo import Repo

    return Repo(str(paths.project_root()))


def _dep_hashes(stage) -> dict[str, str]:
    """DVC's own hash of each dependency of `stage` (what `dvc.lock` would record; params included, they
    are dependencies too). The value only: DVC names a dependency new to `dvc.lock` 'md5-dos2unix' and
    the same one 'md5' once a commit has written the file, with the same value."""
    out = {str(dep): str(dep.get_hash().value) if dep.exists else "missing" for dep in stage.deps}
    for dep in stage.deps:  # a code manifest (fingerprint.py) changes only when its stage runs: the files it lists, now
        path = Path(str(dep.fs_path))
        if dep.exists and CODE_MANIFESTS in path.as_posix():
            out.update(code_hashes(path, Path(stage.wdir)))
    return out


def recipe_ref(cmd: str) -> str:
    """The recipe reference (a name, or a file relative to the stage's wdir) of `reprozoo run REF --seed N`."""
    return shlex.split(cmd)[2]


def _stage_recipe(ref: str, wdir: Path):
    """The recipe a train stage runs, as it is now."""
    from .recipes import load_recipe

    return load_recipe(str(wdir / ref) if (wdir / ref).is_file() else ref)


def _estimate(ref: str, wdir: Path, known: dict[str, float]):
    """(seconds per seed from earlier runs of this recipe, else from `known` (recipe -> seconds), else 0;
    the recipe or None if it does not load)."""
    try:
        recipe = _stage_recipe(ref, wdir)
    except ReprozooError:
        return 0.0, None
    walls = []
    for env in (paths.runs_dir() / recipe.name).glob("seed*/env.json"):
        try:
            walls.append(float(json.loads(env.read_text())["wall_seconds"]))
        except (OSError, ValueError, KeyError):
            pass
    if not walls and known.get(recipe.name):
        walls.append(known[recipe.name])
    return (sum(walls) / len(walls) if walls else 0.0), recipe


def _reported_walls() -> dict[str, float]:
    """Seconds per run of each recipe as the committed reports give them (`train_wall_seconds_by_recipe`
    of `reports/*.json` and `reports/ablations/*.json`): on a fresh clone the only times there are."""
    out: dict[str, float] = {}
    reports = paths.reports_dir()
    for f in sorted([*reports.glob("*.json"), *reports.glob("ablations/*.json")]):
        try:
            data = json.loads(f.read_text())
            walls = data.get("environment", data).get("train_wall_seconds_by_recipe") or {}
            out.update({str(r): float(w) for r, w in walls.items()})
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # a report of another shape is no estimate, not an error
    return out


def _timings_file() -> Path:
    return paths.project_root() / ".reprozoo" / "timings.json"


def _read_timings() -> dict:
    try:
        return json.loads(_timings_file().read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Plan:
    targets: list[str]
    upstream: list[str] = field(default_factory=list)  # non-train stages the runs need
    jobs: list[Job] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # from DVC's run-cache
    hashes: dict[str, dict] = field(default_factory=dict)  # stage -> dep hashes when launched
    recipes: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # stage -> (recipe ref, name if it loaded)
    blocks: dict[str, tuple] = field(default_factory=dict)  # stage -> its seed block (recipe, first seed), if batched
    followers: set = field(default_factory=set)  # stages whose block an earlier stage of the plan trains
    families: set = field(default_factory=set)  # of the recipes the jobs run


def _stages(repo, targets) -> dict:
    """The stages `dvc repro TARGETS` would visit, upstream ones included, in DVC's own order."""
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    steps = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, targets))
    return {s.addressing: s for s in steps}


def _log_file(log_dir: Path, stage: str) -> Path:
    """Where a stage's command writes its output: `.reprozoo/logs/<stage address, / and : as _>.log`."""
    return log_dir / (stage.replace("/", "_").replace(":", "_") + ".log")


def _preload(families: set) -> list[str]:
    """The modules of the runs' families, for the local executor's server to import once."""
    return [FAMILY_MODULES[f] for f in sorted(families) if f in FAMILY_MODULES]


def _is_train(stage) -> bool:
    return (stage.cmd or "").startswith(TRAIN_PREFIX)


def plan(targets: list[str], *, threads: int, gpus: int, log_dir: Path, use_run_cache: bool = True, dry: bool = False) -> Plan:
    """The pending train stages of `targets` as jobs, longest first; upstream stages run first (not when `dry`)."""
    import networkx as nx

    p = Plan(targets)
    with _dvc_repo() as repo:
        stages = _stages(repo, targets)
        upstream = set()
        for s in stages.values():
            if _is_train(s):
                upstream |= {u.addressing for u in nx.descendants(repo.index.graph, s)}
        p.upstream = [a for a, s in stages.items() if a in upstream and not _is_train(s)]
    if p.upstream and not dry:
        _dvc("repro", *p.upstream)
    with _dvc_repo() as repo, repo.lock, _quiet_dvc():
        defined = {s.addressing: i for i, s in enumerate(repo.index.stages)}  # dvc.yaml order, unlike DVC's plan
        blocks: set = set()
        followers: set = set()
        known = {**_reported_walls(), **_read_timings()}  # this machine's own times win
        for s in _stages(repo, targets).values():
            if not _is_train(s) or not s.changed():
                continue
            if use_run_cache and _restore(repo, s):
                p.restored.append(s.addressing)
                continue
            ref, wdir = recipe_ref(s.cmd), Path(s.wdir)
            est, recipe = _estimate(ref, wdir, known)
            block = seed_block(recipe, int(shlex.split(s.cmd)[shlex.split(s.cmd).index("--seed") + 1])) if recipe else [0]
            if len(block) > 1:  # the first pending seed of a block trains all of it; the others then only copy
                key = (recipe.name, block[0])
                est = est * len(block) if key not in blocks else 0.0
                if key in blocks:
                    followers.add(s.addressing)
                blocks.add(key)
                p.blocks[s.addressing] = key
            devices = recipe.config.get("devices", 1) if recipe else 1
            if recipe:
                p.families.add(recipe.family)
            p.recipes[s.addressing] = (ref, recipe.name if recipe else None)
            p.hashes[s.addressing] = _dep_hashes(s)
            if not dry:
                _remove_recorded_outs(s)
            log = _log_file(log_dir, s.addressing)
            env = {"REPROZOO_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
            # a `devices: N` run is N processes: N GPUs from the pool, or N of the slots on CPUs
            p.jobs.append(Job(s.addressing, s.cmd, wdir, log, threads=threads, gpus=max(gpus, devices) if gpus else 0,
                              estimate=est, env=env, width=devices))
    p.followers = followers
    # seed blocks' trainers first, longest first; ties (and unknown times) in the order dvc.yaml defines them
    p.jobs.sort(key=lambda j: (j.stage in followers, -j.estimate, defined.get(j.stage, 0)))
    return p


def lock_without_run_hashes(lock: Path) -> dict:
    """A dvc.lock's stages, except the hashes of runs and reports: a run's env.json holds its start and wall
    time, and the reports summarise them, so two serial `dvc repro`s differ there too (compare the runs'
    metrics.json instead). A mapping: DVC's own order of new lock entries varies between processes."""
    import yaml

    stages = yaml.safe_load(Path(lock).read_text())["stages"]
    for st in stages.values():
        for entry in st.get("deps", []) + st.get("outs", []):
            if entry["path"].startswith(("runs/", "reports/")):
                for k in ("md5", "size", "nfiles"):
                    entry.pop(k, None)
    return stages


def _remove_recorded_outs(stage) -> None:
    """What `dvc repro` does before it runs a changed stage: remove its outputs, here only those that dvc.lock
    records as they are (so DVC's cache holds them and `dvc checkout` brings them back). A recipe edited since
    its run otherwise finds the old run in place and is refused as another version of the recipe."""
    import shutil

    for out in stage.outs:
        try:
            if out.exists and out.hash_info and out.hash_info.value and out.use_cache and not out.changed():
                shutil.rmtree(out.fs_path) if os.path.isdir(out.fs_path) else os.unlink(out.fs_path)
        except Exception:  # noqa: BLE001  a status DVC cannot tell: leave the output; the run says what is wrong
            continue


class _quiet_dvc:
    """DVC's in-process commits log 'Updating lock file' at INFO: keep the progress display clean."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("dvc")
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _restore(repo, stage) -> bool:
    """Restore `stage` from DVC's run-cache and record it, as `dvc repro` would; False if it has no entry."""
    from dvc.stage.cache import RunCacheNotFoundError

    try:
        repo.stage_cache.restore(stage)
    except RunCacheNotFoundError:
        return False
    except Exception:  # a broken cache entry: just run it
        return False
    stage.save()
    stage.commit()
    stage.dump(update_pipeline=False)
    return True


def _dvc(*args: str, check: bool = True) -> int:
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    rc = subprocess.run([dvc, *args], cwd=paths.project_root()).returncode
    if check and rc != 0:
        raise ReproFailed(f"`dvc {' '.join(args)}` failed (exit {rc})")
    return rc


def record(stages: list[str], plan_: Plan) -> dict[str, str | None]:
    """Record finished runs in dvc.lock as DVC's `commit --force` does, each only if it is complete, its
    recipe is the one that is current and none of its dependencies changed while it ran; stage -> why
    not (None: recorded). One DVC repository and one write of each dvc.lock for the whole batch: DVC
    re-reads and rewrites the lock file on every commit, seconds each once it holds a hundred runs."""
    from itertools import groupby

    why: dict[str, str | None] = {}
    ok = []
    with _dvc_repo() as repo, _quiet_dvc(), repo.lock:
        for addr in stages:
            stage = next(iter(repo.stage.collect(addr)))
            why[addr] = _verify(stage, addr, plan_)
            if why[addr] is None:
                ok.append(stage)
        for _, group in groupby(sorted(ok, key=lambda s: s.dvcfile.path), key=lambda s: s.dvcfile.path):
            group = list(group)
            for stage in group:  # what dvc.repo.commit.commit(force=True) does per stage
                stage.save()
                stage.commit(relink=True)
            group[0].dvcfile.dump_stages(group, update_pipeline=False)
    return why


def _verify(stage, addr: str, plan_: Plan) -> str | None:
    ref, name = plan_.recipes[addr]
    outs = [Path(str(o)) if Path(str(o)).is_absolute() else Path(stage.wdir) / str(o) for o in stage.outs]
    for o in outs:
        if not (o / "metrics.json").exists() and not (o.is_file()):
            return f"its output {os.path.relpath(o, paths.project_root())} is incomplete"
    now, before = _dep_hashes(stage), plan_.hashes[addr]
    changed = [k for k in before if now.get(k) != before[k]]
    if changed:
        return f"{', '.join(changed[:3])} changed while it ran; not recorded (run again)"
    if name is not None:
        recipe = _stage_recipe(ref, Path(stage.wdir))
        env = json.loads((outs[0] / "env.json").read_text())
        if env.get("recipe_hash") != recipe.hash:
            return f"its run holds recipe hash {env.get('recipe_hash')}, the recipe is now {recipe.hash}; not recorded"
        timings = _read_timings()
        timings[recipe.name] = env.get("wall_seconds", 0)
        _timings_file().parent.mkdir(parents=True, exist_ok=True)
        _timings_file().write_text(json.dumps(timings, indent=1, sort_keys=True))
    return None


class Progress:
    """One live line per running job and an overall bar on a terminal; plain lines otherwise."""

    def __init__(self, total: int, slots: int, stream=sys.stderr):
        self.total, self.slots, self.stream = total, slots, stream
        self.done = self.failed = 0
        self.started: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.logs: dict[str, Path] = {}
        self.t0 = time.monotonic()
        self.durations: list[float] = []
        self.tty = stream.isatty()
        self.drawn = 0
        # seconds of estimated work left (set by run_jobs): a block's other seeds take seconds, so the mean
        # duration of finished runs would overestimate the rest many times
        self.remaining = lambda: 0.0

    def start(self, job: Job) -> None:
        self.started[job.stage] = time.monotonic()
        self.logs[job.stage] = job.log
        if not self.tty:
            self._line(f"start {job.stage}" + (f" (attempt {job.attempt + 1})" if job.attempt else ""))

    def ended(self, stage: str) -> None:
        """The run's process ended (it is recorded later, in a batch): its duration stops here."""
        self.ends[stage] = time.monotonic()

    def finish(self, stage: str, ok: bool, note: str = "") -> None:
        dt = self.ends.pop(stage, time.monotonic()) - self.started.pop(stage, time.monotonic())
        self.durations.append(dt)
        self.done += ok
        self.failed += not ok
        self._line(f"{'done' if ok else 'FAILED'} {stage} in {dt:.0f} s{'  ' + note if note else ''}")

    def retry(self, stage: str, note: str) -> None:
        """A killed run that starts again: shown as a failed attempt, counted once more in the total."""
        self.finish(stage, False, note)
        self.failed -= 1
        self.total += 1

    def eta(self, remaining_estimates: float) -> float:
        if remaining_estimates > 0:
            return remaining_estimates / self.slots
        n_left = self.total - self.done - self.failed
        mean = sum(self.durations) / len(self.durations) if self.durations else 0
        return n_left * mean / self.slots

    def bar(self, remaining_estimates: float = 0.0) -> str:
        n = self.done + self.failed
        width = 30
        fill = int(width * n / max(self.total, 1))
        eta = self.eta(remaining_estimates)
        return (f"[{'#' * fill}{'.' * (width - fill)}] {n}/{self.total} runs"
                f"{f', {self.failed} failed' if self.failed else ''}, {time.monotonic() - self.t0:.0f} s"
                f"{f', ETA {eta:.0f} s' if n < self.total and eta else ''}")

    def _job_line(self, stage: str) -> str:
        tail = ""
        try:
            with open(self.logs[stage], "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 400))
                parts = [x.strip() for x in f.read().decode(errors="replace").replace("\r", "\n").split("\n") if x.strip()]
                tail = parts[-1][-70:] if parts else ""
        except OSError:
            pass
        return f"  {stage[:48]:<48} {time.monotonic() - self.started[stage]:5.0f} s  {tail}"

    def draw(self, remaining_estimates: float = 0.0) -> None:
        if not self.tty:
            return
        lines = [self._job_line(s) for s in self.started] + [self.bar(remaining_estimates)]
        self._clear()
        self.stream.write("\n".join(line[:150] for line in lines) + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _line(self, text: str) -> None:
        self._clear()
        print(text + ("" if self.tty else f"   {self.bar(self.remaining())}"), file=self.stream, flush=True)


class WorkLeft:
    """Seconds of work left in the queued and running jobs, for the ETA. A job with no earlier wall time
    (a fresh clone) counts as the mean of the jobs of its kind that ended so far: a seed block's trainer
    takes minutes, a seed that only takes its block's result seconds, so one mean over both would be
    wrong many times over."""

    def __init__(self, followers: set):
        self.followers = followers
        self.seen: dict[bool, list[float]] = {False: [], True: []}

    def ended(self, job: Job, seconds: float) -> None:
        self.seen[job.stage in self.followers].append(seconds)

    def guess(self, job: Job) -> float:
        seen = self.seen[job.stage in self.followers]
        return job.estimate or (sum(seen) / len(seen) if seen else 0.0)

    def __call__(self, queued, running, started: dict, now: float) -> float:
        return sum(self.guess(j) for j in queued) + sum(
            max(self.guess(j) - (now - started.get(j.stage, now)), 0.0) for j in running)


def _gpu_pool(gpus: str | None) -> list[str] | None:
    if gpus is None:
        return None
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise ConfigError("command line", "--gpus", f"expected distinct GPU indices like 0,1,2, got {gpus!r}")
    return ids


def run_jobs(p: Plan, executor, *, slots: int, gpus: list[str] | None, retries: int,
             attached: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Run the plan's jobs, `slots` at a time; returns (recorded stages, failed stage -> reason).
    `attached`: stage -> job id of jobs submitted earlier (`--detach`), followed instead of submitted again."""
    attached = dict(attached or {})
    queue = list(p.jobs)
    free_gpus = list(gpus) if gpus is not None else None
    held: dict[str, list[str]] = {}
    running: dict[str, Job] = {}
    recorded: list[str] = []
    failed: dict[str, str] = {}
    progress = Progress(len(p.jobs), slots)
    finished: list[str] = []  # verified by `record` in batches
    last_record = time.monotonic()

    def record_finished() -> None:
        nonlocal last_record
        if finished:
            for stage, problem in record(finished, p).items():
                if problem:
                    failed[stage] = problem
                    progress.finish(stage, False, problem)
                else:
                    recorded.append(stage)
                    progress.finish(stage, True)
            finished.clear()
        last_record = time.monotonic()

    for job in queue:
        if free_gpus is not None and job.gpus > len(free_gpus):
            raise ConfigError("command line", "--gpus-per-run", f"{job.stage} asks for {job.gpus} GPUs, --gpus gives {len(free_gpus)}")

    def launch():
        while queue and len(running) < slots:
            busy = sum(j.width for j in running.values()) if free_gpus is None else 0
            training = {p.blocks[s] for s in running if s in p.blocks and s not in p.followers}
            # on CPUs a multi-process run waits for its slots (alone it may take more than there are); a seed
            # whose block another running stage is training would only wait for it: others go first
            job = next((j for j in queue if (j.gpus <= len(free_gpus) if free_gpus is not None
                                             else not running or busy + j.width <= slots)
                        and p.blocks.get(j.stage) not in training - {None}), None)
            if job is None:
                return
            queue.remove(job)
            if free_gpus is not None:  # its own GPUs, or none at all
                held[job.stage], free_gpus[:] = free_gpus[:job.gpus], free_gpus[job.gpus:]
                job.env = {**job.env, "CUDA_VISIBLE_DEVICES": ",".join(held[job.stage])}
            if job.stage in attached:
                executor.attach(job.stage, attached.pop(job.stage))
            else:
                executor.submit(job)
            running[job.stage] = job
            progress.start(job)

    work_left = WorkLeft(p.followers)

    def remaining() -> float:
        return work_left(queue, running.values(), progress.started, time.monotonic())

    progress.remaining = remaining
    try:
        launch()
        while running:
            done = executor.poll()
            if not done:
                # record in batches: every 30 s (and when none is left running), not every few runs: a
                # recording stops the launching, and seeds that only take their block's result end in a second
                if finished and (time.monotonic() - last_record > 30 or len(finished) >= 64):
                    record_finished()
                progress.draw(remaining())
                time.sleep(0.5)
                continue
            for stage, rc in done.items():
                job = running.pop(stage)
                progress.ended(stage)
                if rc == 0:
                    work_left.ended(job, progress.ends[stage] - progress.started[stage])
                if free_gpus is not None:
                    free_gpus.extend(held.pop(stage, []))
                if rc != 0 and was_killed(rc) and job.attempt < retries:
                    job.attempt += 1
                    progress.retry(stage, f"killed (exit {rc}); retrying, it resumes from its checkpoint")
                    queue.insert(0, job)
                    continue
                launch()  # keep the slot busy while DVC records the finished run
                if rc != 0:
                    why = f"exit {rc}" + (" (killed)" if was_killed(rc) else "") + f"; log: {os.path.relpath(job.log)}"
                    failed[stage] = why
                    progress.finish(stage, False, why)
                    continue
                finished.append(stage)
            launch()
        record_finished()
    except KeyboardInterrupt:
        executor.cancel_all()
        record_finished()
        progress._clear()
        print(f"\ninterrupted: {len(recorded)} finished runs are recorded in dvc.lock; the {len(running)} running "
              f"ones stopped and resume from their last checkpoint when you run the same command again.",
              file=sys.stderr)
        raise
    progress._clear()
    print(progress.bar(), file=sys.stderr)
    return recorded, failed


def downstream_ok_targets(targets: list[str], failed: list[str]) -> list[str]:
    """The non-train stages of `targets` that do not depend on a failed stage."""
    import networkx as nx

    with _dvc_repo() as repo:
        stages = _stages(repo, targets)
        bad = set()
        for a in failed:
            if a in stages:
                bad |= {s.addressing for s in nx.ancestors(repo.index.graph, stages[a])} | {a}
        return [a for a, s in stages.items() if a not in bad and not _is_train(s)]


def finish(targets: list[str], ex: LocalExecutor, log_dir: Path) -> int:
    """What `dvc repro TARGETS` does once the runs are recorded, with each pending stage's command run
    through `ex` (forked from its preloaded server: a report stage no longer spends seconds importing
    torch): in DVC's order, each changed stage is restored from DVC's run-cache or run (DVC's lock released
    meanwhile, as DVC releases it), then saved and committed as `Stage.run` does. Stops at the first
    failure, as DVC does; returns the exit status."""
    with _dvc_repo() as repo:
        with repo.lock:
            order = list(_stages(repo, targets).items())
        for addr, stage in order:
            with repo.lock, _quiet_dvc():
                if stage.frozen or not stage.cmd or not stage.changed():
                    continue
                if _restore(repo, stage):
                    print(f"Stage '{addr}' is cached - skipping run, checking out outputs", file=sys.stderr)
                    continue
                stage.remove_outs(ignore_remove=False, force=False)
            print(f"Running stage '{addr}':\n> {stage.cmd}", file=sys.stderr, flush=True)
            log = _log_file(log_dir, addr)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.unlink(missing_ok=True)
            ex.submit(Job(addr, stage.cmd, Path(stage.wdir), log))
            rc = wait_any(ex, 0.05)[addr]
            sys.stderr.write(log.read_text(errors="replace") if log.exists() else "")
            if rc != 0:
                print(f"ERROR: failed to reproduce '{addr}': {stage.cmd} exited with {rc}", file=sys.stderr)
                return rc
            with repo.lock, _quiet_dvc():
                # DVC keeps a run-cache entry only for a stage whose outputs are all cached (metrics and plots aside)
                no_cache = any(not o.use_cache for o in stage.outs if not (o.is_metric or o.is_plot))
                stage.save(run_cache=not no_cache)
                stage.commit()
                stage.dump(update_pipeline=False)
    return 0


def make_executor(name: str, *, slots: int, gpus: list[str] | None, options: dict, threads: int = 1,
                  families: set = frozenset()):
    if name == "local":
        return LocalExecutor(threads=threads, preload=_preload(families))
    if name == "slurm":
        from .executors import SubmititExecutor

        cluster = options.pop("cluster", "slurm")
        return SubmititExecutor(paths.project_root() / ".reprozoo" / "slurm", cluster=cluster, params=options)
    if name == "ray":
        from .executors import RayExecutor

        return RayExecutor(address=options.get("address"), num_cpus=slots if not options.get("address") else None,
                           num_gpus=len(gpus) if gpus is not None else None)
    raise ConfigError("command line", "--executor", f"unknown executor {name!r}", ["local", "ray", "slurm"])


def _detached_file() -> Path:
    return paths.project_root() / ".reprozoo" / "slurm" / "jobs.json"


def _load_detached(p: Plan) -> dict[str, str]:
    """Jobs an earlier `--detach` submitted that are still pending with the same command: stage -> job id.
    Their dependency hashes are the ones taken at submission: a change since then is caught at commit."""
    try:
        saved = json.loads(_detached_file().read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for j in p.jobs:
        entry = saved.get(j.stage)
        if entry and entry["cmd"] == j.cmd:
            out[j.stage] = entry["job_id"]
            p.hashes[j.stage] = entry["hashes"]
    return out


def _detach(p: Plan, ex) -> int:
    from .io import write_json

    saved = {}
    for job in p.jobs:
        ex.submit(job)
    for stage, job_id in ex.job_ids().items():
        saved[stage] = {"job_id": job_id, "cmd": next(j.cmd for j in p.jobs if j.stage == stage), "hashes": p.hashes[stage]}
    write_json(_detached_file(), saved)
    ids = ", ".join(v["job_id"] for v in saved.values())
    print(f"submitted {len(saved)} jobs ({ids}; saved in {os.path.relpath(_detached_file())}); run the same command "
          f"without --detach to collect and record them", file=sys.stderr)
    return 0


def repro(pipelines: list[str], *, jobs: int = 2, executor: str = "local", gpus: str | None = None, threads: int | None = None,
          retries: int = 1, dry: bool = False, options: dict | None = None, run_cache: bool = True,
          detach: bool = False, gpus_per_run: int | None = None) -> int:
    if jobs < 1:
        raise ConfigError("command line", "--jobs", f"must be at least 1, got {jobs}")
    if retries < 0:
        raise ConfigError("command line", "--retries", f"must be 0 or more, got {retries}")
    targets = pipeline_files(pipelines)
    _check_targets(targets)
    threads = threads or int(os.environ.get("REPROZOO_THREADS", "1"))
    pool = _gpu_pool(gpus)
    log_dir = paths.project_root() / ".reprozoo" / "logs"
    if gpus_per_run is not None and gpus_per_run < 0:
        raise ConfigError("command line", "--gpus-per-run", f"must be 0 or more, got {gpus_per_run}")
    per_run = gpus_per_run if gpus_per_run is not None else (1 if pool else 0)
    p = plan(targets, threads=threads, gpus=per_run, log_dir=log_dir, use_run_cache=run_cache and not dry, dry=dry)
    for s in p.restored:
        print(f"restored {s} from DVC's run-cache", file=sys.stderr)
    if dry:
        for j in p.jobs:
            print(f"{j.stage:<60} {f'~{j.estimate:.0f} s' if j.estimate else 'time unknown'}  {j.cmd}")
        print(f"{len(p.jobs)} pending runs", file=sys.stderr)
        return 0
    print(f"{len(p.jobs)} pending runs, {jobs} at a time on {executor}"
          f"{f' (GPUs {gpus})' if pool else ''}, {threads} thread(s) each; logs in {os.path.relpath(log_dir)}/", file=sys.stderr)
    if detach and executor != "slurm":
        raise ConfigError("command line", "--detach", "only with --executor slurm (jobs outlive this command there)")
    ex = make_executor(executor, slots=jobs, gpus=pool, options=dict(options or {}), threads=threads,
                       families=p.families)
    attached = _load_detached(p) if executor == "slurm" else {}
    if detach:
        return _detach(p, ex)
    try:
        recorded, failed = run_jobs(p, ex, slots=jobs, gpus=pool, retries=retries, attached=attached)
    finally:
        ex.close()
    if attached:
        _detached_file().unlink(missing_ok=True)
    # the comparisons and reports run here, also when the runs went to SLURM or Ray
    local = ex if isinstance(ex, LocalExecutor) else LocalExecutor(threads=threads, preload=_preload(p.families))
    if failed:
        print(f"{len(failed)} run(s) failed, {len(recorded)} recorded:", file=sys.stderr)
        for s, why in failed.items():
            print(f"  {s}: {why}", file=sys.stderr)
        rest = downstream_ok_targets(targets, list(failed))
        if rest:
            finish(rest, local, log_dir)
        return 1
    return finish(targets, local, log_dir)
