import pytest
import yaml

from reprozoo.errors import ConfigError
from reprozoo.recipes import load_recipe, recipe_names

from conftest import write

BASE = "recipes/classification"


def error(project, text, name="bad"):
    write(project / BASE / f"{name}.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_recipe(name)
    return str(e.value)


def test_real_recipes_load_and_inherit(project):
    assert {"mnist1d_logreg", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru"} <= set(recipe_names())
    assert "_mnist1d" not in recipe_names()  # partial recipes are not runnable
    r = load_recipe("mnist1d_cnn")
    assert r.config["optim"] == {"name": "adam", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9,
                                 "nesterov": False, "betas": [0.9, 0.999]}
    assert r.config["schedule"]["iters"] == 8001 and r.config["schedule"]["shuffle"] is False
    assert r.config["model"] == {"name": "mnist1d_cnn", "num_classes": 10, "channels": 25, "input_size": 40}
    assert [p.name for p in r.chain] == ["mnist1d_cnn.yaml", "_mnist1d.yaml"]


def test_hash_depends_on_content_not_files(project):
    a = load_recipe("mnist1d_mlp")
    write(project / BASE / "copy.yaml", yaml.safe_dump({**a.config}))
    assert load_recipe("copy").hash == a.hash
    write(project / BASE / "other.yaml", "extends: mnist1d_mlp\noptim: {lr: 0.001}\n")
    assert load_recipe("other").hash != a.hash
    assert load_recipe("other").config["optim"]["name"] == "adam"  # mappings merge key by key


def test_changing_component_name_replaces_the_mapping(project):
    write(project / BASE / "swap.yaml", "extends: mnist1d_mlp\nmodel: {name: mnist1d_cnn}\n")
    assert "hidden_size" not in load_recipe("swap").config["model"]


@pytest.mark.parametrize("text, key, words", [
    ("extends: mnist1d_mlp\noptim: {lrr: 0.1}\n", "optim.lrr", ["unknown key", "allowed:", "lr"]),
    ("extends: mnist1d_mlp\nschedule: {iters: many}\n", "schedule.iters", ["expected an integer"]),
    ("extends: mnist1d_mlp\nschedule: {iters: 0}\n", "schedule.iters", ["must be > 0"]),
    ("extends: mnist1d_mlp\noptim: {name: lion}\n", "optim.name", ["unknown value 'lion'", "adam, adamw, sgd"]),
    ("extends: mnist1d_mlp\nfamily: vision\n", "family", ["unknown value 'vision'", "classification"]),
    ("extends: mnist1d_mlp\nmodel: {name: resnet9000}\n", "model.name", ["unknown model", "mnist1d_cnn"]),
    ("extends: mnist1d_mlp\nmodel: {depth: 3}\n", "model.depth", ["unknown parameter of model 'mnist1d_mlp'", "hidden_size"]),
    ("extends: mnist1d_mlp\nmodel: {hidden_size: wide}\n", "model.hidden_size", ["expected an integer"]),
    ("extends: mnist1d_mlp\ndataset: {name: imagenet}\n", "dataset.name", ["unknown dataset", "mnist1d"]),
    ("extends: mnist1d_mlp\ntricks: [warp_drive]\n", "tricks[0].name", ["unknown trick 'warp_drive'"]),
    ("extends: mnist1d_mlp\ncolour: blue\n", "colour", ["unknown key", "schedule"]),
    ("extends: no_such_recipe\n", "extends", ["unknown recipe 'no_such_recipe'", "mnist1d_cnn"]),
    ("family: classification\nmodel: {name: mnist1d_mlp}\n", "dataset", ["missing required key"]),
    ("description: no family\n", "family", ["missing required key", "classification"]),
    ("extends: mnist1d_mlp\neval: {split: dev}\n", "eval.split", ["unknown value 'dev'", "test", "val"]),
])
def test_validation_errors_name_file_key_and_allowed(project, text, key, words):
    msg = error(project, text)
    assert "bad.yaml" in msg and f"key '{key}'" in msg, msg
    for w in words:
        assert w in msg, msg


def test_cycle_and_yaml_errors(project):
    write(project / BASE / "a.yaml", "extends: b\n")
    write(project / BASE / "b.yaml", "extends: a\n")
    with pytest.raises(ConfigError, match="circular extends"):
        load_recipe("a")
    assert "not valid YAML" in error(project, "model: {name: [\n")
    assert "must be a YAML mapping" in error(project, "- 1\n- 2\n")


def test_duplicate_names_and_family_folder(project):
    write(project / "recipes/other/mnist1d_mlp.yaml", "extends: _mnist1d\n")
    with pytest.raises(ConfigError, match="also used by"):
        recipe_names()
    (project / "recipes/other/mnist1d_mlp.yaml").unlink()
    write(project / "recipes/classification/sub/x.yaml", "extends: mnist1d_mlp\n")
    assert load_recipe("x").family == "classification"


def test_unknown_recipe_by_name(project):
    with pytest.raises(ConfigError, match="unknown recipe 'nope'.*mnist1d_cnn"):
        load_recipe("nope")
