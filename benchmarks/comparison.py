"""The report with --peers: a column per server, tusingest's ratios to its peers, the targets.

Owns how the side-by-side results are judged and presented, as text, as markdown (for a README)
and as JSON data. Repeated runs count by their median (`specs.median_run`). A ratio is
tusingest's throughput divided by another server's, both verified; "the best peer" is the
fastest verified of the three tus servers (not the baseline), "the best Python peer" the faster
verified of tuspyserver and aiohttp-tus. A target whose ratio cannot be measured is missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from benchmarks import tables
from benchmarks.payload import MiB
from benchmarks.report import CLIENT_BOUND, Check, GiB, Outcome, Results, result_line
from benchmarks.specs import Result, Spec, median_run

TUSINGEST = "tusingest"
NODE_PEER = "@tus/server"
BEST_PYTHON = "the best Python peer"
# workload -> what tusingest's throughput must at least equal (ratio >= 1.0)
TARGETS = {"W1": NODE_PEER, "W2": BEST_PYTHON, "W3": NODE_PEER, "W4": BEST_PYTHON}
TARGET_RATIO = 1.0


@dataclass(frozen=True)
class Column:
    """One server in the report."""

    name: str  # its key in the results
    label: str  # its header
    peer: bool = False  # one of the tus servers tusingest is compared with
    python: bool = False  # a Python peer
    about: str = ""  # what it is, for the markdown: versions, how it serves, durability


Picked = Mapping[str, Mapping[str, Result | None]]  # workload -> server -> median run


def _value(run: Result | None) -> float | None:
    return run.value if run is not None and run.ok and run.value else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cpu_unit(spec: Spec) -> tuple[str, float, int]:
    """Server CPU normalised per GiB, per upload or per HEAD: label, scale, decimals."""
    if spec.kind == "single":
        return "s/GiB", GiB / spec.size, 2
    if spec.kind == "many":
        return "ms/upload", 1000 / spec.count, 2
    return "µs/HEAD", 1e6 / spec.count, 0


def _cell(run: Result | None, figure: float | None, digits: int) -> str:
    if run is None:
        return "—"
    if not run.ok:
        return "FAILED"
    return "—" if figure is None else f"{figure:,.{digits}f}"


def _main_rows(specs: Sequence[Spec], columns: Sequence[Column], picked: Picked) -> list[list[str]]:
    rows = [["", *(c.label for c in columns)]]
    for spec in specs:
        runs = [picked[spec.key][c.name] for c in columns]
        rows.append([f"{spec.key} {spec.unit}", *(_cell(r, _value(r), 1) for r in runs)])
        per, scale, digits = _cpu_unit(spec)
        cpu = [
            None if r is None or r.server_cpu_s is None else r.server_cpu_s * scale for r in runs
        ]
        rows.append(
            [
                f"{spec.key} server CPU {per}",
                *(_cell(r, c, digits) for r, c in zip(runs, cpu, strict=True)),
            ]
        )
    for spec in specs:
        runs = [picked[spec.key][c.name] for c in columns]
        peaks = [None if r is None or r.peak_rss is None else r.peak_rss / MiB for r in runs]
        rows.append(
            [
                f"{spec.key} peak RSS MiB",
                *(_cell(r, p, 1) for r, p in zip(runs, peaks, strict=True)),
            ]
        )
    return rows


def _best(
    spec: Spec, columns: Sequence[Column], picked: Picked, python: bool
) -> tuple[str | None, float | None]:
    """The fastest verified peer (Python peers only when `python`), and its throughput."""
    known = [
        (c.name, v)
        for c in columns
        if c.peer and (c.python or not python) and (v := _value(picked[spec.key][c.name]))
    ]
    return max(known, key=lambda item: item[1]) if known else (None, None)


def _ratio_rows(
    specs: Sequence[Spec], columns: Sequence[Column], picked: Picked
) -> tuple[list[list[str]], dict[str, dict[str, object]]]:
    rows = [["tusingest ÷", "best peer", "ratio", f"÷ {NODE_PEER}"]]
    data: dict[str, dict[str, object]] = {}
    for spec in specs:
        tus = _value(picked[spec.key].get(TUSINGEST))
        best, best_value = _best(spec, columns, picked, python=False)
        node = _value(picked[spec.key].get(NODE_PEER))
        to_best, to_node = _ratio(tus, best_value), _ratio(tus, node)
        rows.append(
            [
                f"{spec.key} {spec.unit}",
                best or "—",
                "—" if to_best is None else f"{to_best:.2f}×",
                "—" if to_node is None else f"{to_node:.2f}×",
            ]
        )
        data[spec.key] = {"best_peer": best, "to_best_peer": to_best, "to_tus_node": to_node}
    return rows, data


def _checks(
    specs: Sequence[Spec], columns: Sequence[Column], picked: Picked
) -> tuple[list[Check], list[list[str]]]:
    checks: list[Check] = []
    rows = [["target", "ratio", "met?"]]
    for spec in specs:
        against = TARGETS.get(spec.key)
        if against is None:
            continue
        tus = _value(picked[spec.key].get(TUSINGEST))
        if against == NODE_PEER:
            reference = _value(picked[spec.key].get(NODE_PEER))
            shown = NODE_PEER
        else:
            best, reference = _best(spec, columns, picked, python=True)
            shown = f"{BEST_PYTHON} ({best or 'none verified'})"
        check = Check(
            f"{spec.key} tusingest ÷ {shown}", _ratio(tus, reference), TARGET_RATIO, "ratio>="
        )
        checks.append(check)
        ratio = "n/a" if check.value is None else f"{check.value:.2f}×"
        target = f"{spec.key} ≥ {TARGET_RATIO:.1f}× {shown}"
        rows.append([target, ratio, "met" if check.met else "missed"])
    return checks, rows


def _latency_rows(
    specs: Sequence[Spec], columns: Sequence[Column], picked: Picked
) -> list[list[str]]:
    rows = [["latency p50 / p99 ms", *(c.label for c in columns)]]
    for spec in specs:
        if spec.kind not in ("many", "heads"):
            continue
        cells = [f"{spec.key} per {'upload' if spec.kind == 'many' else 'HEAD'}"]
        for column in columns:
            run = picked[spec.key][column.name]
            ok = run is not None and run.ok and run.p50_ms is not None and run.p99_ms is not None
            cells.append(f"{run.p50_ms:.2f} / {run.p99_ms:.2f}" if ok and run else "—")
        rows.append(cells)
    return rows if len(rows) > 1 else []


def _notes(specs: Sequence[Spec], columns: Sequence[Column], picked: Picked) -> list[str]:
    """Where the client, not the server, may have set the pace."""
    notes: list[str] = []
    for spec in specs:
        for column in columns:
            run = picked[spec.key][column.name]
            if run is None or not run.ok or run.client_cpu_s is None or not run.elapsed_s:
                continue
            client = run.client_cpu_s / run.elapsed_s
            if client >= CLIENT_BOUND:
                server = (run.server_cpu_s or 0.0) / run.elapsed_s
                notes.append(
                    f"  note: {spec.key} {column.name}: the client used {client:.0%} of a core "
                    f"(server {server:.0%}): client-bound, the server may be faster than shown"
                )
    return notes


def _verification(
    specs: Sequence[Spec], columns: Sequence[Column], results: Results
) -> tuple[bool, list[str]]:
    lines: list[str] = []
    verified = True
    for spec in specs:
        for column in columns:
            runs = results.get(spec.key, {}).get(column.name, [])
            label = f"  {spec.key} {column.name}"
            if not runs:
                verified = False
                lines.append(f"{label}: not run")
            elif all(r.ok for r in runs):
                times = f" ×{len(runs)}" if len(runs) > 1 else ""
                lines.append(f"{label}: OK{times} ({runs[0].verified})")
            else:
                verified = False
                for i, run in enumerate(runs):
                    if run.ok:
                        continue
                    lines.append(
                        f"{label}" + (f" run {i + 1}" if len(runs) > 1 else "") + ": FAILED"
                    )
                    for problem in run.problems:
                        lines += [f"      {p}" for p in problem.splitlines()]
    return verified, lines


def build(
    specs: Sequence[Spec],
    results: Results,
    columns: Sequence[Column],
    settings: Mapping[str, str],
    hwm: Mapping[str, int | None],
) -> Outcome:
    picked: dict[str, dict[str, Result | None]] = {
        spec.key: {c.name: median_run(results.get(spec.key, {}).get(c.name, [])) for c in columns}
        for spec in specs
    }
    main = _main_rows(specs, columns, picked)
    ratios, ratio_data = _ratio_rows(specs, columns, picked)
    checks, target_rows = _checks(specs, columns, picked)
    latency = _latency_rows(specs, columns, picked)
    verified, verification = _verification(specs, columns, results)
    runs = settings.get("runs", "")

    lifetime = [
        ["lifetime peak RSS MiB (VmHWM)", *(c.label for c in columns)],
        ["", *(_mib(hwm.get(c.name)) for c in columns)],
    ]
    lines = _joined(
        tables.text(main),
        tables.text(ratios),
        tables.text(target_rows),
        ["workloads:", *(f"  {s.key:<4} {s.title}" for s in specs)],
        [*tables.text(latency, rule=False), *_notes(specs, columns, picked)],
        tables.text(lifetime, rule=False),
        ["verification:", *verification],
    )

    summary = result_line(verified, checks)
    lines += ["", summary]
    workloads = "; ".join(f"{s.key} {s.title}" for s in specs)
    markdown = _joined(
        tables.markdown(main),
        tables.markdown(ratios),
        tables.markdown(target_rows),
        [f"Workloads: {workloads}. Runs: {runs}."],
        [f"Machine: {settings.get('host', '?')}."],
        [f"- {c.label}: {c.about}" for c in columns if c.about],
    )

    data: dict[str, object] = {
        "settings": dict(settings),
        "columns": [asdict(c) for c in columns],
        "workloads": [
            {
                "spec": asdict(spec),
                "ratios": ratio_data[spec.key],
                "median": {
                    c.name: asdict(r) if (r := picked[spec.key][c.name]) else None for c in columns
                },
                "runs": {
                    c.name: [asdict(r) for r in results.get(spec.key, {}).get(c.name, [])]
                    for c in columns
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
    return Outcome("\n".join(lines), verified, checks, data, "\n".join(markdown) + "\n")


def _joined(*blocks: list[str]) -> list[str]:
    """The non-empty blocks, separated by an empty line."""
    lines: list[str] = []
    for block in blocks:
        if block:
            lines += [""] * bool(lines) + block
    return lines


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / MiB:.1f}"
