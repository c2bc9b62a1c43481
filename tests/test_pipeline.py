"""End to end: a reduced baseline through `dvc repro` in a scratch copy of the repository."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, TINY, write

BIN = str(Path(sys.executable).parent)


def test_committed_pipelines_are_current():
    out = subprocess.run([sys.executable, "-m", "reprozoo.cli", "pipeline", "all", "--check"], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "REPROZOO_ROOT": str(REPO)})
    assert out.returncode == 0, out.stderr


def _copy_repo(dst: Path) -> Path:
    for name in ("src", "recipes", "baselines", "pipelines", ".dvc", "pyproject.toml", "params.yaml", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        else:
            shutil.copy2(src, dst / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dst, check=True)
    return dst


def _repro(root: Path, *args, command="repro") -> tuple[str, list[str]]:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "REPROZOO_ROOT": str(root)}
    out = subprocess.run([os.path.join(BIN, "dvc"), *command.split(), *args], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout, [s.split(":")[-1] for s in re.findall(r"Running stage '([^']+)'", out.stdout)]


def tiny_baseline_repo(tmp_path, extra: dict[str, str] | None = None) -> tuple[Path, dict]:
    """A scratch copy of the repository with a `tiny` baseline (a 200-step MLP, seeds 0 and 1), its pipeline written."""
    root = _copy_repo(tmp_path / "repo")
    write(root / "recipes/classification/tiny_mlp.yaml", TINY.format(iters=200, interval=100, ckpt=100))
    write(root / "baselines/tiny.yaml", """\
        title: Tiny test baseline
        source: {paper: "A made-up paper for the test", table: "Table 1"}
        defaults: {metric: accuracy, split: test, tolerance: 0.5}
        claims:
          - {recipe: tiny_mlp, value: 10}
        """)
    for rel, text in (extra or {}).items():
        write(root / rel, text)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tiny"] = {"seeds": [0, 1]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline(root, "tiny")
    return root, params


def pipeline(root: Path, *args, check=True):
    return subprocess.run([sys.executable, "-m", "reprozoo.cli", "pipeline", *args], cwd=root, check=check,
                          env={**os.environ, "REPROZOO_ROOT": str(root)}, capture_output=True, text=True)


def test_reduced_baseline_through_dvc(tmp_path):
    root, params = tiny_baseline_repo(tmp_path)
    target = "pipelines/tiny/dvc.yaml"

    _, ran = _repro(root, target)
    code = [s for s in ran if s.startswith("code_classification_")]
    assert len(code) == 1 and ran.index(code[0]) < ran.index("train_tiny_mlp@0")  # the code manifest, before the runs
    assert sorted(set(ran) - set(code)) == ["compare_tiny", "prepare_mnist1d", "report_tiny", "site_tiny", "train_tiny_mlp@0",
                                            "train_tiny_mlp@1"]
    assert ran[0] in ("prepare_mnist1d", code[0]) and ran[-3:] == ["compare_tiny", "report_tiny", "site_tiny"]
    assert "tiny_mlp:accuracy" in (root / "reports/site/index.html").read_text()
    report = (root / "reports/tiny.md").read_text()
    assert "| tiny_mlp | accuracy (test) | 10 |" in report and "**above**" in report  # far above chance
    assert (root / "reports/tiny.png").read_bytes()[:4] == b"\x89PNG"
    rows = (root / "reports/tiny_seeds.csv").read_text().splitlines()
    assert rows[0] == "recipe,metric,seed,value,published" and len(rows) == 3

    out, ran = _repro(root, target)
    assert ran == [], out  # a second repro is a no-op

    params["tiny"]["seeds"] = [0, 1, 2]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _, ran = _repro(root, target)
    assert ran == ["train_tiny_mlp@2", "compare_tiny", "report_tiny", "site_tiny"]  # only the new seed trains
    assert len((root / "reports/tiny_seeds.csv").read_text().splitlines()) == 4
    assert not (root / "runs/mnist1d_cnn").exists()  # the default pipeline was not pulled in

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "3 seeds"], cwd=root, check=True)
    out, ran = _repro(root, target, "-S", "tiny.seeds=[0,1]", command="exp run")
    assert ran == ["compare_tiny", "report_tiny", "site_tiny"], out  # an override reuses the runs it already has
    assert "Ran experiment" in out

    # a recipe value as an experiment parameter: the key the file has, and one it inherits (`+`)
    recipe = "recipes/classification/tiny_mlp.yaml"
    out, ran = _repro(root, target, "-S", f"{recipe}:schedule.iters=120", "-S", f"{recipe}:+optim.lr=0.02", "-n", "lr02",
                      command="exp run")
    assert sorted(ran) == ["compare_tiny", "report_tiny", "site_tiny", "train_tiny_mlp@0", "train_tiny_mlp@1"], out  # seeds [0, 1] applied above
    show, _ = _repro(root, "--json", command="exp show")
    exps = [e for rev in json.loads(show) for e in (rev.get("experiments") or [])]
    params = {e["name"]: run["data"]["params"][recipe]["data"] for e in exps for run in e["revs"] if e.get("name")}
    assert params["lr02"]["schedule"]["iters"] == 120 and params["lr02"]["optim"]["lr"] == 0.02
    assert (root / "runs/tiny_mlp/seed0/recipe.yaml").read_text().count("lr: 0.02") == 1  # the run trained the variant

    # the runs depend on the code they execute through one manifest: editing one of its files makes every run stale
    train = yaml.safe_load((root / target).read_text())["stages"]["train_tiny_mlp"]
    manifest = next(d for d in train["deps"] if d.startswith(".reprozoo/code/tiny/code_classification_"))
    assert not any(d.startswith("src/") for d in train["deps"])
    files = {line.split("  ")[1] for line in (root / manifest).read_text().splitlines()}
    assert {"src/reprozoo/runs.py", "src/reprozoo/families/classification/engine.py", "src/reprozoo/frameworks/mmrunner.py"} <= files
    assert subprocess.run(["sha256sum", "--check", "--quiet", manifest], cwd=root).returncode == 0
    with open(root / "src/reprozoo/predictions.py", "a") as f:
        f.write("# edited\n")
    status = {k.split(":")[-1]: v for k, v in json.loads(_repro(root, target, "--json", command="status")[0]).items()}
    assert set(status) == {code[0]}  # the runs' own dependencies did not change; the manifest's did
    _repro(root, f"{target}:{code[0]}", "--single-item")
    stale = {k.split(":")[-1]: v for k, v in json.loads(_repro(root, target, "--json", command="status")[0]).items()}
    assert {"train_tiny_mlp@0", "train_tiny_mlp@1"} <= set(stale) and all(k.startswith("train_tiny_mlp@") for k in stale)
    assert {"changed deps": {manifest: "modified"}} in stale["train_tiny_mlp@0"]


def test_code_manifest_lists_every_file_once_with_its_hash(tmp_path, capsys, monkeypatch):
    import hashlib

    from reprozoo import cli
    from reprozoo.fingerprint import manifest

    write(tmp_path / "pkg/a.py", "x = 1\n")
    write(tmp_path / "pkg/sub/b.py", "y = 2\n")
    write(tmp_path / "pkg/__pycache__/a.cpython-311.pyc", "bytecode")
    write(tmp_path / "c.py", "z = 3\n")
    monkeypatch.chdir(tmp_path)
    text = manifest(["pkg", "c.py"])
    assert text.splitlines() == [f"{hashlib.sha256(b'x = 1' + bytes([10])).hexdigest()}  pkg/a.py",
                                 f"{hashlib.sha256(b'y = 2' + bytes([10])).hexdigest()}  pkg/sub/b.py",
                                 f"{hashlib.sha256(b'z = 3' + bytes([10])).hexdigest()}  c.py"]
    write(tmp_path / "pkg/sub/b.py", "y = 3\n")
    assert manifest(["pkg", "c.py"]) != text
    assert cli.main(["fingerprint", "out/m.sha256", "pkg", "gone.py"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.py" in err[0] and "no such file or folder" in err[0]
    assert not (tmp_path / "out/m.sha256").exists()


def test_opt_in_checks_run_before_training(tmp_path):
    root, params = tiny_baseline_repo(tmp_path)
    params["tiny"]["checks"] = ["tiny_mlp"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline(root, "tiny")
    stages = yaml.safe_load((root / "pipelines/tiny/dvc.yaml").read_text())["stages"]
    assert stages["check_tiny_mlp"]["cmd"] == "reprozoo check tiny_mlp"
    assert "reports/checks/tiny_mlp.md" in stages["train_tiny_mlp"]["deps"]
    _, ran = _repro(root, "pipelines/tiny/dvc.yaml:train_tiny_mlp")
    assert ran.index("check_tiny_mlp") < ran.index("train_tiny_mlp@0")
    assert "8/8 passed" in (root / "reports/checks/tiny_mlp.md").read_text()
    params["tiny"]["checks"] = ["mnist1d_cnn"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    out = pipeline(root, "tiny", check=False)
    assert out.returncode == 2 and "'mnist1d_cnn' is not a recipe of this baseline" in out.stderr
