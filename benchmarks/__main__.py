"""`python -m benchmarks`: tusingest against a trivial aiohttp baseline (and, with --peers, the
tus servers a user could run instead), as ratios, verified.

    python -m benchmarks [--database-url postgresql://postgres@127.0.0.1:5432/test]
    python -m benchmarks --quick                     # small sizes: a check that it works
    python -m benchmarks --url http://127.0.0.1:8020 --token T --staging-dir DATA_DIR/staging
    python -m benchmarks --peers [--repeat 3] [--markdown PATH] [--tusingest-env KEY=VALUE]

Owns the command line: the sizes, the checks of the options, installing the peers on first use
(`peer_install`, before anything starts). The run itself — starting tusingest (`python -m
tusingest serve` in a temporary DATA_DIR, on SQLite or on a fresh PostgreSQL database created
on the `--database-url` server, migrated, and dropped at the end; or a running one with
`--url`), the baseline (`benchmarks/baseline.py`) and with --peers @tus/server, tuspyserver and
aiohttp-tus (`peer_servers`), each workload on each in turn, the report, always stopping
everything — is `session`.

Exit status: 0 verified (targets may be missed, see the RESULT line), 1 a workload did not
verify (with --peers: on any server, a peer that did not start included), 2 setup failed
(tusingest, the baseline, or installing the peers), 3 targets missed with `--fail-on-targets`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import session
from benchmarks.peer_install import Installed, InstallError, ensure
from benchmarks.peer_servers import PEERS
from benchmarks.specs import Spec, heads, many, single

WORKLOADS = ("W1", "W2", "W3", "W4")
CROWD_CONCURRENCY = 200


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
        description="Benchmark tusingest against a trivial aiohttp server and, with --peers, "
        "against @tus/server, tuspyserver and aiohttp-tus; print ratios.",
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
        "--storage-dir",
        type=Path,
        help="with --url: where its stored files land, to verify them (the local element's "
        "LOCAL_STORAGE_DIR, or the root of a reference element; default STAGING_DIR/../storage)",
    )
    target.add_argument(
        "--server-pid", type=int, help="with --url: its pid (default: found from the port)"
    )
    target.add_argument(
        "--server-log-level", default="WARNING", help="LOG_LEVEL of the started tusingest"
    )
    target.add_argument(
        "--tusingest-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the started tusingest, applied last (repeatable), e.g. "
        "UPLOAD_DIGESTS=sha256 or MIME_TYPE_VALIDATION=off",
    )
    target.add_argument(
        "--peers",
        action="store_true",
        help="also run @tus/server 2.4.5 (+ @tus/file-store), tuspyserver 4.4.3 and aiohttp-tus "
        "1.1.0 side by side, installed on first use into benchmarks/.peers/ (needs pip, node "
        ">= 20.19 and npm); report one column per server and tusingest's ratios to them",
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

    sizes.add_argument(
        "--crowd",
        type=int,
        default=0,
        help=f"also W5: this many uploads of 4 MiB at concurrency {CROWD_CONCURRENCY}, for "
        "the peak RSS with many uploads streaming at once (e.g. 600; default off)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per workload and server, in rotated order; the median is reported",
    )
    run.add_argument("--rss-limit-mib", type=float, default=80, help="RSS target (default 80)")
    run.add_argument("--request-timeout", type=float, default=300, help="seconds (default 300)")
    run.add_argument(
        "--workload-timeout", type=float, default=1800, help="seconds per run (default 1800)"
    )
    run.add_argument("--json", type=Path, help="also write the results here")
    run.add_argument(
        "--markdown", type=Path, help="with --peers: also write the tables as markdown here"
    )
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
    if args.crowd < 0:
        parser.error("--crowd must be >= 0")
    if args.url and not (args.token and args.staging_dir):
        parser.error("--url needs --token and --staging-dir (to verify the stored bytes)")
    if args.url and args.database_url:
        parser.error("--database-url starts a server; with --url the server has its own")
    if args.url and args.tusingest_env:
        parser.error("--tusingest-env configures a started server; with --url it has its own")
    if args.markdown and not args.peers:
        parser.error("--markdown writes the --peers tables: add --peers")
    args.tusingest_env = _environment(args.tusingest_env, parser)
    args.sizes = Sizes(w1, w2, w3, w4)
    args.full_sizes = (
        args.sizes,
        args.w1_patch_mib,
        args.w2_kib,
        args.w4_patch_mib,
        args.concurrency,
    ) == (FULL, 8, 64, 1, 32)

    specs = {
        "W1": single("W1", w1, args.w1_patch_mib, target=0.30),
        "W2": many(w2, args.w2_kib, args.concurrency),
        "W3": heads(w3, args.concurrency, target=0.5),
        "W4": single("W4", w4, args.w4_patch_mib, target=0.5),
    }
    chosen_specs = [specs[w] for w in WORKLOADS if w in chosen]
    if args.big_mib:
        chosen_specs.append(single("BIG", args.big_mib, args.w1_patch_mib, target=None))
    if args.crowd:
        chosen_specs.append(many(args.crowd, 4096, CROWD_CONCURRENCY, key="W5"))
    return chosen_specs


def _environment(pairs: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """`--tusingest-env KEY=VALUE` options as a dict (a later KEY wins)."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key != key.strip():
            parser.error(f"--tusingest-env: expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _install(args: argparse.Namespace) -> dict[str, Installed] | None:
    """With --peers: the peers' installs (installed now if missing); None without."""
    if not args.peers:
        return None
    return ensure([peer.pins for peer in PEERS])


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    specs = _specs(args, parser)
    try:
        installs = _install(args)
    except InstallError as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        return asyncio.run(session.run(args, specs, installs))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    raise SystemExit(main())
