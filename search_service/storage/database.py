"""The SQLite database: one connection, one write lock, explicit transactions, numbered migrations.

Writes are serialised by one reentrant lock and run in ``BEGIN IMMEDIATE`` transactions. WAL
lets readers on other connections (index builds) run beside the writer; ``synchronous=FULL``
makes a commit survive power loss, not only a process crash. The schema lives in numbered SQL
files beside this module (``migrations/NNNN_*.sql``); a database is brought forward one file at
a time, each in its own transaction together with its version number.
A write that meets a full disk is rolled back whole and raises InsufficientStorageError; opening,
and writes that free space (deletes), may spend the disk reserve instead (see ``space``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from search_service.errors import refused_when_full
from search_service.storage.space import Reserve

FILE_NAME = "facesearch.sqlite3"

# Lists are passed as one JSON parameter and expanded by SQLite (json_each): no limit on their
# length from the number of bound variables, and no SQL built from data.
IN_LIST = "IN (SELECT value FROM json_each(?))"


@dataclass(frozen=True)
class Migration:
    version: int  # the schema version after it runs
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migration files, in order; version N is the file numbered N."""
    folder = resources.files("search_service.storage") / "migrations"
    files = sorted((entry for entry in folder.iterdir() if entry.name.endswith(".sql")), key=lambda f: f.name)
    migrations = [Migration(int(file.name[:4]), file.name, file.read_text()) for file in files]
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise RuntimeError(f"migration files are not numbered 1..n: {[m.name for m in migrations]}")
    return migrations


MIGRATIONS = load_migrations()
SCHEMA_VERSION = MIGRATIONS[-1].version


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def as_list(values: Sequence[Any]) -> str:
    """A list as the one parameter of an ``IN_LIST`` clause."""
    return json.dumps(list(values))


class Database:
    def __init__(self, path: Path, reserve: Reserve) -> None:
        self.path = path
        self.reserve = reserve
        # Reentrant: repositories hold it across file operations and the transaction that names
        # the files, so that a delete can never unlink a file a concurrent ingest is about to use.
        self.lock = threading.RLock()
        # Face embeddings are biometric data: the file is the owner's alone (SQLite gives its -wal
        # and -shm files the same mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o007:  # a store made before this rule: nothing for other users
            path.chmod(mode & ~0o007)
        self._connection: sqlite3.Connection
        # Reopened on a full disk, SQLite needs room for its WAL and shared-memory files.
        reserve.freeing(self._connect)

    def _connect(self) -> None:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) by transaction().
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        with self.lock:
            self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the lock; commits on success, rolls back on error (a full
        disk: InsufficientStorageError)."""
        with self.lock, refused_when_full("the change"):
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
                self._connection.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does, even at COMMIT).
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, for reads that take several statements."""
        with self.lock:
            yield self._connection

    def read(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._connection.execute(sql, parameters).fetchall()

    def separate_reader(self) -> sqlite3.Connection:
        """A connection of its own, for long reads beside the writer (WAL); the caller closes it."""
        return sqlite3.connect(self.path)

    @property
    def schema_version(self) -> int:
        return int(self.read("PRAGMA user_version")[0][0])

    def meta(self, key: str) -> str | None:
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}; this build reads {SCHEMA_VERSION}")
        with self.lock:
            for migration in MIGRATIONS[version:]:
                self._connection.executescript(
                    f"BEGIN IMMEDIATE; {migration.sql}; PRAGMA user_version = {migration.version}; COMMIT;"
                )
            if self.meta("store_id") is None:
                # Identifies this store for its whole life: an index built from another one is rebuilt.
                with self.transaction() as db:
                    db.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
