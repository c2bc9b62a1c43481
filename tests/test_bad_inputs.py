"""Bad input, careless or hostile: every case ends in one line naming the file (and the key), a non-zero
exit, no traceback, nothing finished replaced and nothing partial left behind."""
import gzip
import inspect
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from reprozoo import cli, paths, preflight
from reprozoo.errors import ConfigError, ReprozooError
from reprozoo.recipes import load_recipe
from reprozoo.families import family_names, get_family
from reprozoo.tricks import TRICKS

from conftest import REPO, write

BASE = "recipes/classification"
TINY_RUN = "extends: mnist1d_mlp\nschedule: {iters: 40}\neval: {interval: 20}\ncheckpoint_interval: 20\nspeed: {seed_block: 1}\n"


def one_line(capsys, argv, code=2):
    """Run the CLI in-process; its stderr must be exactly one `reprozoo: ...` line."""
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("reprozoo: "), err
    return err


# --- recipes, claims, specs: strict YAML and value ranges ------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("extends: mnist1d_mlp\noptim: {lr: 0.01}\noptim: {lr: 5}\n", ["key 'optim'", "written twice (lines 2 and 3)"]),
    ("extends: mnist1d_mlp\noptim:\n  lr: 0.01\n  lr: 5\n", ["key 'lr'", "written twice (lines 3 and 4)"]),
    ("", ["the file is empty"]),
    ("# only a comment\n", ["the file is empty"]),
    ("- a\n- list\n", ["must be a YAML mapping", "got a list"]),
    ("extends: mnist1d_mlp\noptim: {lr: .nan}\n", ["key 'optim.lr'", "not a finite number"]),
    ("extends: mnist1d_mlp\noptim: {lr: -.inf}\n", ["key 'optim.lr'", "not a finite number"]),
    ("extends: mnist1d_mlp\nschedule: {iters: 1000000000000}\n", ["key 'schedule.iters'", "beyond any run"]),
    ("extends: mnist1d_mlp\noptim: {lr: [unclosed\n", ["not valid YAML"]),
    ("extends: mnist1d_mlp\n\tbad: tab\n", ["not valid YAML"]),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     ["anchors and aliases expand to", "limit 100000"]),
    ("extends: mnist1d_mlp\ntricks: [{name: label_smoothing, epsilon: -0.5}]\n", ["tricks[0].epsilon", "must be in (0, 1)"]),
    ("extends: mnist1d_mlp\ntricks: [{name: random_erasing, min_area: 0.5, max_area: 0.2}]\n",
     ["tricks[0].min_area", "must be <= max_area"]),
    ("extends: mnist1d_mlp\ntricks: [{name: cutout, size: 100000}]\n", ["tricks[0].size", "at most the input size 40"]),
])
def test_recipe_files_that_are_wrong_are_one_line(project, capsys, text, words):
    write(project / BASE / "bad.yaml", text)
    err = one_line(capsys, ["run", "bad"])
    assert "bad.yaml" in err and all(w in err for w in words), err
    assert not (project / "runs/bad").exists()


def test_files_that_are_not_yaml_text(project, capsys):
    (project / BASE / "binary.yaml").write_bytes(b"extends: mnist1d_mlp\n\xff\xfe\x00garbage")
    assert "not UTF-8 text (byte 0xff at offset 21)" in one_line(capsys, ["run", "binary"])
    (project / BASE / "folder.yaml").mkdir()
    assert "folder.yaml: is a directory, not a recipe file" in one_line(capsys, ["run", "folder"])
    write(project / BASE / "bad name.yaml", "extends: mnist1d_mlp\n")
    assert "recipe name 'bad name' cannot name a run folder" in one_line(capsys, ["run", "bad name"])


def test_claims_params_and_ablation_specs_are_read_strictly(project, capsys):
    write(project / "baselines/dup.yaml", "title: t\ntitle: u\nclaims: []\n")
    assert "dup.yaml: key 'title': written twice (lines 1 and 2)" in one_line(capsys, ["compare", "dup"])
    (project / "baselines/dup.yaml").unlink()
    write(project / "params.yaml", "mnist1d:\n  seeds: [0, 1]\n  seeds: [2]\n")
    assert "params.yaml: key 'seeds': written twice" in one_line(capsys, ["pipeline", "mnist1d"])
    write(project / "recipes/ablations/dup.yaml", (REPO / "recipes/ablations/mnist1d_cnn_tricks.yaml").read_text() + "base: mnist1d_mlp\n")
    assert "dup.yaml: key 'base': written twice" in one_line(capsys, ["ablate", "dup", "--no-train"])


