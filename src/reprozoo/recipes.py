"""Recipes: YAML files under `recipes/<family>/` that fully describe one training setup.

A recipe may `extends:` another recipe (by name, or by a path relative to itself); the child's
keys override the parent's, mappings merge key by key, lists are replaced. A mapping whose `name`
changes (a different model, say) replaces the parent's mapping instead of merging with it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import paths, yamlfile
from .errors import ConfigError
from .families import family_names, get_family, missing_extra
from .schema import Component, Field, ListOf, Section, between
from .tricks import TRICKS, check_family

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,()-]*")  # the run folder runs/<name>/ stays under runs/
CORE_FIELDS = {
    "family": Field(str, choices=family_names, doc="task family that trains this recipe"),
    "description": Field(str, default="", doc="one line for `reprozoo list`"),
    "source": Field(str, default="", doc="where the published setup is described"),
    "deviations": ListOf(Field(str), doc="every known deviation from the published setup, with its reason"),
    "tricks": ListOf(Component(TRICKS), doc="named tricks applied on top of the recipe (`reprozoo list tricks`)"),
    "devices": Field(int, default=1, check=between(1, 1024),
                     doc="devices one run trains on, as DDP processes under torchrun; the batch size is their total"),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    config: dict[str, Any]  # resolved and validated; `extends` is gone
    chain: tuple[Path, ...]  # files that contributed, child first

    @property
    def family(self) -> str:
        return self.config["family"]

    @property
    def hash(self) -> str:
        """Content hash of the resolved recipe: equal setups give equal hashes, whatever the files."""
        blob = json.dumps(self.config, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump({"name": self.name, "hash": self.hash, **self.config}, sort_keys=False)


def all_recipe_files(root: Path | None = None) -> dict[str, Path]:
    """Recipe name (file stem) -> file, for every recipe under `recipes/` (ablation specs excluded).

    Names starting with "_" are partial recipes, there only to be extended."""
    root = root or paths.recipes_dir()
    found: dict[str, Path] = {}
    for p in sorted(root.rglob("*.yaml")):
        if {"ablations", "studies"} & set(p.relative_to(root).parts):  # specs, not recipes
            continue
        if p.stem in found:
            raise ConfigError(p, None, f"recipe name {p.stem!r} is also used by {found[p.stem]}; names must be unique")
        found[p.stem] = p
    return found


def recipe_names(root: Path | None = None) -> list[str]:
    """Runnable recipes: every recipe file except the partial `_*.yaml` ones."""
    return [n for n in all_recipe_files(root) if not n.startswith("_")]


def _locate(ref: str, base: Path | None, root: Path) -> Path:
    if ref.endswith((".yaml", ".yml")):
        cand = (base.parent / ref) if base is not None else Path(ref)
        if cand.exists():
            return cand
        if (root / ref).exists():
            return root / ref
        raise ConfigError(base or ref, "extends" if base else None, f"no recipe file {ref!r}")
    files = all_recipe_files(root)
    if ref not in files:
        raise ConfigError(base or ref, "extends" if base else None, f"unknown recipe {ref!r}", files)
    return files[ref]


def _merge(parent: dict, child: dict) -> dict:
    out = dict(parent)
    for k, v in child.items():
        pv = out.get(k)
        if isinstance(v, dict) and isinstance(pv, dict) and v.get("name", pv.get("name")) == pv.get("name"):
            out[k] = _merge(pv, v)
        else:
            out[k] = v
    return out


def _resolve_raw(path: Path, root: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, tuple[Path, ...]]:
    given = path
    try:
        path = path.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop
        raise ConfigError(path, None, f"cannot be resolved: {e}") from None
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(path, "extends", f"circular extends: {cycle}")
    data = yamlfile.load(given, "recipe")  # errors name the file as the user wrote it, not a link's target
    parent_ref = data.pop("extends", None)
    if parent_ref is None:
        return data, (path,)
    if not isinstance(parent_ref, str):
        raise ConfigError(path, "extends", f"expected a recipe name or path, got {parent_ref!r}")
    parent, chain = _resolve_raw(_locate(parent_ref, path, root), root, (*seen, path))
    return _merge(parent, data), (path, *chain)


def _path(ref: str | Path, root: Path) -> Path:
    return Path(ref) if Path(ref).suffix in (".yaml", ".yml") else _locate(str(ref), None, root)


def read_raw(ref: str | Path) -> dict:
    """The recipe merged over the ones it extends, not validated: for listings that must not import a
    family's framework (the site)."""
    root = paths.recipes_dir().resolve()
    return _resolve_raw(_path(ref, root), root)[0]


def load_recipe(ref: str | Path, root: Path | None = None) -> Recipe:
    """Load, resolve and validate a recipe given its name or its path."""
    root = (root or paths.recipes_dir()).resolve()
    raw, chain = _resolve_raw(_path(ref, root), root)
    config = validate_recipe(raw, chain[0])
    fam_dir = _family_dir(chain[0], root)
    if fam_dir is not None and fam_dir in family_names() and fam_dir != config["family"]:
        raise ConfigError(chain[0], "family", f"recipe lives in recipes/{fam_dir}/ but says family {config['family']!r}", [fam_dir])
    if not NAME.fullmatch(chain[0].stem):
        raise ConfigError(chain[0], None, f"recipe name {chain[0].stem!r} cannot name a run folder: use letters, digits "
                                          "and _ . + - = , ( ), not starting with . or -")
    return Recipe(name=chain[0].stem, path=chain[0], config=config, chain=chain)


def _family_dir(path: Path, root: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 else None


def recipe_schema(family: str) -> Section:
    return Section({**CORE_FIELDS, **get_family(family).schema})


def validate_recipe(raw: dict, file: Path) -> dict:
    if "family" not in raw:
        raise ConfigError(file, "family", "missing required key", family_names())
    Section(CORE_FIELDS).fields["family"].validate(raw["family"], file, "family")
    config = recipe_schema(raw["family"]).validate(raw, file, "")
    family = get_family(config["family"])
    check_family(config["tricks"], family, file)
    if config["devices"] == 1:
        del config["devices"]  # the default leaves the recipe's hash (and every committed run) as it was
    elif not getattr(family, "distributed", False):
        raise ConfigError(file, "devices", f"family {config['family']!r} trains on one device", [1])
    # Without its framework (an optional extra) a family cannot resolve its upstream configs: the
    # schema is checked here, the rest when the recipe is run, which first names the install command.
    if hasattr(family, "check") and missing_extra(config["family"]) is None:
        family.check(config, file)
    return config
