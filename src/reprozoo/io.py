"""Atomic file writes (readers see the old file or the complete new one, never a partial one) and
exclusive locks between processes."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys and a trailing newline, so equal content gives equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike, limit: int = 256 << 20) -> Any:
    """A JSON file reprozoo wrote (metrics, env, reports); a damaged one is a ConfigError naming it."""
    try:
        return json.loads(bounded_text(Path(path), "JSON", limit))
    except json.JSONDecodeError as e:
        raise ConfigError(path, None, f"not valid JSON ({e.msg} at line {e.lineno}); was it cut short or edited?") from None


def bounded_text(path: Path, what: str, limit: int) -> str:
    """A regular file's UTF-8 text, at most `limit` bytes; anything else (a directory, a device such as
    /dev/zero behind a symlink, a symlink loop, binary data) is a ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(path, None, f"is a directory, not a {what} file")
    try:
        if not path.is_file():  # follows symlinks: a device or a FIFO would never end
            raise ConfigError(path, None, f"not a regular file (a device, a pipe or a dangling link), not a {what} file"
                              if path.exists() or path.is_symlink() else "file not found")
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
        if len(raw) > limit:
            raise ConfigError(path, None, f"more than {limit} bytes: too large for a {what} file")
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot be read: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): "
                                      f"is it really a {what} file?") from None


@contextlib.contextmanager
def exclusive(lock_path: Path, wait_for: str | None = None):
    """An exclusive lock on `lock_path`: held by another process, an error, or with `wait_for` (what the
    holder is doing, e.g. "preparing dataset 'mnist'") a wait that says so."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait_for is None:
                raise RunError(f"another process is running this run (lock {lock_path})") from None
            print(f"waiting: another process is {wait_for}", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