# Values outside each declared range, per trick parameter: (value, words of the error).
def _bad_values(check):
    out = []
    for v in (-1e6, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 1e6, math.nan):
        if check(v) is not None:
            out.append(v)
    return out


TRICK_CASES = [(t, f, p, v) for t in TRICKS.names() for f in family_names() if t in get_family(f).tricks
               for p, check in TRICKS.info(t)["checks"].items() if p != "policy" for v in _bad_values(check)]
FAMILY_BASE = {"classification": "mnist1d_mlp", "text": "glue_rte_bert_tiny_random",
               "segmentation": "unet_fcn_drive_cpu_check", "detection": "faster_rcnn_r50_fpn_balloon_cpu_check"}


def test_every_trick_parameter_range_is_checked_in_every_family(project):
    """The issue's examples (label_smoothing -0.5, mixup 0 and -1, cutmix NaN, cutout p -1, clip_grad -1,
    longer_schedule -2, random_erasing p 2, ema momentum 5) and every other value outside a declared range."""
    assert len(TRICK_CASES) > 100 and {t for t, *_ in TRICK_CASES} >= {
        "label_smoothing", "mixup", "cutmix", "cutout", "clip_grad", "longer_schedule", "random_erasing", "ema"}
    for trick, family, param, value in TRICK_CASES:
        default = inspect.signature(TRICKS.get(trick)).parameters[param].default
        v = float(value) if isinstance(default, float) else value
        if isinstance(default, int) and not (isinstance(value, int) or float(value).is_integer()):
            continue  # a fraction for a count is a type error, tested in test_tricks
        v = int(v) if isinstance(default, int) else v
        write(project / f"recipes/{family}/bad.yaml", f"extends: {FAMILY_BASE[family]}\n"
              f"tricks: [{{name: {trick}, {param}: {'.nan' if v != v else v}}}]\n")
        with pytest.raises(ConfigError) as e:
            load_recipe("bad")
        msg = str(e.value)
        assert f"tricks[0].{param}" in msg and ("must be" in msg or "finite" in msg), (trick, family, param, v, msg)
        (project / f"recipes/{family}/bad.yaml").unlink()
    for family, base in FAMILY_BASE.items():  # the defaults of every trick a family implements stay valid
        for t in sorted(get_family(family).tricks):
            for p, check in TRICKS.info(t)["checks"].items():
                assert check(inspect.signature(TRICKS.get(t)).parameters[p].default) is None, (t, p)


# --- checkpoints: weights only, one line ---------------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Legacy:
    """A class the weights-only unpickler does not know: an old training script's metadata."""


EVAL_RECIPES = {"classification": "mnist1d_mlp", "detection": "faster_rcnn_r50_fpn_balloon_cpu_check",
                "segmentation": "unet_fcn_drive_cpu_check", "text": "glue_rte_bert_tiny_random"}


@pytest.mark.parametrize("family", sorted(EVAL_RECIPES))
def test_a_checkpoint_that_runs_code_never_runs_it(project, tmp_path, capsys, family):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": Payload(marker)}, evil)
    args = ["eval", EVAL_RECIPES[family], "--checkpoint", str(evil), "--published", "50", "--source", "test"]
    err = one_line(capsys, args)
    assert not marker.exists(), f"{family}: the checkpoint's code ran"
    # every family evaluates checkpoints (family_api.Family.evaluate), and the core refuses this one before any does
    assert f"{evil}: refused" in err and "--trust-checkpoint" in err and "posix.system" in err, err
    torch.load(evil, weights_only=False)  # the file is really hostile: full unpickling runs the command
    assert marker.exists()


def test_trusted_legacy_checkpoint_loads_and_garbage_is_named(project, tmp_path, capsys):
    from reprozoo.checkpoints import _TRUSTED, load_weights

    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": Legacy()}, legacy)
    with pytest.raises(ConfigError, match="legacy.pth: refused.*--trust-checkpoint"):
        load_weights(legacy)
    token = _TRUSTED.set(frozenset({str(legacy.resolve())}))
    try:
        assert torch.equal(load_weights(legacy)["state_dict"]["w"], torch.ones(2))
    finally:
        _TRUSTED.reset(token)
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}}, good)
    for name, data in [("empty.pth", b""), ("random.pth", os.urandom(4096)), ("truncated.pth", good.read_bytes()[:300]),
                       ("text.pth", b"hello, I am not a checkpoint\n")]:
        (tmp_path / name).write_bytes(data)
        err = one_line(capsys, ["eval", "mnist1d_mlp", "--checkpoint", str(tmp_path / name), "--published", "50", "--source", "t"])
        assert f"{tmp_path / name}: not a readable PyTorch checkpoint" in err, err


