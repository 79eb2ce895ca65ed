"""The state store of a monitoring job: which scenes are done, the watermark, runs, and a lock.

SQLite in the output folder by default (``state.sqlite``), or a PostgreSQL URL
(``postgresql://user@host/db``) so a team's runs on several machines share one state.
Every statement is parameterized (``?`` placeholders, translated for psycopg).

* ``scenes``: (monitor, scene id) → scene datetime, run id, rows written. A scene is
  recorded only after its rows are in the time-series table (:meth:`StateStore.mark_processed`
  is the caller's last step), so a crash never marks unwritten work as done.
* the **watermark** is the newest processed scene datetime; searches start a look-back
  period before it, and the processed ids drop what is already done (late-arriving items
  with older datetimes are still picked up).
* ``runs``: one row per run (start, end, status, counts, message) for the log.
* :meth:`StateStore.lock`: one run per monitor at a time: a file lock per monitor beside the
  SQLite file, or a PostgreSQL advisory lock; a second run gets :class:`LockHeld` at once.

Example:
    >>> import tempfile, pathlib
    >>> from datetime import datetime, UTC
    >>> store = StateStore.open(None, out_dir=pathlib.Path(tempfile.mkdtemp()))
    >>> run = store.start_run("m")
    >>> store.mark_processed("m", [("s1", datetime(2020, 5, 1, tzinfo=UTC), 3)], run_id=run)
    >>> sorted(store.processed("m")), store.watermark("m").date().isoformat()
    (['s1'], '2020-05-01')
    >>> store.close()
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geounet.errors import ConfigError, ExecutionError, first_line

_DDL = (
    """CREATE TABLE IF NOT EXISTS geounet_runs (
        id {pk},
        monitor TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        status TEXT NOT NULL,
        scenes INTEGER DEFAULT 0,
        rows_written INTEGER DEFAULT 0,
        host TEXT,
        message TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS geounet_scenes (
        monitor TEXT NOT NULL,
        scene_id TEXT NOT NULL,
        scene_datetime TEXT,
        run_id INTEGER,
        rows_written INTEGER NOT NULL,
        processed_at TEXT NOT NULL,
        PRIMARY KEY (monitor, scene_id)
    )""",
)


class LockHeld(ExecutionError):
    """Another run of the same monitor holds the lock (the caller skips this run cleanly)."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StateStore:
    """Processed scenes, watermark, runs and the run lock of monitoring jobs (SQLite or PostgreSQL)."""

    def __init__(self, conn: Any, *, kind: str, where: str, lock_path: Path | None = None) -> None:
        self._conn = conn
        self.kind = kind
        self.where = where
        self._lock_path = lock_path
        pk = "INTEGER PRIMARY KEY AUTOINCREMENT" if kind == "sqlite" else "BIGSERIAL PRIMARY KEY"
        for ddl in _DDL:
            self._exec(ddl.format(pk=pk))
        self._commit()

    @classmethod
    def open(cls, url: str | None, *, out_dir: Path) -> StateStore:
        """SQLite ``out_dir/state.sqlite`` when ``url`` is None (or ``sqlite:///path``), else PostgreSQL.

        Raises:
            ConfigError: an unsupported URL scheme.
            ExecutionError: the database cannot be opened or reached.
        """
        if url is None or url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///")) if url else Path(out_dir) / "state.sqlite"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(str(path), timeout=30, isolation_level="DEFERRED")
            except sqlite3.Error as exc:
                raise ExecutionError(
                    f"state store {str(path)!r} cannot be opened ({exc}); check the path"
                ) from exc
            conn.execute("PRAGMA journal_mode=WAL")
            return cls(conn, kind="sqlite", where=str(path), lock_path=path.with_suffix(".lock"))
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError:
                raise ConfigError(
                    f"state.url={_redact(url)!r} needs psycopg: pip install 'geounet[postgres]'"
                ) from None

            try:
                pg = psycopg.connect(url, autocommit=False, connect_timeout=15)
            except psycopg.Error as exc:
                raise ExecutionError(
                    f"state store {_redact(url)} cannot be reached ({first_line(exc)}); "
                    "check state.url and that the server is up"
                ) from exc
            return cls(pg, kind="postgresql", where=_redact(url))
        raise ConfigError(
            f"state.url={_redact(url)!r} is not supported; use postgresql://... or leave it empty for SQLite"
        )

    # -- SQL helpers -------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text if self.kind == "sqlite" else text.replace("?", "%s")

    def _exec(self, text: str, params: Sequence[Any] = ()) -> Any:
        cur = self._conn.cursor()
        cur.execute(self._sql(text), tuple(params))
        return cur

    def _commit(self) -> None:
        self._conn.commit()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- lock --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, monitor: str) -> Iterator[None]:
        """Hold the run lock of ``monitor`` for the block; :class:`LockHeld` at once if another run has it."""
        if self.kind == "sqlite":
            from filelock import FileLock, Timeout

            assert self._lock_path is not None
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", monitor)[:80] + "-" + _short_hash(monitor)
            path = self._lock_path.with_name(f"{self._lock_path.stem}-{slug}.lock")
            lock = FileLock(str(path))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise LockHeld(
                    f"another run of monitor {monitor!r} holds {path}; "
                    "this run does nothing (the scheduler will try again next time)"
                ) from None
            try:
                yield
            finally:
                lock.release()
            return
        key = int.from_bytes(hashlib.sha256(f"geounet:{monitor}".encode()).digest()[:8], "big", signed=True)
        got = self._exec("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]
        self._commit()
        if not got:
            raise LockHeld(
                f"another run of monitor {monitor!r} holds the PostgreSQL advisory lock in {self.where}; "
                "this run does nothing (the scheduler will try again next time)"
            )
        try:
            yield
        finally:
            self._exec("SELECT pg_advisory_unlock(?)", (key,))
            self._commit()

    # -- scenes and watermark ----------------------------------------------------------------

    def processed(self, monitor: str) -> set[str]:
        """Ids of the scenes already processed by ``monitor``."""
        rows = self._exec("SELECT scene_id FROM geounet_scenes WHERE monitor = ?", (monitor,)).fetchall()
        return {str(r[0]) for r in rows}

    def watermark(self, monitor: str) -> datetime | None:
        """The newest processed scene datetime of ``monitor`` (None before the first success)."""
        row = self._exec(
            "SELECT MAX(scene_datetime) FROM geounet_scenes WHERE monitor = ?", (monitor,)
        ).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def mark_processed(
        self, monitor: str, scenes: Iterable[tuple[str, datetime | None, int]], *, run_id: int
    ) -> None:
        """Record scenes (id, datetime, rows written) as done, in one transaction; idempotent."""
        now = _now()
        for scene_id, when, rows in scenes:
            self._exec(
                "INSERT INTO geounet_scenes (monitor, scene_id, scene_datetime, run_id, rows_written, processed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (monitor, scene_id) DO NOTHING",
                (monitor, scene_id, when.isoformat() if when else None, run_id, rows, now),
            )
        self._commit()

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, monitor: str) -> int:
        """Record a run as started; returns its id."""
        cur = self._exec(
            "INSERT INTO geounet_runs (monitor, started, status, host) VALUES (?, ?, ?, ?) RETURNING id",
            (monitor, _now(), "running", f"{socket.gethostname()}:{os.getpid()}"),
        )
        run_id = int(cur.fetchone()[0])
        self._commit()
        return run_id

    def finish_run(
        self, run_id: int, *, status: str, scenes: int = 0, rows: int = 0, message: str = ""
    ) -> None:
        """Record a run's end: status (``done``, ``nothing-new``, ``failed``), counts and a message."""
        self._exec(
            "UPDATE geounet_runs SET finished = ?, status = ?, scenes = ?, rows_written = ?, message = ? "
            "WHERE id = ?",
            (_now(), status, scenes, rows, message[:2000], run_id),
        )
        self._commit()

    def runs(self, monitor: str) -> list[dict[str, Any]]:
        """All runs of ``monitor``, oldest first."""
        cur = self._exec(
            "SELECT id, started, finished, status, scenes, rows_written, message FROM geounet_runs "
            "WHERE monitor = ? ORDER BY id",
            (monitor,),
        )
        names = ("id", "started", "finished", "status", "scenes", "rows", "message")
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _redact(url: str) -> str:
    """A URL without its password, for messages.

    Example:
        >>> _redact("postgresql://me:secret@db:5432/x")
        'postgresql://me:***@db:5432/x'
    """
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
