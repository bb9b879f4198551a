"""Schema migrations with alembic: upgrade, downgrade, the head revision."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", _for_sqlalchemy(url).replace("%", "%%"))
    return config


def _for_sqlalchemy(url: str) -> str:
    """`url` as SQLAlchemy's asyncpg dialect takes it: libpq's `sslmode=` (which the server's
    own asyncpg pool understands) is `ssl=` there, with the same values."""
    base, sep, query = url.partition("?")
    if not sep or not base.startswith("postgresql"):
        return url
    params = [
        "ssl=" + p.partition("=")[2] if p.startswith("sslmode=") else p for p in query.split("&")
    ]
    return f"{base}?{'&'.join(params)}"


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def upgrade(url: str, revision: str = "head") -> None:
    # env.py runs its own event loop, so alembic runs in a worker thread.
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


async def downgrade(url: str, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)
