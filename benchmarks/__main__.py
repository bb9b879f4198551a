"""`python -m benchmarks`: tusingest against a trivial aiohttp baseline, as ratios, verified.

    python -m benchmarks [--database-url postgresql://postgres@127.0.0.1:5432/test]
    python -m benchmarks --quick                     # small sizes: a check that it works
    python -m benchmarks --url http://127.0.0.1:8020 --token T --staging-dir DATA_DIR/staging

Owns the command line and the run's lifetime: it starts tusingest (`python -m tusingest
serve` in a temporary DATA_DIR, on SQLite or on a fresh PostgreSQL database created on the
`--database-url` server, migrated, and dropped at the end) — or uses a running one with
`--url` — and the baseline (`benchmarks/baseline.py`), runs each workload on both in turn,
prints the report, and always stops the servers and removes what it created.

Exit status: 0 verified (targets may be missed, see the RESULT line), 1 a workload did not
verify, 2 setup failed, 3 targets missed with `--fail-on-targets`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks import report
from benchmarks.payload import Payload
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
from benchmarks.workloads import Result, Runner, Spec, heads, many, single

WORKLOADS = ("W1", "W2", "W3", "W4")


@dataclass(frozen=True)
class Sizes:
    w1_mib: int
    w2_count: int
    w3_count: int
    w4_mib: int


FULL = Sizes(w1_mib=1024, w2_count=2000, w3_count=10_000, w4_mib=256)
QUICK = Sizes(w1_mib=64, w2_count=200, w3_count=1000, w4_mib=32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark tusingest against a trivial aiohttp server; print ratios.",
    )
    target = parser.add_argument_group("server under test (default: started here)")
    target.add_argument(
        "--database-url",
        help="PostgreSQL server for the sessions: a fresh database is created there, migrated "
        "and dropped at the end (default: SQLite in the temporary DATA_DIR)",
    )
    target.add_argument("--url", help="use this running tusingest instead (http://host:port)")
    target.add_argument("--token", help="with --url: a bearer token (`tusingest token`)")
    target.add_argument("--staging-dir", type=Path, help="with --url: its STAGING_DIR")
    target.add_argument(
        "--server-pid", type=int, help="with --url: its pid (default: found from the port)"
    )
    target.add_argument(
        "--server-log-level", default="WARNING", help="LOG_LEVEL of the started tusingest"
    )

    sizes = parser.add_argument_group("workloads")
    sizes.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma list of W1..W4 (default: all)"
    )
    sizes.add_argument(
        "--quick",
        action="store_true",
        help=f"small default sizes: W1 {QUICK.w1_mib} MiB, W2 {QUICK.w2_count} uploads, "
        f"W3 {QUICK.w3_count} HEADs, W4 {QUICK.w4_mib} MiB",
    )
    sizes.add_argument("--w1-mib", type=int, help=f"W1 upload size (default {FULL.w1_mib})")
    sizes.add_argument("--w1-patch-mib", type=int, default=8, help="W1 PATCH size (default 8)")
    sizes.add_argument("--w2-count", type=int, help=f"W2 uploads (default {FULL.w2_count})")
    sizes.add_argument("--w2-kib", type=int, default=64, help="W2 upload size (default 64)")
    sizes.add_argument("--w3-count", type=int, help=f"W3 HEADs (default {FULL.w3_count})")
    sizes.add_argument("--w4-mib", type=int, help=f"W4 upload size (default {FULL.w4_mib})")
    sizes.add_argument("--w4-patch-mib", type=int, default=1, help="W4 PATCH size (default 1)")
    sizes.add_argument("--concurrency", type=int, default=32, help="W2/W3 (default 32)")
    sizes.add_argument(
        "--big-mib",
        type=int,
        default=0,
        help="also one upload of this size in --w1-patch-mib PATCHes, for its peak RSS "
        "(e.g. 4096; needs the disk space; default off)",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--repeat", type=int, default=1, help="runs per workload; best is reported")
    run.add_argument("--rss-limit-mib", type=float, default=80, help="RSS target (default 80)")
    run.add_argument("--request-timeout", type=float, default=300, help="seconds (default 300)")
    run.add_argument(
        "--workload-timeout", type=float, default=1800, help="seconds per run (default 1800)"
    )
    run.add_argument("--json", type=Path, help="also write the results here")
    run.add_argument(
        "--fail-on-targets", action="store_true", help="exit 3 when a target is missed"
    )
    return parser


def _specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Spec]:
    chosen = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown or not chosen:
        parser.error(f"--workloads: unknown {', '.join(unknown) or '(none given)'}")
    defaults = QUICK if args.quick else FULL
    w1 = args.w1_mib if args.w1_mib is not None else defaults.w1_mib
    w2 = args.w2_count if args.w2_count is not None else defaults.w2_count
    w3 = args.w3_count if args.w3_count is not None else defaults.w3_count
    w4 = args.w4_mib if args.w4_mib is not None else defaults.w4_mib
    for name, value in [
        ("--w1-mib", w1),
        ("--w1-patch-mib", args.w1_patch_mib),
        ("--w2-count", w2),
        ("--w2-kib", args.w2_kib),
        ("--w3-count", w3),
        ("--w4-mib", w4),
        ("--w4-patch-mib", args.w4_patch_mib),
        ("--concurrency", args.concurrency),
        ("--repeat", args.repeat),
    ]:
        if value <= 0:
            parser.error(f"{name} must be > 0")
    if args.big_mib < 0:
        parser.error("--big-mib must be >= 0")
    if args.url and not (args.token and args.staging_dir):
        parser.error("--url needs --token and --staging-dir (to verify the stored bytes)")
    if args.url and args.database_url:
        parser.error("--database-url starts a server; with --url the server has its own")
    args.sizes = Sizes(w1, w2, w3, w4)

    specs = {
        "W1": single("W1", w1, args.w1_patch_mib, target=0.30),
        "W2": many(w2, args.w2_kib, args.concurrency),
        "W3": heads(w3, args.concurrency, target=0.5),
        "W4": single("W4", w4, args.w4_patch_mib, target=0.5),
    }
    chosen_specs = [specs[w] for w in WORKLOADS if w in chosen]
    if args.big_mib:
        chosen_specs.append(single("BIG", args.big_mib, args.w1_patch_mib, target=None))
    return chosen_specs


async def _tusingest(
    args: argparse.Namespace, specs: Sequence[Spec], work: Path, stack: contextlib.AsyncExitStack
) -> tuple[Server, str]:
    """The server under test, and how its sessions are stored (for the settings)."""
    if args.url:
        server = external_tusingest(args.url, args.token, args.staging_dir, args.server_pid)
        return server, "as configured on the running server"
    largest = max([1024] + [-(-s.size // (1 << 20)) for s in specs])
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
    env = tusingest_env(data_dir, database_url, largest, args.server_log_level)
    if database_url:
        await asyncio.to_thread(tusingest_cli, ["migrate"], env)
    description = (
        f"`python -m tusingest serve` (one process), DATA_DIR={data_dir}, "
        f"LOG_LEVEL={args.server_log_level}, MAX_FILE_SIZE_MB={largest}"
    )
    server = await start_tusingest(env, work, description)
    stack.callback(stop, server.process)
    return server, storage


def _settings(
    args: argparse.Namespace, specs: Sequence[Spec], tus: Server, base: Server, storage: str
) -> dict[str, str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    quick = (args.sizes, args.w1_patch_mib, args.w2_kib, args.w4_patch_mib, args.concurrency) != (
        FULL,
        8,
        64,
        1,
        32,
    )
    return {
        "tusingest": f"{tus.url} (pid {tus.pid or '?'}): {tus.description}",
        "sessions": storage,
        "durability": "fsync on: tusingest fsyncs each PATCH before advancing the offset "
        "(not configurable)",
        "baseline": f"{base.url} (pid {base.pid}): {base.description}",
        "client": "benchmarks/client.py: raw-socket HTTP/1.1 keep-alive, Content-Length bodies "
        "sent zero-copy from a preallocated pseudo-random pattern, distinct per upload",
        "host": f"{os.cpu_count()} CPUs, load average {load} at start; Python "
        f"{platform.python_version()}, aiohttp {aiohttp.__version__}",
        "sizes": "smaller than the issue's: targets are indicative only"
        if quick
        else "the issue's",
        "runs": f"best of {args.repeat} per workload and server, tusingest and baseline alternating"
        if args.repeat > 1
        else "one per workload and server, tusingest then baseline",
        "metrics": "server CPU = utime+stime from /proc/<pid>/stat (+ descendants); RSS = "
        "VmRSS sampled every 10 ms during the measured part",
    }


def _progress(spec: Spec, result: Result) -> str:
    head = f"  {spec.key:<4}{result.server:<10}"
    if not result.ok:
        first = result.problems[0].splitlines()[0] if result.problems else "?"
        return f"{head}FAILED: {first}"
    value = f"{result.value:,.1f} {spec.unit}" if result.value is not None else "—"
    elapsed = f"{result.elapsed_s:.2f} s" if result.elapsed_s is not None else "—"
    return f"{head}{value:>18}  in {elapsed}, verified"


async def _run(args: argparse.Namespace, specs: list[Spec]) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    payload = Payload(max(min(s.patch, s.size) for s in specs))
    results: dict[str, dict[str, list[Result]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tusingest-bench-")))
        try:
            tus, storage = await _tusingest(args, specs, work, stack)
            base = await start_baseline(work)
        except StartupError as exc:
            print(f"benchmark setup failed: {exc}", file=sys.stderr)
            return 2
        stack.callback(stop, base.process)
        settings = _settings(args, specs, tus, base, storage)
        print("settings:")
        print("\n".join(f"  {k + ':':<12}{v}" for k, v in settings.items()))
        print("\nruns:", flush=True)
        runner = Runner(
            payload,
            request_timeout=args.request_timeout,
            workload_timeout=args.workload_timeout,
            delete_small_uploads=bool(args.url),
        )
        for spec in specs:
            for _ in range(args.repeat):
                for server in (tus, base):
                    result = await runner.run(spec, server)
                    results.setdefault(spec.key, {}).setdefault(server.name, []).append(result)
                    print(_progress(spec, result), flush=True)
        hwm = {s.name: hwm_bytes(s.pid) if s.pid else None for s in (tus, base)}
    outcome = report.build(specs, results, hwm, args.rss_limit_mib, settings)
    print()
    print(outcome.text, flush=True)
    if args.json:
        report.write_json(args.json, outcome)
    if not outcome.verified:
        return 1
    if args.fail_on_targets and not outcome.targets_met:
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    specs = _specs(args, parser)
    try:
        return asyncio.run(_run(args, specs))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    raise SystemExit(main())
