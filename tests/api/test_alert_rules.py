"""The shipped Prometheus alert rules (monitoring/alerts.yml) watch only metrics a node
exports: a renamed metric would silence its alert without a word."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.conftest import Server

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml"
# Names the rules use that are not ours: Prometheus' own and PromQL's.
FOREIGN = {"up", "histogram_quantile", "rate", "increase", "sum", "by", "le", "instance"}


def _exported(server: Server) -> set[str]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{part}" for part in ("bucket", "sum", "count"))
            if kind == "counter":
                names.add(f"{name}_total" if not name.endswith("_total") else name)
    return names


def test_every_metric_in_the_rules_is_exported(server: Server) -> None:
    exprs = re.findall(r"expr: \|?\s*\n?((?:.+\n)+?)\s+(?:for|labels):", RULES.read_text())
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
        used |= set(re.findall(r"[a-z_][a-z0-9_]*", without_labels)) - FOREIGN
    assert used, exprs
    assert used <= _exported(server), used - _exported(server)
