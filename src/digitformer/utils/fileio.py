"""Atomic, durable file writes: a crash never leaves a half-written file behind.

The data goes to a temporary file beside the target, is flushed to the disk (fsync), then
renamed over the target in one step, and the folder is synced so the rename itself survives a
power cut. Files get the permissions the user's umask gives new files (mkstemp's are 0600).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from digitformer.utils.errors import DigitformerError

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; publish it as `final` only if the block succeeds.
    A write that fails (a full disk) raises an OSError naming `final`, not the temporary file,
    and leaves `final` as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TMP_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _sync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~UMASK)
        os.replace(tmp_path, final)
        _sync(final.parent)
    except OSError as exc:
        if exc.filename not in (None, str(tmp_path)):  # not the write: another file's error
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from exc
    except SafetensorError as exc:  # its writer's OS errors come as text
        full = "No space left" in str(exc)
        code, text = (errno.ENOSPC, "No space left on device") if full else (errno.EIO, str(exc))
        raise OSError(code, text, str(final)) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what interrupted atomic writes left in `folder` (a kill -9 skips the cleanup)."""
    stale = [p for p in Path(folder).glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _sync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # a folder that cannot be opened (some platforms): the rename still happened
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync folders
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(mask)
    return mask


UMASK = _read_umask()


def plain_name(name: str, what: str) -> str:
    """`name` when it is one plain folder name (no separator, not hidden, not . or ..): a run or
    study name must never lead out of the folder it is created in."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise DigitformerError(f"{what} {name!r} must be a plain folder name (no / or ..)")
    return name


def printable(name: str) -> str:
    """A file name as text any reader takes: the bytes of a name that is not UTF-8 (which
    Python keeps as lone surrogates, invalid in JSON and UTF-8) written as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


MAX_YAML_BYTES = 1 << 20  # a settings file or a search space is a few hundred bytes


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """A YAML file the user wrote (a profile, a sweep space), read safely: UTF-8, at most
    MAX_YAML_BYTES, no aliases (an alias bomb expands to gigabytes; settings need none), and
    nesting that would exhaust the parser is one line too."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DigitformerError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise DigitformerError(f"{path}: a {what} of {len(raw):,} bytes is not a {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DigitformerError(f"{path}: the {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise DigitformerError(f"{path}: YAML aliases (*name) are not allowed in a {what}")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())[:200]
        raise DigitformerError(f"{path}: not valid YAML ({problem})") from None
    except RecursionError:
        raise DigitformerError(f"{path}: the {what} is nested too deeply") from None
