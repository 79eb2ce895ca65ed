"""The monitoring state store: SQLite (default) and a real PostgreSQL on loopback."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from geounet.errors import ConfigError, ExecutionError
from geounet.state import LockHeld, StateStore


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL 15 on 127.0.0.1 (the same Debian server the pgstac fixture uses)."""
    from fixtures_stac import PG_BIN, _pg, free_port

    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 missing: apt-get install -y postgresql-15-postgis-3")
    base = Path(tempfile.mkdtemp(prefix="geounet-state-pg-", dir="/tmp"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    port = free_port()
    started = False
    try:
        _pg(str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync")
        opts = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off"
        _pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o", opts, "start")
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


def _monitor(tmp_path: Path) -> str:
    return f"m-{tmp_path.name}"  # tests share the PostgreSQL database: one monitor name each


def test_processed_watermark_and_runs(url: str | None, tmp_path: Path) -> None:
    name = _monitor(tmp_path)
    store = StateStore.open(url, out_dir=tmp_path)
    assert store.processed(name) == set() and store.watermark(name) is None
    run = store.start_run(name)
    d1, d2 = datetime(2020, 5, 1, tzinfo=UTC), datetime(2020, 6, 1, tzinfo=UTC)
    store.mark_processed(name, [("a", d2, 3), ("b", d1, 0)], run_id=run)
    store.mark_processed(name, [("a", d2, 3)], run_id=run)  # idempotent
    store.finish_run(run, status="done", scenes=2, rows=3, message="ok")
    assert store.processed(name) == {"a", "b"} and store.watermark(name) == d2
    assert [(r["status"], r["scenes"], r["rows"]) for r in store.runs(name)] == [("done", 2, 3)]
    assert store.processed("other-monitor") == set()
    store.close()
    again = StateStore.open(url, out_dir=tmp_path)  # persisted
    assert again.processed(name) == {"a", "b"}
    again.close()


def test_a_second_lock_holder_is_refused(url: str | None, tmp_path: Path) -> None:
    name = _monitor(tmp_path)
    first, second = StateStore.open(url, out_dir=tmp_path), StateStore.open(url, out_dir=tmp_path)
    with first.lock(name):
        with pytest.raises(LockHeld, match="another run of monitor"), second.lock(name):
            pass
        with second.lock(name + "-other"):  # other monitors are independent
            pass
    with second.lock(name):  # released
        pass
    first.close()
    second.close()


def test_sql_values_are_parameters_not_text(url: str | None, tmp_path: Path) -> None:
    name = _monitor(tmp_path) + "'; DROP TABLE geounet_scenes; --"
    store = StateStore.open(url, out_dir=tmp_path)
    store.mark_processed(name, [("x'y", None, 1)], run_id=store.start_run(name))
    assert store.processed(name) == {"x'y"}
    store.close()


def test_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not supported"):
        StateStore.open("mysql://me:pw@host/db", out_dir=tmp_path)
    with pytest.raises(
        ExecutionError, match=r"postgresql://me:\*\*\*@127\.0\.0\.1:1/x cannot be reached"
    ) as err:
        StateStore.open("postgresql://me:secret@127.0.0.1:1/x", out_dir=tmp_path)
    assert "secret" not in str(err.value)
