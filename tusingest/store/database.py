"""The database opened and its schema checked at startup (the embedded SQLite database migrates
itself); alembic is loaded only when a migration is due."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import asyncpg

from tusingest.errors import ConfigError
from tusingest.store.db import Database, open_database

# The head of migrations/versions; a test keeps the two in step.
HEAD = "0005"

# What a database that cannot be reached raises: refused, unknown host, unknown database.
_UNREACHABLE = (OSError, asyncpg.PostgresError, sqlite3.Error)


def _scrubbed(exc: Exception, url: str) -> str:
    """The driver's complaint, without the URL's user and password should it quote them."""
    text = str(exc)
    userinfo = url.partition("://")[2].rpartition("@")[0]
    return text.replace(userinfo, "***") if userinfo else text


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


async def open_checked(url: str) -> Database:
    """The database of `url` with its schema at `HEAD`: the embedded SQLite database migrates
    itself; PostgreSQL, shared by a cluster, must be migrated explicitly (`tusingest migrate`)
    and a schema that is behind stops startup."""
    try:
        db = await open_database(url)
    except _UNREACHABLE as exc:
        raise ConfigError("DATABASE_URL", f"cannot reach the database: {exc}") from None
    except ValueError as exc:  # the driver refuses the URL itself (a port, an sslmode)
        raise ConfigError("DATABASE_URL", f"not a usable URL: {_scrubbed(exc, url)}") from None
    try:
        current = await current_revision(db)
        if current != HEAD and is_sqlite(url):
            await _migrate_apart(url)
        elif current != HEAD:
            raise ConfigError(
                "DATABASE_URL",
                f"the database schema is at revision {current or 'none'}, this version needs "
                f"{HEAD}: run `tusingest migrate` first",
            )
    except BaseException:
        await db.close()
        raise
    return db


async def current_revision(db: Database) -> str | None:
    """The database's alembic revision; None for an empty (never migrated) database."""
    if db.dialect == "sqlite":
        exists = await db.fetchrow(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        )
    else:
        exists = await db.fetchrow("SELECT to_regclass('alembic_version') IS NOT NULL AS ok")
        exists = exists if exists is not None and exists["ok"] else None
    if exists is None:
        return None
    row = await db.fetchrow("SELECT version_num FROM alembic_version")
    return None if row is None else str(row["version_num"])


async def _migrate_apart(url: str) -> None:
    """Migrate in a child process: alembic and SQLAlchemy (~30 MiB) then never load into the
    server."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, sys; from tusingest.store.database import migrate; "
        "asyncio.run(migrate(sys.argv[1]))",
        url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await child.communicate()
    if child.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError("DATABASE_URL", f"cannot migrate: {lines[-1] if lines else 'failed'}")


async def migrate(url: str) -> str:
    """Upgrade the schema to head (`tusingest migrate`); returns the head revision."""
    if is_sqlite(url):
        # The embedded database lives in a data dir that may not exist yet.
        path = Path(url.split(":///", 1)[1])
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    # alembic stays resident (~11 MiB) once imported: load it only when a migration is due.
    from sqlalchemy.exc import DBAPIError

    from tusingest.store import schema

    try:
        await schema.upgrade(url)
    except (OSError, DBAPIError) as exc:
        reason = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
        raise ConfigError("DATABASE_URL", f"cannot migrate: {reason}") from None
    except ValueError as exc:  # SQLAlchemy or the driver refuses the URL itself
        raise ConfigError("DATABASE_URL", f"not a usable URL: {_scrubbed(exc, url)}") from None
    return schema.head_revision()
