"""The registry chain (fallback order, which source answered) and the periodic reload (what is
added, removed or updated; a removed element loses its breaker), over in-process registries."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.samples import element
from tusingest.domain import ElementInfo, ElementMode
from tusingest.elements.directory import ElementDirectory
from tusingest.errors import TransientError
from tusingest.observability import PrometheusMetrics
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.memory import MemoryRegistry
from tusingest.registry.reload import ConfigReloader
from tusingest.settings.storage import BreakerSettings


class DownRegistry:
    """A source that is unreachable (a Registry test double)."""

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        raise TransientError("connection refused")

    async def element(self, element_id: str) -> ElementInfo | None:
        raise TransientError("connection refused")

    async def invalidate(self) -> None:
        raise TransientError("connection refused")


class Switchable:
    """A source whose backing registry the test swaps (a Registry test double)."""

    def __init__(self, target: MemoryRegistry | DownRegistry) -> None:
        self.target = target

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        return await self.target.elements(mode)

    async def element(self, element_id: str) -> ElementInfo | None:
        return await self.target.element(element_id)

    async def invalidate(self) -> None:
        await self.target.invalidate()


def sample(metrics: PrometheusMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_the_chain_falls_through_failing_and_empty_sources() -> None:
    async def scenario() -> None:
        fallback = MemoryRegistry([element("se-admin", mode=ElementMode.EDIT)])
        chain = ChainRegistry([("redis", DownRegistry()), ("admin", fallback)])
        assert [e.element_id for e in await chain.elements(ElementMode.EDIT)] == ["se-admin"]
        assert chain.last_source == "admin"
        assert chain.last_failures == ["redis"]

        empty_first = ChainRegistry([("redis", MemoryRegistry()), ("admin", fallback)])
        assert await empty_first.elements(ElementMode.EDIT) != []
        assert empty_first.last_source == "admin"
        assert empty_first.last_failures == []

        nothing = ChainRegistry([("redis", DownRegistry()), ("admin", MemoryRegistry())])
        assert await nothing.elements(ElementMode.RW) == []
        assert nothing.last_source == "none"
        assert nothing.last_errors == ["redis: connection refused", "admin: no rw element"]
        await nothing.invalidate()  # a failing source does not stop the others

        # One element by id, through a failing source, whatever its mode.
        info = await chain.element("se-admin")
        assert info is not None
        assert info.mode is ElementMode.EDIT
        assert await chain.element("se-other") is None

    asyncio.run(scenario())


def test_reload_reports_added_removed_and_updated_elements() -> None:
    async def scenario() -> None:
        source = MemoryRegistry([element("se-1", mode=ElementMode.EDIT), element("se-2")])
        metrics = PrometheusMetrics()
        directory = ElementDirectory(None, None, BreakerSettings(failure_threshold=1))
        reloader = ConfigReloader(ChainRegistry([("memory", source)]), directory, metrics, 60)
        assert await reloader.reload()
        assert sorted(reloader.known) == ["se-1", "se-2"]
        assert sample(metrics, "ingester_se_endpoints_count") == 2

        directory.breaker("se-1").record_failure()
        metrics.breaker("se-1", directory.breaker("se-1").state)
        assert directory.open_ids() == {"se-1"}
        assert sample(metrics, "ingester_se_circuit_breaker_state", element_id="se-1") == 2
        source.remove("se-1")
        source.put(element("se-3", mode=ElementMode.EDIT))
        source.put(dataclasses.replace(element("se-2"), priority=9))
        assert await reloader.reload()
        for change in ("added", "removed", "updated"):
            assert sample(metrics, "ingester_se_config_changes_total", change_type=change) == 1
        assert directory.open_ids() == set()  # the removed element's breaker is gone
        assert (
            metrics.registry.get_sample_value(
                "ingester_se_circuit_breaker_state", {"element_id": "se-1"}
            )
            is None
        )
        assert sample(metrics, "ingester_se_config_reload_total", source="memory",
                      status="success") == 2  # fmt: skip

    asyncio.run(scenario())


def test_reload_keeps_the_last_list_when_every_source_fails() -> None:
    async def scenario() -> None:
        source = Switchable(MemoryRegistry([element("se-1", mode=ElementMode.EDIT)]))
        metrics = PrometheusMetrics()
        directory = ElementDirectory(None, None, BreakerSettings())
        reloader = ConfigReloader(ChainRegistry([("redis", source)]), directory, metrics, 60)
        assert await reloader.reload()
        source.target = DownRegistry()
        assert not await reloader.reload()
        assert sorted(reloader.known) == ["se-1"]
        assert sample(metrics, "ingester_se_config_reload_total", source="none",
                      status="failed") == 1  # fmt: skip

    asyncio.run(scenario())


@pytest.mark.parametrize("scheme", ["ftp://x", "s3://bucket"])
def test_the_directory_refuses_unknown_endpoints(scheme: str) -> None:
    directory = ElementDirectory(None, None, BreakerSettings())
    with pytest.raises(ValueError, match="unsupported endpoint"):
        directory.element(
            dataclasses.replace(element("se-x", mode=ElementMode.EDIT), endpoint=scheme)
        )
