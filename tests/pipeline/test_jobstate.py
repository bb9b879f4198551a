"""Operations' typed state: it round-trips through JSON, reads what older and newer nodes wrote,
and redoes (never misreads) a part it cannot read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tusingest.domain import ElementMode
from tusingest.pipeline.compress import Compressed
from tusingest.pipeline.ingest_state import IngestState
from tusingest.pipeline.jobstate import VERSION, VERSION_KEY
from tusingest.pipeline.saga import DiscardState, Placement, PlacementLog
from tusingest.pipeline.validate import Validated

VALIDATED = Validated(
    size=10, detected_type="text/plain", declared_type=None, md5="a" * 32, sha256="b" * 64
)
COMPRESSED = Compressed(Path("/w/x.br"), "brotli", 4, "c" * 64, "d" * 32)
PLACED = Placement(
    "se-1", "http://se-1:8010", ElementMode.EDIT, "0f0e2c55-1f6b-4a55-9e2e-1b2a3c4d5e6f"
)
GONE = Placement(
    "se-2", "http://se-2:8010", ElementMode.EDIT, "9a8b7c6d-1f6b-4a55-9e2e-1b2a3c4d5e6f"
)
WHEN = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


def test_ingest_state_round_trips() -> None:
    state = IngestState(
        validated=VALIDATED,
        compressed=COMPRESSED,
        stored_at=WHEN,
        log=PlacementLog((PLACED, GONE), (GONE,)),
        verdict="stored",
        file_id=PLACED.file_id,
    )
    raw = state.to_json()
    assert raw[VERSION_KEY] == VERSION
    assert IngestState.from_json(raw) == state


def test_stored_as_is_differs_from_not_checked_yet() -> None:
    as_is = IngestState(validated=VALIDATED, compressed=None, stored_at=WHEN).to_json()
    assert as_is["compressed"] is None
    assert IngestState.from_json(as_is).validated == VALIDATED
    assert "validated" not in IngestState().to_json()
    assert IngestState.from_json({}) == IngestState()


def test_a_row_written_before_versions_reads() -> None:
    """The layout an older node persisted: no version, the same keys."""
    raw: dict[str, Any] = {
        "validated": {
            "size": 10,
            "detected_type": "text/plain",
            "declared_type": None,
            "md5": "a" * 32,
            "sha256": "b" * 64,
        },
        "compressed": None,
        "stored_at": WHEN.isoformat(),
        "placements": [PLACED.to_json()],
        "abandoned": [],
    }
    state = IngestState.from_json(raw)
    assert state.validated == VALIDATED
    assert state.stored_at == WHEN
    assert state.log.placements == (PLACED,)


def test_fields_unknown_here_are_ignored() -> None:
    """A newer node may persist more than this one knows."""
    raw = IngestState(validated=VALIDATED, stored_at=WHEN).to_json()
    raw["validated"]["entropy"] = 7.9
    raw["something_new"] = {"x": 1}
    assert IngestState.from_json(raw).validated == VALIDATED


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw["validated"].pop("sha256"),
        lambda raw: raw.__setitem__("stored_at", "not a time"),
        lambda raw: raw.__setitem__("compressed", {"codec": "brotli"}),
        lambda raw: raw.__setitem__("validated", "text"),
    ],
)
def test_a_checked_file_that_cannot_be_read_is_checked_again(damage: Any) -> None:
    raw = IngestState(validated=VALIDATED, compressed=COMPRESSED, stored_at=WHEN).to_json()
    damage(raw)
    state = IngestState.from_json(raw)
    assert (state.validated, state.compressed, state.stored_at) == (None, None, None)


def test_a_placement_that_cannot_be_read_is_an_error() -> None:
    """It may hold a copy: silently forgetting it would leave an orphan on the element."""
    raw = IngestState(log=PlacementLog((PLACED,))).to_json()
    del raw["placements"][0]["endpoint"]
    with pytest.raises(KeyError):
        IngestState.from_json(raw)


def test_discard_state_reads_the_flat_placement_of_older_rows() -> None:
    state = DiscardState(PLACED)
    assert DiscardState.from_json(state.to_json()) == state
    assert DiscardState.from_json(PLACED.to_json()) == state
    done = DiscardState.from_json({**PLACED.to_json(), "discarded": True})
    assert done.discarded
