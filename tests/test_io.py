import os

import pytest

from reprozoo.io import atomic_write_text, dumps_json, write_json


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "metrics.json"
    write_json(p, {"a": 1})
    before = p.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_json(p, {"a": 2})
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_json_is_canonical(tmp_path):
    assert dumps_json({"b": 1, "a": 0.1}) == dumps_json({"a": 0.1, "b": 1})
    atomic_write_text(tmp_path / "x" / "y.txt", "hi")
    assert (tmp_path / "x" / "y.txt").read_text() == "hi"
