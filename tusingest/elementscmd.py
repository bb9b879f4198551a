"""`tusingest elements list|add|rm`: the storage elements configured in Redis, probed and
published for the nodes (imported only for this command: a server does not load it)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tusingest.domain import ElementMode
from tusingest.errors import ConfigError
from tusingest.registry.configs import ElementConfig, InvalidElementConfig, RedisElementConfigs
from tusingest.registry.monitor import CapacityMonitor, Published, published
from tusingest.registry.redis import announce, publish, withdraw
from tusingest.services import open_element_admin
from tusingest.settings.app import Settings
from tusingest.sizes import format_size


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """`tusingest elements list|add|rm`: 0 when done, 1 when Redis fails, 2 on a bad element."""
    storage = settings.storage
    if not storage.redis_url:
        raise ConfigError(
            "REDIS_URL",
            "not set: storage elements are configured in Redis; without REDIS_URL the registry "
            "is embedded in the server process and holds only its local element",
        )
    try:
        async with open_element_admin(settings) as (client, monitor):
            configs = RedisElementConfigs(client, storage.key_prefix)
            if args.elements_command == "list":
                return await _elements_list(client, configs, storage.key_prefix, args.json)
            if args.elements_command == "add":
                return await _elements_add(client, configs, monitor, storage.key_prefix, args)
            return await _elements_rm(client, configs, storage.key_prefix, args.element_id)
    except InvalidElementConfig as exc:
        print(f"tusingest elements: {exc.message}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        where = storage.redis_url.rpartition("@")[2]  # never print a password
        print(f"tusingest elements: Redis at {where}: {exc}", file=sys.stderr)
        return 1


async def _elements_add(
    client: aioredis.Redis,
    configs: RedisElementConfigs,
    monitor: CapacityMonitor,
    prefix: str,
    args: argparse.Namespace,
) -> int:
    config = ElementConfig(
        args.element_id, ElementMode(args.mode), args.endpoint.rstrip("/"), args.priority
    )
    existed = args.element_id in {c.element_id for c in await configs.all()}
    await configs.put(config)
    info = await monitor.probe(config)
    await publish(client, info, prefix=prefix, ttl_seconds=monitor.ttl_seconds)
    await announce(client, "updated" if existed else "created", prefix=prefix)
    print(
        f"{'updated' if existed else 'added'} {config.element_id} ({config.mode.value}, "
        f"priority {config.priority}, {config.endpoint})"
    )
    if info.healthy:
        print(
            f"  {format_size(info.capacity_used)} of {format_size(info.capacity_total)} used, "
            f"{info.status.value}, healthy"
        )
    else:
        problem = monitor.last_errors.get(config.element_id, "no answer")
        print(
            f"warning: {config.element_id} failed its probe ({problem}); it is configured and "
            "published as unhealthy, and takes no files until the capacity monitor finds it "
            "healthy",
            file=sys.stderr,
        )
    return 0


async def _elements_rm(
    client: aioredis.Redis, configs: RedisElementConfigs, prefix: str, element_id: str
) -> int:
    if not await configs.remove(element_id):
        print(
            f"tusingest elements: no storage element {element_id!r} is configured", file=sys.stderr
        )
        return 1
    await withdraw(client, element_id, prefix=prefix)
    await announce(client, "deleted", prefix=prefix)
    print(f"removed {element_id}")
    return 0


async def _elements_list(
    client: aioredis.Redis, configs: RedisElementConfigs, prefix: str, as_json: bool
) -> int:
    found = await configs.all()
    state = await published(client, [c.element_id for c in found], prefix=prefix)
    rows = [_element_row(c, state[c.element_id]) for c in found]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no storage elements configured (tusingest elements add --help)", file=sys.stderr)
        return 0
    header = ["ID", "MODE", "PRIO", "ENDPOINT", "USED/TOTAL", "USED%", "STATUS", "HEALTH"]
    table = [[*header, "LISTED", "UPDATED"]]
    for row in rows:
        expired = row["capacity_status"] == "expired"
        table.append(
            [
                row["id"],
                row["mode"],
                str(row["priority"]),
                row["endpoint"],
                "-"
                if expired
                else f"{format_size(row['capacity_used'])}/{format_size(row['capacity_total'])}",
                "-" if expired else f"{row['capacity_percent']:.2f}",
                row["capacity_status"],
                row["health_status"] or "-",
                "yes" if row["listed"] else "no",
                row["last_updated"] or "-",
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0


def _element_row(config: ElementConfig, entry: Published) -> dict[str, Any]:
    """One `elements list` row: the configuration plus what the registry publishes now."""
    info = entry.info
    fields = entry.fields
    return {
        "id": config.element_id,
        "mode": config.mode.value,
        "priority": config.priority,
        "endpoint": config.endpoint,
        "capacity_used": None if info is None else info.capacity_used,
        "capacity_total": None if info is None else info.capacity_total,
        "capacity_percent": None if info is None else float(fields.get("capacity_percent", 0)),
        "capacity_status": "expired" if info is None else info.status.value,
        "health_status": None if info is None else fields["health_status"],
        "listed": bool(entry.listing),
        "last_updated": fields.get("last_updated") if info is not None else None,
    }
