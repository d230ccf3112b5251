"""Engine and session factory; schema managed by alembic migrations."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: SQLite busy timeout: writers from the SCP threads, the scheduler and workers share one file.
SQLITE_BUSY_MS = 30_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash; a power loss may drop the last
    # commits, which the spool reconcile at start-up re-indexes from the files.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """One engine per process, a session factory, and migrations."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # Statement parameters hold patient IDs and accession numbers (the search, the
        # index): never let SQLAlchemy print them in an error message or a traceback.
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
        if self.is_sqlite:
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000}
            kwargs["pool_size"] = 32
            kwargs["max_overflow"] = 16
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 16
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # Take the write lock at BEGIN so concurrent writers queue on busy_timeout
            # instead of failing to upgrade a read lock (SQLITE_BUSY without retry).
            event.listen(self.engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
            event.listen(self.engine, "begin", lambda c: c.exec_driver_sql("BEGIN IMMEDIATE"))
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self._factory() as s, s.begin():
            yield s

    def read_session(self) -> Session:
        return self._factory()

    def migrate(self, lock_dir: Path | None = None) -> None:
        """Bring the schema to the newest alembic revision (safe from several processes)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        with self._migration_lock(lock_dir):
            command.upgrade(cfg, "head")
        log.info("database schema at head (%s)", self.engine.url.render_as_string(hide_password=True))

    @contextlib.contextmanager
    def _migration_lock(self, lock_dir: Path | None) -> Iterator[None]:
        if not self.is_sqlite:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(735205)"))
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(735205)"))
                    conn.commit()
            return
        db_path = make_url(self.url).database
        base = lock_dir or (Path(db_path).parent if db_path else Path("."))
        base.mkdir(parents=True, exist_ok=True)
        with open(base / ".migrate.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def dispose(self) -> None:
        self.engine.dispose()
