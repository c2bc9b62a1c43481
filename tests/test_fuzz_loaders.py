"""Property-based fuzzing of the recipe, claims and ablation-spec loaders (Hypothesis): random YAML
documents and random mutations of the real files either load or raise the project's own error, never
anything else, and each within a time bound (Hypothesis' deadline)."""
import os
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprozoo.ablations import load_ablation
from reprozoo.claims import load_baseline
from reprozoo.errors import ReprozooError
from reprozoo.recipes import load_recipe

from conftest import REPO

# 400 examples per test in the suite (about 20 s in all); REPROZOO_FUZZ_EXAMPLES=20000 for a deeper search
FUZZ = settings(max_examples=int(os.environ.get("REPROZOO_FUZZ_EXAMPLES", 400)), deadline=3000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Keys and values of the real files, so random documents reach deep into the schema, not only its first check.
KEYS = ["family", "extends", "model", "dataset", "optim", "schedule", "eval", "tricks", "name", "lr", "iters",
        "batch_size", "split", "interval", "seed", "claims", "recipe", "metric", "value", "std", "n", "title",
        "source", "paper", "defaults", "tolerance", "margin", "base", "seeds", "modes", "published", "momentum",
        "epsilon", "alpha", "size", "p", "factor", "hidden_size", "milestones", "warmup_iters", "<<"]
WORDS = ["classification", "text", "mnist1d_mlp", "mnist1d_cnn", "mnist1d", "adam", "sgd", "cosine", "ema", "mixup",
         "test", "accuracy", "cumulative", "leave_one_out", "label_smoothing", "cutout", "longer_schedule", ""]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**13, 10**13), st.floats(), st.sampled_from(WORDS),
                    st.text(max_size=12))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.one_of(st.sampled_from(KEYS), scalars), inner, max_size=6)),
                         max_leaves=30)
top_level = st.dictionaries(st.sampled_from(KEYS), documents, max_size=8)


def loads_or_names_the_problem(load, path: Path, text: str | bytes) -> None:
    """Write `text` to `path`, load: success or a ReprozooError naming the file. The file is put back after."""
    original = path.read_bytes() if path.exists() else None
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        load()
    except ReprozooError as e:
        assert str(path.name) in str(e) or "unknown recipe" in str(e) or "no recipe file" in str(e), str(e)
    finally:
        path.unlink() if original is None else path.write_bytes(original)


def _dump(doc) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False)
    except yaml.YAMLError:
        return repr(doc)


def mutate(text: str, rnd: random.Random) -> str:
    """One of the edits a careless hand makes: a line deleted, doubled or swapped, a value replaced, stray characters."""
    lines = text.splitlines(keepends=True) or [""]
    i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
    op = rnd.randrange(6)
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3 and ":" in lines[i]:
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}: {rnd.choice(['-1', '0', '1e30', '.nan', 'x', '[]', '{}', '~', 'true', '-0.5', '&a 1', '*a', '9' * 20])}\n"
    else:
        pos = rnd.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rnd.choice(["{", "}", "[", "]", ":", "- ", "\t", "'", '"', "&x", "*x", "!!python/object:os.system", "\x00", "é"]) + lines[i][pos:]
    return "".join(lines)


REAL_RECIPES = [p for fam in ("classification", "text") for p in sorted((REPO / "recipes" / fam).glob("*.yaml"))
                if not p.stem.startswith("_")]  # partial recipes are loaded through the ones that extend them
for _p in REAL_RECIPES:  # import each family's code now, so the deadline measures loading, not a first import
    load_recipe(_p.stem, root=REPO / "recipes")
REAL_CLAIMS = sorted((REPO / "baselines").glob("*.yaml"))
REAL_SPECS = sorted((REPO / "recipes/ablations").glob("mnist1d*.yaml")) + sorted((REPO / "recipes/ablations").glob("rte*.yaml"))


@FUZZ
@given(doc=top_level)
def test_random_recipe_documents(project, doc):
    path = project / "recipes/classification/fuzz.yaml"
    loads_or_names_the_problem(lambda: load_recipe("fuzz"), path, _dump(doc))


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_recipe_bytes(project, text):
    path = project / "recipes/classification/fuzz.yaml"
    loads_or_names_the_problem(lambda: load_recipe("fuzz"), path, text)


@FUZZ
@given(source=st.sampled_from(REAL_RECIPES), seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 3))
def test_mutated_real_recipes(project, source, seed, edits):
    rnd, text = random.Random(seed), source.read_text()
    for _ in range(edits):
        text = mutate(text, rnd)
    path = project / f"recipes/{source.parent.name}/{source.name}"
    loads_or_names_the_problem(lambda: load_recipe(source.stem), path, text)


KINDS = {"claims": (REAL_CLAIMS, "baselines/fuzz.yaml", load_baseline),
         "ablation spec": (REAL_SPECS, "recipes/ablations/fuzz.yaml", load_ablation)}


@pytest.mark.parametrize("kind", sorted(KINDS))
@FUZZ
@given(doc=top_level, pick=st.integers(0, 99), seed=st.integers(0, 2**32 - 1), mutated=st.booleans())
def test_claims_files_and_ablation_specs(project, kind, doc, pick, seed, mutated):
    sources, rel, load = KINDS[kind]
    text = mutate(sources[pick % len(sources)].read_text(), random.Random(seed)) if mutated else _dump(doc)
    loads_or_names_the_problem(lambda: load("fuzz"), project / rel, text)


def test_the_fuzzer_reaches_real_loads(project):
    """Guards the tests above against vacuity: unmutated real files load, so the fuzz inputs start from valid ones."""
    for p in REAL_RECIPES:
        load_recipe(p.stem)
    for p in REAL_CLAIMS:
        load_baseline(p.stem)
    for p in REAL_SPECS:
        load_ablation(p.stem)
    assert mutate("a: 1\nb: 2\n", random.Random(0)) != "a: 1\nb: 2\n"
    with pytest.raises(ReprozooError):
        (project / "recipes/classification/fuzz.yaml").write_text("family: [")
        load_recipe("fuzz")
