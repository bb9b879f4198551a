"""The benchmark's parts that need no server: medians, running order, the --peers report's
judgement, where each server's bytes are found and how they are checked, the install stamps."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from benchmarks import comparison, peer_install, tables
from benchmarks.__main__ import _parser, _specs
from benchmarks.comparison import Column
from benchmarks.payload import Payload
from benchmarks.servers import Server
from benchmarks.session import rotated
from benchmarks.specs import Result, heads, many, median_run, single
from benchmarks.stored import AiohttpTusFiles, FilesById, TusingestFiles, Uploaded
from benchmarks.verify import verify_stored

SPECS = [single("W1", 4, 1, None), many(20, 64, 8), heads(100, 8, None), single("W4", 2, 1, None)]
COLUMNS = [
    Column("tusingest", "tusingest (SQLite)"),
    Column("@tus/server", "@tus/server", peer=True),
    Column("tuspyserver", "tuspyserver", peer=True, python=True),
    Column("aiohttp-tus", "aiohttp-tus", peer=True, python=True),
    Column("baseline", "baseline"),
]


def _run(workload: str, server: str, value: float, ok: bool = True) -> Result:
    run = Result(workload=workload, server=server, value=value, elapsed_s=1.0)
    run.server_cpu_s, run.peak_rss, run.verified = 0.5, 50 << 20, "checked"
    if not ok:
        run.fail("broken")
    return run


def test_median_run_takes_the_median_of_each_figure_and_a_failure_first() -> None:
    runs = [_run("W1", "s", v) for v in (30.0, 10.0, 20.0)]
    runs[0].peak_rss, runs[1].peak_rss, runs[2].peak_rss = 3, 1, 2
    median = median_run(runs)
    assert median is not None
    assert (median.value, median.peak_rss) == (20.0, 2)
    even = median_run([_run("W1", "s", 10.0), _run("W1", "s", 20.0)])
    assert even is not None
    assert even.value == 15.0
    failed = _run("W1", "s", 1.0, ok=False)
    assert median_run([*runs, failed]) is failed
    assert median_run([]) is None


def test_each_round_starts_one_server_later() -> None:
    servers = [cast(Server, SimpleNamespace(name=n)) for n in "abc"]
    orders = ["".join(s.name for s in rotated(servers, r)) for r in range(4)]
    assert orders == ["abc", "bca", "cab", "abc"]


def _results(values: dict[str, float], failed: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        spec.key: {
            name: [_run(spec.key, name, v, name not in failed)] for name, v in values.items()
        }
        for spec in SPECS
    }


def test_targets_compare_with_tus_node_and_the_best_verified_python_peer() -> None:
    values = {"tusingest": 100.0, "@tus/server": 80.0, "tuspyserver": 50.0}
    values |= {"aiohttp-tus": 200.0, "baseline": 1000.0}
    results = _results(values, failed=("aiohttp-tus",))
    outcome = comparison.build(SPECS, results, COLUMNS, {"host": "h"}, {})  # type: ignore[arg-type]
    checks = {c.name: c for c in outcome.checks}
    assert checks["W1 tusingest ÷ @tus/server"].value == pytest.approx(1.25)
    # aiohttp-tus failed: the best verified Python peer is tuspyserver.
    w2 = checks["W2 tusingest ÷ the best Python peer (tuspyserver)"]
    assert w2.value == pytest.approx(2.0)
    assert w2.met
    assert not outcome.verified
    assert "FAILED" in outcome.text
    assert "RESULT: FAILED" in outcome.text
    assert outcome.markdown.startswith("|  | tusingest (SQLite) | @tus/server |")


def test_a_failed_reference_misses_its_target() -> None:
    values = {"tusingest": 100.0, "@tus/server": 80.0, "tuspyserver": 50.0}
    values |= {"aiohttp-tus": 60.0, "baseline": 1000.0}
    results = _results(values, failed=("@tus/server",))
    outcome = comparison.build(SPECS, results, COLUMNS, {}, {})  # type: ignore[arg-type]
    w1 = next(c for c in outcome.checks if c.name.startswith("W1"))
    assert w1.value is None
    assert not w1.met


def test_tables_render_as_text_and_markdown() -> None:
    rows = [["", "a", "bb"], ["x", "1", "22"]]
    assert tables.text(rows) == ["   a  bb", "--------", "x  1  22"]
    assert tables.markdown(rows) == ["|  | a | bb |", "| --- | ---: | ---: |", "| x | 1 | 22 |"]


def test_locators_find_each_layout(tmp_path: Path) -> None:
    done = Uploaded(1, 10, path="/files/abc", name="W1-x-0.bin")
    open_ = Uploaded(1, 10, path="/files/abc", name="W3-x-0.bin", declared=11)
    assert FilesById(tmp_path).resolver()(done) == tmp_path / "abc"
    aiohttp_tus = AiohttpTusFiles(tmp_path).resolver()
    assert aiohttp_tus(done) == tmp_path / "W1-x-0.bin"
    assert aiohttp_tus(open_) == tmp_path / ".resources" / "abc"
    storage = tmp_path / "storage" / "ab"
    storage.mkdir(parents=True)
    (storage / "f1.attr.json").write_text(json.dumps({"metadata": {"upload_id": "abc"}}))
    tusingest = TusingestFiles(tmp_path / "staging", tmp_path / "storage").resolver()
    assert tusingest(done) == storage / "f1"
    assert tusingest(Uploaded(1, 10, path="/files/other")) == tmp_path / "staging" / "other"


def test_stored_bytes_are_checked_in_full_or_as_a_prefix_when_in_progress(tmp_path: Path) -> None:
    payload = Payload(64)
    complete = Uploaded(5, 40, path="/files/a")
    in_progress = Uploaded(9, 40, path="/files/b", declared=41)
    (tmp_path / "a").write_bytes(bytes(payload.chunk(5, 0, 40)))
    # Preallocated to the declared length, as aiohttp-tus does.
    (tmp_path / "b").write_bytes(bytes(payload.chunk(9, 0, 40)) + b"\0")
    locator = FilesById(tmp_path)
    assert asyncio.run(verify_stored(payload, locator, [complete, in_progress])) == []
    (tmp_path / "a").write_bytes(bytes(payload.chunk(5, 0, 40)) + b"x")
    (tmp_path / "b").write_bytes(bytes(payload.chunk(9, 1, 40)))
    problems = asyncio.run(verify_stored(payload, locator, [complete, in_progress]))
    assert len(problems) == 2
    assert "41 bytes stored, 40 sent" in problems[0] + problems[1]
    assert "SHA-256" in problems[0] + problems[1]


def test_an_install_is_reused_only_for_the_same_pins_and_runtime(tmp_path: Path) -> None:
    pins = peer_install.Pins("demo", "pip", ("demo==1.0",))
    folder = tmp_path / "demo"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").touch()
    stamp = {"packages": ["demo==1.0"], "runtime": peer_install._runtime(pins), "versions": {}}
    (folder / peer_install.STAMP).write_text(json.dumps(stamp))
    assert peer_install._current_stamp(pins, folder) is not None
    changed = peer_install.Pins("demo", "pip", ("demo==2.0",))
    assert peer_install._current_stamp(changed, folder) is None
    (folder / peer_install.STAMP).write_text(json.dumps({**stamp, "runtime": "CPython 0.1 /x"}))
    assert peer_install._current_stamp(pins, folder) is None


def test_missing_node_is_a_clear_install_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("benchmarks.peer_install.shutil.which", lambda _name: None)
    with pytest.raises(peer_install.InstallError, match="node/npm: not found"):
        peer_install.check_tools([peer_install.TUS_NODE])


def test_tusingest_env_options_parse_and_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    args = parser.parse_args(["--tusingest-env", "A=1", "--tusingest-env", "B=x=y"])
    _specs(args, parser)
    assert args.tusingest_env == {"A": "1", "B": "x=y"}
    for wrong in (["--tusingest-env", "novalue"], ["--markdown", "x.md"]):
        bad = parser.parse_args(wrong)
        with pytest.raises(SystemExit):
            _specs(bad, parser)
    assert "--markdown writes the --peers tables" in capsys.readouterr().err


def test_crowd_adds_w5_at_concurrency_200() -> None:
    parser = _parser()
    specs = _specs(parser.parse_args(["--quick", "--workloads", "W2", "--crowd", "50"]), parser)
    crowd = specs[-1]
    assert (crowd.key, crowd.count, crowd.concurrency, crowd.size) == ("W5", 50, 200, 4 << 20)
    assert [s.key for s in _specs(parser.parse_args(["--quick"]), parser)] == [
        "W1", "W2", "W3", "W4",
    ]  # fmt: skip