# --- runs: checked before training ---------------------------------------------------------------------

def test_run_folder_that_cannot_be_written_or_has_no_room(project, capsys, monkeypatch):
    write(project / BASE / "tiny.yaml", TINY_RUN)
    (project / "runs").mkdir()
    (project / "runs/tiny").write_text("a file where the run folder should be\n")
    assert "runs/tiny: cannot write there" in one_line(capsys, ["run", "tiny"])
    (project / "runs/tiny").unlink()
    monkeypatch.setattr(preflight, "MIN_FREE_MIB", 10**12)
    err = one_line(capsys, ["run", "tiny"])
    assert "MiB free (a run needs at least" in err and not (project / ".reprozoo/work/tiny").exists()


def test_a_run_in_progress_is_not_replaced_by_another_version(project, capsys):
    write(project / BASE / "tiny.yaml", TINY_RUN)
    with preflight.claimed(load_recipe("tiny"), 0):  # another process is training runs/tiny/seed0
        write(project / BASE / "tiny.yaml", TINY_RUN.replace("iters: 40", "iters: 41"))
        err = one_line(capsys, ["run", "tiny", "--no-progress"])
    assert "runs/tiny/seed0 is being trained right now by process" in err
    assert not (project / "runs/tiny/seed0").exists()


def test_damaged_checkpoint_and_prepared_data_name_the_fix(project, capsys):
    write(project / BASE / "tiny.yaml", TINY_RUN)
    assert cli.main(["run", "tiny", "--no-progress"]) == 0
    capsys.readouterr()
    # an unfinished run of a changed recipe, whose last checkpoint was cut short
    write(project / BASE / "tiny.yaml", TINY_RUN.replace("iters: 40", "iters: 60"))
    recipe = load_recipe("tiny")
    work = preflight.work_dir(recipe, 1)
    work.mkdir(parents=True)
    (work / "iter_20.pth").write_bytes((project / "runs/tiny/seed0/metrics.json").read_bytes()[:10])
    (work / "last_checkpoint").write_text(str(work / "iter_20.pth"))
    err = one_line(capsys, ["run", "tiny", "--seed", "1", "--no-progress"])
    assert "iter_20.pth: the checkpoint this run would resume from is damaged" in err
    assert "`reprozoo run tiny --seed 1 --force` starts the run over" in err
    assert cli.main(["run", "tiny", "--seed", "1", "--force", "--no-progress"]) == 0  # really starts over
    assert (project / "runs/tiny/seed1/metrics.json").exists() and not work.exists()
    capsys.readouterr()
    x = paths.datasets_dir() / "mnist1d/x.npy"
    x.write_bytes(x.read_bytes()[:1000])
    err = one_line(capsys, ["run", "tiny", "--seed", "2", "--no-progress"])
    assert "x.npy: damaged prepared data" in err and "`reprozoo prepare mnist1d --force` rebuilds it" in err


def test_corrupt_raw_archive_names_the_users_file_and_leaves_nothing(project, data_root, capsys):
    from reprozoo.families.classification.zoo.mnist import FILES

    (data_root / "mnist").mkdir()
    for name, _ in FILES.values():
        (data_root / "mnist" / name).write_bytes(b"not gzip at all")
    err = one_line(capsys, ["prepare", "mnist"])
    assert f"{data_root}/mnist/train-images-idx3-ubyte.gz: preparing dataset 'mnist' failed (BadGzipFile" in err, err
    good = gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    (data_root / "mnist/train-images-idx3-ubyte.gz").write_bytes(good[:-6])  # truncated
    err = one_line(capsys, ["prepare", "mnist"])
    assert "train-images-idx3-ubyte.gz: preparing dataset 'mnist' failed (EOFError" in err, err
    assert list(paths.datasets_dir().iterdir()) == []  # no staging folder left behind


# --- the error boundary --------------------------------------------------------------------------------

