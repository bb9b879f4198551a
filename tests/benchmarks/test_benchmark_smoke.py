"""`python -m benchmarks` stays runnable: tiny sizes on SQLite, all verified, table printed;
with --peers, every peer installed (on first use) and run side by side, all verified."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--quick", "--w1-mib", "8", "--w2-count", "50", "--w3-count", "200", "--w4-mib", "4"]
PEERS_TINY = ["--quick", "--w1-mib", "4", "--w2-count", "20", "--w3-count", "100", "--w4-mib", "2"]
COLUMNS = ("tusingest (SQLite)", "@tus/server", "tuspyserver", "aiohttp-tus", "baseline")
SERVERS = ("tusingest", "@tus/server", "tuspyserver", "aiohttp-tus", "baseline")
ROWS = (
    "W1 MiB/s",
    "W1 server CPU s/GiB",
    "W2 uploads/s",
    "W2 server CPU ms/upload",
    "W3 HEAD/s",
    "W3 server CPU µs/HEAD",
    "W4 MiB/s",
    "W4 server CPU s/GiB",
    "W1 peak RSS MiB",
    "W2 peak RSS MiB",
    "W3 peak RSS MiB",
    "W4 peak RSS MiB",
)
TARGETS = (
    "W1 ≥ 1.0× @tus/server",
    "W2 ≥ 1.0× the best Python peer",
    "W3 ≥ 1.0× @tus/server",
    "W4 ≥ 1.0× the best Python peer",
)


@pytest.mark.timeout(120)
def test_quick_benchmark_verifies_and_prints_the_ratio_table(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"^workload\s+tusingest\s+baseline\s+ratio\s+target\s+met\?$", output, re.M)
    for row in ("W1 MiB/s", "W2 uploads/s", "W3 HEAD/s", "W4 MiB/s", "W1 peak RSS MiB"):
        assert re.search(rf"^{re.escape(row)}\s+[\d,.]+\s+[\d,.]+\s", output, re.M), row
    assert "RESULT: verified" in output
    data = json.loads(results.read_text())
    assert data["verified"] is True
    assert [w["spec"]["key"] for w in data["workloads"]] == ["W1", "W2", "W3", "W4"]
    assert all(w["ratio"] for w in data["workloads"])


@pytest.mark.timeout(120)
def test_completion_benchmark_measures_and_verifies() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.completion", "--size-mib", "16"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"^completion\s+last byte -> stored: \d+\.\d+ s", output, re.M), output
    assert "sha256      OK" in output


@pytest.mark.timeout(170)
def test_peers_benchmark_runs_every_server_side_by_side_verified(tmp_path: Path) -> None:
    # Not skipped without the tools: CI installs node and npm (scripts/js-deps).
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} not found: --peers needs Node.js >= 20.19 and npm"
    results, markdown = tmp_path / "peers.json", tmp_path / "peers.md"
    outputs = ["--json", str(results), "--markdown", str(markdown)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--peers", *PEERS_TINY, *outputs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,  # the first install included (pip twice, npm once, in parallel)
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    header = r"^\s+" + r"\s+".join(re.escape(c) for c in COLUMNS) + "$"
    assert re.search(header, output, re.M), output
    for row in ROWS:
        assert re.search(rf"^{re.escape(row)}(\s+[\d,.]+){{5}}$", output, re.M), row
    for target in TARGETS:
        assert re.search(rf"^{re.escape(target)}.*\s(met|missed)$", output, re.M), target
    assert "RESULT: verified" in output

    data = json.loads(results.read_text())
    assert data["verified"] is True
    assert [c["name"] for c in data["columns"]] == list(SERVERS)
    for workload in data["workloads"]:
        for name in SERVERS:
            runs = workload["runs"][name]
            assert runs, (workload["spec"]["key"], name)
            assert all(r["ok"] for r in runs), (workload["spec"]["key"], name, runs)
            # Every tus server's stored bytes are hashed; only the baseline stores none.
            hashed = all("SHA-256 of the stored bytes" in r["verified"] for r in runs)
            assert hashed == (name != "baseline"), (workload["spec"]["key"], name, runs)
    assert len(data["targets"]) == 4

    table = markdown.read_text()
    assert "|  | " + " | ".join(COLUMNS) + " |" in table.splitlines(), table
    for row in ROWS:
        assert re.search(rf"^\| {re.escape(row)}( \| [\d,.]+){{5}} \|$", table, re.M), row
    assert re.search(r"^Machine: \d+ CPUs, load average .*Python .*Node ", table, re.M), table
