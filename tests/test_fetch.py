import hashlib

import pytest

from reprozoo.fetch import FetchError, fetch


def test_local_copy_is_preferred_and_checked(project, tmp_path, monkeypatch):
    store = tmp_path / "store"
    (store / "toy").mkdir(parents=True)
    (store / "toy" / "a.bin").write_bytes(b"hello")
    monkeypatch.setenv("REPROZOO_DATA", str(store))
    md5 = hashlib.md5(b"hello").hexdigest()
    got = fetch("toy", "a.bin", md5=md5, url="http://example.invalid/a.bin", dest=tmp_path / "out")
    assert got.read_bytes() == b"hello"
    with pytest.raises(FetchError, match="does not match"):
        fetch("toy", "a.bin", md5="0" * 32, url=None, dest=tmp_path / "out2")


def test_data_dir_of_the_project_is_a_root(project, tmp_path):
    (project / "data/toy").mkdir(parents=True)
    (project / "data/toy/b.bin").write_bytes(b"x")
    assert fetch("toy", "b.bin", md5=hashlib.md5(b"x").hexdigest(), url=None, dest=tmp_path / "o").read_bytes() == b"x"


def test_download_path_with_checksum(project, tmp_path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    got = fetch("toy", "c.bin", md5=md5, url=src.as_uri(), dest=tmp_path / "o")  # file:// exercises urllib, offline
    assert got.read_bytes() == b"payload" and not list((tmp_path / "o").glob("*.partial"))
    with pytest.raises(FetchError, match="downloaded md5"):
        fetch("toy", "d.bin", md5="0" * 32, url=src.as_uri(), dest=tmp_path / "o")
    assert not (tmp_path / "o" / "d.bin").exists()


def test_offline_error_says_where_to_put_the_file(project, tmp_path):
    with pytest.raises(FetchError) as e:
        fetch("toy", "e.bin", md5="0" * 32, url=(tmp_path / "nowhere").as_uri(), dest=tmp_path / "o")
    assert "Put the file at" in str(e.value) and "data/toy/e.bin" in str(e.value) and "REPROZOO_DATA" in str(e.value)
