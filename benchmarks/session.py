"""One benchmark run: start the servers, run each workload on each in turn, stop them all.

Owns the run's lifetime. Everything it starts (tusingest, the baseline, the peers, a fresh
PostgreSQL database, the temporary directory) is registered on one exit stack as soon as it
exists, so it is stopped and removed however the run ends (results, exception, Ctrl-C,
SIGTERM). tusingest or the baseline failing to start fails the run (exit 2); a peer failing to
start, or dying, only fails its own column. For each workload every server runs in turn, the
order rotated on each repeat, with sync(2) between runs so that no server's dirty pages are
written back during another's measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks import comparison, conditions, report
from benchmarks.conditions import TUSINGEST_DURABILITY, PeerState
from benchmarks.payload import MiB, Payload
from benchmarks.peer_install import Installed
from benchmarks.peer_servers import PEERS, start_peer, versions
from benchmarks.procstats import hwm_bytes
from benchmarks.servers import (
    Server,
    StartupError,
    create_database,
    database_url_for,
    drop_database,
    external_tusingest,
    start_baseline,
    start_tusingest,
    stop,
    tusingest_cli,
    tusingest_env,
)
from benchmarks.specs import Result, Spec
from benchmarks.workloads import Runner

Results = dict[str, dict[str, list[Result]]]


async def _tusingest(
    args: argparse.Namespace, specs: Sequence[Spec], work: Path, stack: contextlib.AsyncExitStack
) -> tuple[Server, str]:
    """The server under test, and how its sessions are stored (for the settings)."""
    if args.url:
        server = external_tusingest(
            args.url, args.token, args.staging_dir, args.server_pid, args.storage_dir
        )
        return server, "as configured on the running server"
    largest = max([1024] + [-(-s.size // MiB) for s in specs])
    data_dir = work / "data"
    database_url: str | None = None
    if args.database_url:
        name = await create_database(args.database_url)

        async def drop() -> None:
            try:
                await drop_database(args.database_url, name)
            except Exception as exc:
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)

        stack.push_async_callback(drop)
        database_url = database_url_for(args.database_url, name)
        host = database_url.split("@")[-1].rsplit("/", 1)[0]
        storage = f"PostgreSQL: fresh database {name} on {host} (migrated here, dropped after)"
    else:
        storage = "SQLite (embedded) in the temporary DATA_DIR"
    extra: dict[str, str] = args.tusingest_env
    env = tusingest_env(data_dir, database_url, largest, args.server_log_level, extra)
    if database_url:
        await asyncio.to_thread(tusingest_cli, ["migrate"], env)
    description = (
        f"`python -m tusingest serve` (one process), DATA_DIR={data_dir}, "
        f"LOG_LEVEL={args.server_log_level}, MAX_FILE_SIZE_MB={largest}"
    )
    if extra:
        description += " + " + " ".join(f"{k}={v}" for k, v in extra.items())
    server = await start_tusingest(env, work, description)
    stack.callback(stop, server.process)
    return server, storage


async def _peers(
    specs: Sequence[Spec],
    installs: dict[str, Installed],
    work: Path,
    stack: contextlib.AsyncExitStack,
) -> list[PeerState]:
    largest = max([1 << 30] + [s.size for s in specs])
    states: list[PeerState] = []
    for peer in PEERS:
        installed = installs[peer.pins.folder]
        try:
            server = await start_peer(peer, installed, work, largest)
        except (StartupError, OSError) as exc:
            states.append(PeerState(peer, installed, None, str(exc) or type(exc).__name__))
            continue
        stack.callback(stop, server.process)
        states.append(PeerState(peer, installed, server))
    return states


def _progress(spec: Spec, result: Result) -> str:
    head = f"  {spec.key:<4}{result.server:<13}"
    if not result.ok:
        first = result.problems[0].splitlines()[0] if result.problems else "?"
        return f"{head}FAILED: {first}"
    value = f"{result.value:,.1f} {spec.unit}" if result.value is not None else "—"
    elapsed = f"{result.elapsed_s:.2f} s" if result.elapsed_s is not None else "—"
    return f"{head}{value:>18}  in {elapsed}, verified"


def rotated(servers: Sequence[Server], repeat: int) -> list[Server]:
    """The running order of the `repeat`-th round: each round starts one server later."""
    if not servers:
        return []
    shift = repeat % len(servers)
    return [*servers[shift:], *servers[:shift]]


async def _measure(
    runner: Runner, specs: Sequence[Spec], servers: Sequence[Server], repeat: int
) -> Results:
    results: Results = {}
    for spec in specs:
        for round_ in range(repeat):
            for server in rotated(servers, round_):
                if server.alive():
                    result = await runner.run(spec, server)
                else:
                    result = Result(workload=spec.key, server=server.name)
                    status = server.process.returncode if server.process else None
                    result.fail(
                        f"the {server.name} process had exited (status {status}):\n"
                        f"{server.log_tail()}".rstrip()
                    )
                results.setdefault(spec.key, {}).setdefault(server.name, []).append(result)
                print(_progress(spec, result), flush=True)
                await asyncio.to_thread(os.sync)
    return results


def _columns(
    args: argparse.Namespace, tus: Server, storage: str, peers: Sequence[PeerState]
) -> list[comparison.Column]:
    """The report's columns: tusingest, the peers, the baseline; with what each one is."""
    kind = "PostgreSQL" if storage.startswith("PostgreSQL") else "SQLite"
    about = f"`python -m tusingest serve`, one process, sessions in {kind}"
    if args.url:
        kind, about = "running", f"a running server at {args.url}, its own configuration"
    env = " ".join(f"{k}={v}" for k, v in args.tusingest_env.items())
    about += f", with {env}" if env else ""
    columns = [
        comparison.Column(tus.name, f"tusingest ({kind})", about=f"{about}; {TUSINGEST_DURABILITY}")
    ]
    for state in peers:
        peer = state.peer
        described = f"{versions(peer, state.installed)}; {peer.serving}; {peer.durability}"
        columns.append(comparison.Column(peer.name, peer.name, True, peer.python, described))
    baseline = "benchmarks/baseline.py: aiohttp, reads and discards the bodies (no disk)"
    return [*columns, comparison.Column("baseline", "baseline", about=baseline)]


