"""What a workload is and what one run of it yields: `Spec` (W1–W4, BIG) and `Result`."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from benchmarks.payload import MiB
from benchmarks.procstats import Meter

KiB = 1 << 10
HEAD_SEED_UPLOADS = 64
HEAD_SEED_BYTES = 4 * KiB


@dataclass(frozen=True)
class Spec:
    key: str  # W1 .. W4, BIG
    kind: str  # "single" | "many" | "heads"
    title: str
    size: int  # bytes per upload
    patch: int  # PATCH body size
    count: int  # uploads ("many"), HEADs ("heads"), 1 ("single")
    concurrency: int
    unit: str
    target: float | None = None  # minimum ratio to the baseline


def single(key: str, mib: int, patch_mib: int, target: float | None) -> Spec:
    return Spec(
        key=key,
        kind="single",
        title=f"1 upload of {mib} MiB in {patch_mib} MiB PATCHes",
        size=mib * MiB,
        patch=patch_mib * MiB,
        count=1,
        concurrency=1,
        unit="MiB/s",
        target=target,
    )


def many(count: int, kib: int, concurrency: int, key: str = "W2") -> Spec:
    return Spec(
        key=key,
        kind="many",
        title=f"{count} uploads of {kib} KiB (POST + PATCH) at concurrency {concurrency}",
        size=kib * KiB,
        patch=kib * KiB,
        count=count,
        concurrency=concurrency,
        unit="uploads/s",
    )


def heads(count: int, concurrency: int, target: float | None) -> Spec:
    return Spec(
        key="W3",
        kind="heads",
        title=f"{count} HEADs over {HEAD_SEED_UPLOADS} uploads at concurrency {concurrency}",
        size=HEAD_SEED_BYTES,
        patch=HEAD_SEED_BYTES,
        count=count,
        concurrency=concurrency,
        unit="HEAD/s",
        target=target,
    )


@dataclass
class Result:
    workload: str
    server: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    value: float | None = None  # in the spec's unit
    elapsed_s: float | None = None
    bytes_sent: int = 0
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    start_rss: int | None = None
    peak_rss: int | None = None
    rss_samples: int = 0
    verified: str = ""

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def measured(self, meter: Meter) -> None:
        self.elapsed_s = meter.elapsed
        self.client_cpu_s = meter.client_cpu
        self.server_cpu_s = meter.server_cpu
        self.start_rss = meter.start_rss
        self.peak_rss = meter.peak_rss
        self.rss_samples = meter.samples


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _median_int(values: Sequence[int | None]) -> int | None:
    found = _median([None if v is None else float(v) for v in values])
    return None if found is None else round(found)


def median_run(runs: Sequence[Result]) -> Result | None:
    """What the report shows for repeated runs: the first failed run if any run failed, else
    a run whose figures are each the median of the runs' (throughput, CPU, RSS, latency)."""
    if not runs:
        return None
    for run in runs:
        if not run.ok:
            return run
    if len(runs) == 1:
        return runs[0]
    return replace(
        runs[0],
        value=_median([r.value for r in runs]),
        elapsed_s=_median([r.elapsed_s for r in runs]),
        p50_ms=_median([r.p50_ms for r in runs]),
        p99_ms=_median([r.p99_ms for r in runs]),
        server_cpu_s=_median([r.server_cpu_s for r in runs]),
        client_cpu_s=_median([r.client_cpu_s for r in runs]),
        start_rss=_median_int([r.start_rss for r in runs]),
        peak_rss=_median_int([r.peak_rss for r in runs]),
        rss_samples=sum(r.rss_samples for r in runs),
    )