def test_unexpected_errors_are_one_line_unless_debug(project, capsys, monkeypatch):
    def broken(args):
        raise AssertionError("momentum must be in range [0, 1]\n  more framework detail")

    monkeypatch.setattr(cli, "cmd_list", broken)
    err = one_line(capsys, ["list"])
    assert err == "reprozoo: error: AssertionError: momentum must be in range [0, 1] (unexpected; REPROZOO_DEBUG=1 or --debug shows where)"
    monkeypatch.setenv("REPROZOO_DEBUG", "1")
    with pytest.raises(AssertionError):
        cli.main(["list"])
    monkeypatch.delenv("REPROZOO_DEBUG")
    with pytest.raises(AssertionError):
        cli.main(["--debug", "list"])

    def full(args):
        raise OSError(28, "No space left on device", "runs/x/seed0/metrics.json")

    monkeypatch.setattr(cli, "cmd_list", full)
    assert one_line(capsys, ["list"]) == ("reprozoo: error: runs/x/seed0/metrics.json: No space left on device "
                                          "(the disk is full: free space and re-run; the run resumes)")


def test_ctrl_c_says_how_to_resume_and_the_run_resumes(project):
    write(project / BASE / "slow.yaml", TINY_RUN.replace("iters: 40", "iters: 4000").replace("checkpoint_interval: 20", "checkpoint_interval: 50"))
    env = {**os.environ, "REPROZOO_ROOT": str(project)}
    p = subprocess.Popen([sys.executable, "-m", "reprozoo.cli", "run", "slow", "--no-progress"], cwd=project, env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while not list((project / ".reprozoo/work/slow").glob("*/iter_*.pth")) and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("reprozoo: interrupted. Finished runs are kept; the same command resumes an "
                                            "unfinished run from its last checkpoint.")
    assert not (project / "runs/slow/seed0").exists() and list((project / ".reprozoo/work/slow").glob("*/iter_*.pth"))


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from reprozoo.io import write_json

    old = os.umask(0o022)
    try:
        mode = write_json(tmp_path / "m.json", {"a": 1}).stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert mode == 0o644


# --- found by probing every command as a careless user would (each was a hang, a traceback or a silent result) ---

ZZ_CLAIMS = "title: t\nsource: {paper: p, table: t}\ndefaults: {metric: accuracy, split: test, tolerance: 0.5}\nclaims:\n  - {recipe: tiny_mlp, value: 50}\n"
GOOD_ENV = {"packages": {"torch": "2"}, "determinism": {"threads": 1}, "wall_seconds": 1.0, "peak_rss_mib": 1.0,
            "command": "reprozoo run tiny_mlp", "started_utc": "2026-12-02T00:00:00+00:00", "recipe_hash": "x"}


def _fake_run(project, metrics: str, env: str | None = None):
    import json

    d = project / "runs/tiny_mlp/seed0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(metrics)
    (d / "env.json").write_text(env if env is not None else json.dumps(GOOD_ENV))


@pytest.mark.parametrize("argv, setup, words", [
    (["run", "tiny_mlp", "--threads", "0"], None, ["threads must be in 1..", "reprozoo run --help"]),
    (["run", "tiny_mlp", "--seed", "-1"], None, ["a seed must be in 0.."]),
    (["check", "tiny_mlp", "--seed", "-1"], None, ["a seed must be in 0.."]),
    (["bogus"], None, ["invalid choice: 'bogus'"]),
    (["compare", "zz", "--seeds", "0", "0"], "claims", ["--seeds", "listed twice"]),
    (["compare", "/tmp/zz/abs"], None, ["'/tmp/zz/abs' is not a name"]),
    (["curve", "../../evil"], None, ["'../../evil' is not a name"]),
    (["report", "/tmp/abs"], None, ["'/tmp/abs' is not a name"]),
    (["compare", "zz"], "metrics_inf", ["metrics.json", "not {split: {metric: finite number}}", "--force` writes it again"]),
    (["compare", "zz"], "metrics_bool", ["metrics.json", "not {split: {metric: finite number}}"]),
    (["compare", "zz"], "metrics_garbage", ["metrics.json: not valid JSON"]),
    (["compare", "zz"], "env_empty", ["env.json: not a run's env.json (missing or wrong: ['packages'"]),
    (["run", "zero"], "symlink_zero", ["zero.yaml: not a regular file"]),
    (["compare", "zz"], "params_recipes", ["params.yaml: key 'zz.recipes': expected a list of recipe names"]),
    (["compare", "zz"], "claim_huge_std", ["key 'claims[0].std'", "beyond any sensible value"]),
    (["ablate", "dupmodes", "--no-train"], "dup_modes", ["key 'modes': expected distinct modes"]),
    (["ablate", "zz ab", "--no-train"], None, ["'zz ab' is not a name"]),
    (["run", "tiny_mlp", "--threads", "100000"], None, ["threads must be in 1..4096"]),
    (["curve", "tiny_mlp"], "curve_torn", ["loss.tsv: not a DVCLive curve"]),
    (["curve", "tiny_mlp"], "curve_none", ["no curves (loss.tsv"]),
    (["list", "recipes"], "newline_name", ["zz\\nnl.yaml"]),
])
def test_probed_inputs_end_in_one_line(project, capsys, monkeypatch, argv, setup, words):
    import json

    if setup:
        write(project / "baselines/zz.yaml", ZZ_CLAIMS)
    if setup == "metrics_inf":
        _fake_run(project, '{"test": {"accuracy": Infinity}}')
    elif setup == "metrics_bool":
        _fake_run(project, '{"test": {"accuracy": true}}')
    elif setup == "metrics_garbage":
        _fake_run(project, '{"test": {"accur')
    elif setup == "env_empty":
        _fake_run(project, '{"test": {"accuracy": 50.0}}', "{}")
    elif setup == "symlink_zero":
        (project / BASE / "zero.yaml").symlink_to("/dev/zero")
    elif setup == "params_recipes":
        write(project / "params.yaml", "zz:\n  seeds: [0]\n  recipes: nope\n")
    elif setup == "claim_huge_std":
        write(project / "baselines/zz.yaml", ZZ_CLAIMS.replace("value: 50}", "value: 50, std: 1.0e+200}"))
    elif setup in ("curve_torn", "curve_none"):
        _fake_run(project, '{"test": {"accuracy": 50.0}}')
        m = project / "runs/tiny_mlp/seed0/dvclive/plots/metrics"
        m.mkdir(parents=True)
        if setup == "curve_torn":
            (m / "loss.tsv").write_text("step\tloss\n10\t0.5\n20\n")
    elif setup == "newline_name":
        write(project / BASE / "zz\nnl.yaml", "extends: mnist1d_mlp\n")
    elif setup == "dup_modes":
        spec = (REPO / "recipes/ablations/mnist1d_cnn_tricks.yaml").read_text()
        write(project / "recipes/ablations/dupmodes.yaml", spec.replace("modes: [cumulative, leave-one-out]", "modes: [cumulative, cumulative]"))
        assert "modes: [cumulative, cumulative]" in (project / "recipes/ablations/dupmodes.yaml").read_text()
    usage = argv == ["bogus"] or "--threads" in argv or "--seed" in argv
    rc = None if usage else cli.main(argv)
    if rc is None:  # argparse usage errors exit through SystemExit(2)
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        rc = e.value.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err and err.startswith("reprozoo: error: "), err
    assert all(w in err for w in words), err
    assert not json.dumps(argv).count("evil") or not list(project.parent.glob("evil*"))  # nothing written outside


def test_eval_arguments_and_nan_weights(project, tmp_path, capsys):
    for name, obj in (("list.pth", [1, 2]), ("int_sd.pth", {"state_dict": 5})):
        torch.save(obj, tmp_path / name)
        err = one_line(capsys, ["eval", "mnist1d_mlp", "--checkpoint", str(tmp_path / name), "--source", "s", "--published", "5"])
        assert "not a state dict of tensors" in err, err
    nan = tmp_path / "nan.pth"
    torch.save({"state_dict": {"w": torch.full((2,), float("nan"))}}, nan)
    base = ["eval", "mnist1d_mlp", "--checkpoint", str(nan), "--source", "s"]
    assert "hold NaN or Inf (e.g. state_dict.w)" in one_line(capsys, [*base, "--published", "50"])
    for extra, words in ((["--published", "250"], "--published must be in [0, 100]"),
                         (["--published", "nan"], "--published must be in [0, 100]"),
                         (["--published", "50", "--margin", "-1"], "--margin must be in [0, 100]"),
                         (["--published", "50", "--name", "../../x"], "'../../x' is not a name")):
        with pytest.raises(SystemExit) if "--name" not in extra else _nothing():
            rc = cli.main([*base, *extra])
            assert rc == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err
    assert "--source" in one_line(capsys, ["eval", "mnist1d_mlp", "--checkpoint", str(nan), "--source", " ", "--published", "5"])


def test_environment_variables_are_checked(project, capsys, monkeypatch):
    monkeypatch.setenv("REPROZOO_THREADS", "abc")
    assert "REPROZOO_THREADS='abc': expected a positive integer" in one_line(capsys, ["run", "tiny_mlp", "--no-progress"])
    monkeypatch.setenv("REPROZOO_ROOT", "/nonexistent/project")
    assert "REPROZOO_ROOT=/nonexistent/project: no such folder" in one_line(capsys, ["list"])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