async def run(
    args: argparse.Namespace, specs: list[Spec], installs: dict[str, Installed] | None
) -> int:
    """The whole run; its exit status (see `python -m benchmarks --help`)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    payload = Payload(max(min(s.patch, s.size) for s in specs))
    async with contextlib.AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tusingest-bench-")))
        try:
            tus, storage = await _tusingest(args, specs, work, stack)
            base = await start_baseline(work)
        except StartupError as exc:
            print(f"benchmark setup failed: {exc}", file=sys.stderr)
            return 2
        stack.callback(stop, base.process)
        peers = await _peers(specs, installs, work, stack) if installs is not None else []
        settings = conditions.settings(
            tus=tus,
            storage=storage,
            base=base,
            peers=peers,
            extra_env=args.tusingest_env,
            full_sizes=args.full_sizes,
            repeat=args.repeat,
        )
        print(conditions.render(settings))
        print("\nruns:", flush=True)
        runner = Runner(
            payload,
            request_timeout=args.request_timeout,
            workload_timeout=args.workload_timeout,
            delete_small_uploads=bool(args.url),
        )
        started = [tus, *(s.server for s in peers if s.server is not None), base]
        results = await _measure(runner, specs, started, args.repeat)
        for state in peers:
            if state.server is None:
                for spec in specs:
                    failed = Result(workload=spec.key, server=state.peer.name)
                    failed.fail(f"{state.peer.name} did not start: {state.failure}")
                    results.setdefault(spec.key, {})[state.peer.name] = [failed]
        hwm = {s.name: hwm_bytes(s.pid) if s.pid else None for s in started}
    if installs is None:
        outcome = report.build(specs, results, hwm, args.rss_limit_mib, settings)
    else:
        columns = _columns(args, tus, storage, peers)
        outcome = comparison.build(specs, results, columns, settings, hwm)
    print()
    print(outcome.text, flush=True)
    if args.json:
        report.write_json(args.json, outcome)
    if args.markdown:
        args.markdown.write_text(outcome.markdown)
    if not outcome.verified:
        return 1
    if args.fail_on_targets and not outcome.targets_met:
        return 3
    return 0
