"""`python -m benchmarks` stays runnable: tiny sizes on SQLite, all verified, table printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--quick", "--w1-mib", "8", "--w2-count", "50", "--w3-count", "200", "--w4-mib", "4"]


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
