import pytest

from reprozoo.claims import load_baseline
from reprozoo.errors import ConfigError
from reprozoo.recipes import recipe_names

from conftest import write

SRC = "source: {paper: 'Some paper', table: 'Table 2'}\n"


def load(project, text):
    write(project / "baselines/x.yaml", text)
    return load_baseline("x", recipe_names())


def test_real_claims(project):
    b = load_baseline("mnist1d", recipe_names())
    assert [(c.recipe, c.value) for c in b.claims] == [
        ("mnist1d_logreg", 32), ("mnist1d_mlp", 68), ("mnist1d_cnn", 94), ("mnist1d_gru", 91)]
    assert all(c.tolerance == 0.5 and c.metric == "accuracy" and c.split == "test" for c in b.claims)
    assert b.claims[0].source["commit"].startswith("011d9bea")


def test_defaults_and_per_claim_source(project):
    b = load(project, "title: t\ndefaults: {metric: accuracy, split: test}\nclaims:\n"
                      "  - {recipe: mnist1d_mlp, value: 70, std: 1.5, n: 5, source: {repo: a/b, path: README.md, commit: abc}}\n")
    c = b.claims[0]
    assert (c.std, c.n, c.tolerance, c.margin) == (1.5, 5, 0.0, 2.0)
    assert c.source == {"repo": "a/b", "path": "README.md", "commit": "abc"}


@pytest.mark.parametrize("text, words", [
    ("title: t\ndefaults: {metric: accuracy, split: test}\nclaims:\n  - {recipe: mnist1d_mlp, value: 70}\n",
     ["claims[0].source", "needs a source"]),
    ("title: t\nsource: {paper: p}\ndefaults: {metric: a, split: s}\nclaims:\n  - {recipe: mnist1d_mlp, value: 1}\n",
     ["key 'source'", "`paper` and `table`"]),
    ("title: t\nsource: {paper: p, table: t, doi: x}\nclaims:\n  - {recipe: mnist1d_mlp, value: 1}\n",
     ["source.doi", "unknown key", "commit"]),
    ("title: t\n" + SRC + "defaults: {metric: a, split: s}\nclaims:\n  - {recipe: nope, value: 1}\n",
     ["claims[0].recipe", "unknown recipe 'nope'", "mnist1d_cnn"]),
    ("title: t\n" + SRC + "defaults: {metric: a, split: s}\nclaims:\n  - {recipe: mnist1d_mlp, value: high}\n",
     ["claims[0].value", "expected a number"]),
    ("title: t\n" + SRC + "defaults: {metric: a, split: s}\nclaims:\n  - {recipe: mnist1d_mlp, value: 1, std: -1}\n",
     ["claims[0].std", "must be >= 0"]),
    ("title: t\n" + SRC + "claims:\n  - {recipe: mnist1d_mlp, value: 1}\n", ["claims[0].metric", "missing"]),
    (SRC + "claims:\n  - {recipe: mnist1d_mlp, value: 1}\n", ["key 'title'", "missing required key"]),
])
def test_claim_errors(project, text, words):
    with pytest.raises(ConfigError) as e:
        load(project, text)
    msg = str(e.value)
    assert "x.yaml" in msg
    for w in words:
        assert w in msg, msg


def test_unknown_claims_file(project):
    with pytest.raises(ConfigError, match="no such claims file.*mnist1d"):
        load_baseline("nope")
