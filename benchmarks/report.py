"""The report without --peers: ratios to the baseline, targets, CPU, RSS, verification; text, JSON.

Owns how results are judged (a ratio needs both runs verified; a target counts as missed when
it cannot be measured; repeated runs count by their median, `specs.median_run`) and presented;
it does no I/O besides writing the JSON file. With --peers the report is `comparison`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.payload import MiB
from benchmarks.specs import Result, Spec, median_run

SERVERS = ("tusingest", "baseline")
GiB = 1 << 30
# A client busier than this share of one core is likely what limits the rate.
CLIENT_BOUND = 0.85


@dataclass(frozen=True)
class Check:
    """One target: what is measured, its value, the limit, whether it is met."""

    name: str
    value: float | None
    limit: float
    kind: str  # "ratio>=" | "MiB<="

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        if self.kind == "ratio>=":
            return self.value >= self.limit
        return self.value <= self.limit

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.2f}"
        sign = "≥" if self.kind == "ratio>=" else "≤"
        unit = "" if self.kind == "ratio>=" else " MiB"
        return f"{self.name} {shown}{unit} (target {sign} {self.limit:g}{unit})"


@dataclass(frozen=True)
class Outcome:
    text: str
    verified: bool
    checks: list[Check]
    data: dict[str, object]
    markdown: str = ""  # the tables as markdown (--peers)

    @property
    def targets_met(self) -> bool:
        return all(c.met for c in self.checks)


Results = Mapping[str, Mapping[str, list[Result]]]  # workload -> server -> runs


def ratio(spec: Spec, results: Results) -> float | None:
    tus = median_run(results.get(spec.key, {}).get("tusingest", []))
    base = median_run(results.get(spec.key, {}).get("baseline", []))
    if not tus or not base or not tus.ok or not base.ok or not tus.value or not base.value:
        return None
    return tus.value / base.value


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / MiB:.1f}"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    first, *rest = cells
    return f"{first:<{widths[0]}}" + "".join(
        f"  {c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)
    )


def build(
    specs: Sequence[Spec],
    results: Results,
    hwm: Mapping[str, int | None],
    rss_limit_mib: float,
    settings: Mapping[str, str],
) -> Outcome:
    picked = {
        spec.key: {name: median_run(results.get(spec.key, {}).get(name, [])) for name in SERVERS}
        for spec in specs
    }
    checks: list[Check] = []
    lines: list[str] = []

    widths = (22, 14, 14, 7, 10, 5)
    lines.append(_row(["workload", "tusingest", "baseline", "ratio", "target", "met?"], widths))
    lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for spec in specs:
        cells = [f"{spec.key} {spec.unit}"]
        for name in SERVERS:
            run = picked[spec.key][name]
            cells.append("FAILED" if run is None or not run.ok else _num(run.value))
        r = ratio(spec, results)
        cells.append(_num(r, 2))
        if spec.target is None:
            cells += ["—", "—"]
        else:
            check = Check(f"{spec.key} ratio", r, spec.target, "ratio>=")
            checks.append(check)
            cells += [f"≥ {spec.target:.2f}", "yes" if check.met else "NO"]
        lines.append(_row(cells, widths))
    for spec in specs:
        if spec.key not in ("W1", "BIG"):
            continue
        tus, base = picked[spec.key]["tusingest"], picked[spec.key]["baseline"]
        peak = tus.peak_rss if tus and tus.ok else None
        peak_mib = None if peak is None else peak / MiB
        check = Check(f"{spec.key} peak RSS", peak_mib, rss_limit_mib, "MiB<=")
        checks.append(check)
        lines.append(
            _row(
                [
                    f"{spec.key} peak RSS MiB",
                    _mib(peak),
                    _mib(base.peak_rss if base else None),
                    "—",
                    f"≤ {rss_limit_mib:g}",
                    "yes" if check.met else "NO",
                ],
                widths,
            )
        )

    lines += ["", "workloads:"]
    lines += [f"  {spec.key:<4} {spec.title}" for spec in specs]

    detail = (30, 22, 22)
    latency = [s for s in specs if s.kind in ("many", "heads")]
    if latency:
        lines += ["", _row(["latency p50 / p99 (ms)", "tusingest", "baseline"], detail)]
        for spec in latency:
            cells = [f"{spec.key} per {'upload' if spec.kind == 'many' else 'HEAD'}"]
            for name in SERVERS:
                run = picked[spec.key][name]
                ok = run is not None and run.ok
                cells.append(
                    f"{_num(run.p50_ms, 2)} / {_num(run.p99_ms, 2)}" if run and ok else "—"
                )
            lines.append(_row(cells, detail))

    lines += ["", _row(["server CPU (user+sys)", "tusingest", "baseline"], detail)]
    for spec in specs:
        per, scale = _cpu_unit(spec)
        cells = [f"{spec.key} {per}"]
        for name in SERVERS:
            run = picked[spec.key][name]
            if run is None or run.server_cpu_s is None or not run.elapsed_s:
                cells.append("—")
                continue
            busy = run.server_cpu_s / run.elapsed_s * 100
            cells.append(f"{run.server_cpu_s * scale:,.2f} ({busy:.0f}% of a core)")
        lines.append(_row(cells, detail))

    lines += ["", _row(["client CPU (this process)", "vs tusingest", "vs baseline"], detail)]
    for spec in specs:
        cells = [f"{spec.key} % of a core"]
        for name in SERVERS:
            run = picked[spec.key][name]
            if run is None or run.client_cpu_s is None or not run.elapsed_s:
                cells.append("—")
            else:
                cells.append(f"{run.client_cpu_s / run.elapsed_s * 100:.0f}%")
        lines.append(_row(cells, detail))
    lines += _bottlenecks(specs, picked)

    lines += ["", _row(["server RSS MiB (start → peak)", "tusingest", "baseline"], detail)]
    for spec in specs:
        cells = [f"{spec.key}"]
        for name in SERVERS:
            run = picked[spec.key][name]
            if run is None or run.peak_rss is None:
                cells.append("—")
            else:
                cells.append(f"{_mib(run.start_rss)} → {_mib(run.peak_rss)}")
        lines.append(_row(cells, detail))
    lines.append(
        _row(
            ["lifetime peak (VmHWM)", _mib(hwm.get("tusingest")), _mib(hwm.get("baseline"))],
            detail,
        )
    )

    lines += ["", "verification:"]
    verified = True
    for spec in specs:
        for name in SERVERS:
            runs = results.get(spec.key, {}).get(name, [])
            if not runs:
                verified = False
                lines.append(f"  {spec.key} {name}: not run")
                continue
            for i, run in enumerate(runs):
                label = f"{spec.key} {name}" + (f" run {i + 1}" if len(runs) > 1 else "")
                if run.ok:
                    lines.append(f"  {label}: OK ({run.verified})")
                else:
                    verified = False
                    lines.append(f"  {label}: FAILED")
                    for problem in run.problems:
                        lines += [f"      {p}" for p in problem.splitlines()]

    summary = result_line(verified, checks)
    lines += ["", summary]

    data: dict[str, object] = {
        "settings": dict(settings),
        "workloads": [
            {
                "spec": asdict(spec),
                "ratio": ratio(spec, results),
                "runs": {
                    name: [asdict(r) for r in results.get(spec.key, {}).get(name, [])]
                    for name in SERVERS
                },
            }
            for spec in specs
        ],
        "vm_hwm": dict(hwm),
        "targets": [
            {"name": c.name, "value": c.value, "limit": c.limit, "met": c.met} for c in checks
        ],
        "verified": verified,
        "summary": summary,
    }
    return Outcome("\n".join(lines), verified, checks, data)


def result_line(verified: bool, checks: Sequence[Check]) -> str:
    """The last line of a report: verified or not, and which targets were missed."""
    missed = [c for c in checks if not c.met]
    if not verified:
        return "RESULT: FAILED — a workload did not verify (see above)"
    if missed:
        return (
            f"RESULT: verified; targets met {len(checks) - len(missed)}/{len(checks)}; missed: "
            + "; ".join(c.describe() for c in missed)
        )
    return f"RESULT: verified; all {len(checks)} targets met"


def _bottlenecks(
    specs: Sequence[Spec], picked: Mapping[str, Mapping[str, Result | None]]
) -> list[str]:
    """Notes where the client, not the server, may have set the pace."""
    notes: list[str] = []
    for spec in specs:
        for name in SERVERS:
            run = picked[spec.key][name]
            if run is None or run.client_cpu_s is None or not run.elapsed_s:
                continue
            client = run.client_cpu_s / run.elapsed_s
            if client < CLIENT_BOUND:
                continue
            server = (run.server_cpu_s or 0.0) / run.elapsed_s
            effect = (
                "the ratio overstates tusingest"
                if name == "baseline"
                else "tusingest may be faster than shown"
            )
            notes.append(
                f"  note: {spec.key} {name}: the client used {client:.0%} of a core (server "
                f"{server:.0%}): client-bound, {effect}"
            )
    return notes


def _cpu_unit(spec: Spec) -> tuple[str, float]:
    """How CPU seconds are normalised for a workload: per GiB, per upload, per HEAD."""
    if spec.kind == "single":
        return "s/GiB", GiB / spec.size
    if spec.kind == "many":
        return "ms/upload", 1000 / spec.count
    return "µs/HEAD", 1e6 / spec.count


def write_json(path: Path, outcome: Outcome) -> None:
    path.write_text(json.dumps(outcome.data, indent=2) + "\n")
