"""Atomic file replacement: write beside the target, then rename, so no half-written file looks finished.

The one place outputs are written this way (bundles, rasters' sidecars, reports, resume
parts, workflow summaries). The temporary name is hidden and unique, in the target's
folder, so the final :func:`os.replace` is atomic on POSIX and Windows.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text(folder / "a.txt", "hello").read_text()
    'hello'
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt']
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from geounet.errors import WriteError


def temp_path(path: Path, suffix: str = ".partial") -> Path:
    """A unique hidden name beside ``path`` (same folder, so the final rename is atomic).

    ``suffix`` matters to writers that pick a format by extension (GDAL, OGR).
    """
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk (a rename is durable only then); a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, *, suffix: str = ".partial", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is removed.

    ``durable=True`` also flushes the folder after the rename (crash-safe journals).
    Errors propagate unchanged, so the caller words the :class:`WriteError`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    what: str = "file",
    mode: int | None = 0o644,
    durable: bool = False,
) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    ``mode`` is set on the file (temporary files are private by default); ``durable``
    fsyncs the file and its folder.

    Raises:
        WriteError: naming ``what`` and the path, when the file cannot be written.
    """
    out = Path(path)
    try:
        with replacing(out, durable=durable) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
    except OSError as exc:
        raise WriteError(
            f"cannot write {what} {out}: {exc.strerror or exc}; check the folder exists and is writable"
        ) from exc
    return out


def write_text(path: str | os.PathLike[str], text: str, *, what: str = "file", durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), what=what, durable=durable)
