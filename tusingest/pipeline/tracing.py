"""The pipeline's spans: their names and attribute keys, and the tracer that records nothing
(tracing off)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from tusingest.ports import Attribute, Span

UPLOAD = "artstore.ingester.upload"  # the ingest operation of one upload
VALIDATION = "artstore.ingester.validation"  # size, digests, type, virus scan
COMPRESSION = "artstore.ingester.compression"
STORAGE_SELECTION = "artstore.ingester.storage_selection"  # the elements that may take a file
TRANSFER = "artstore.ingester.transfer"  # the transfer operation of one file

UPLOAD_ID = "artstore.upload_id"
FILE_ID = "artstore.file_id"
SIZE = "artstore.size"  # bytes as uploaded
STORED_SIZE = "artstore.stored_size"  # bytes on the element (compressed or not)
ELEMENT_ID = "artstore.element_id"
VERDICT = "artstore.verdict"  # stored | rejected | gone | terminated | ...; transfers: status
REJECTION = "artstore.rejection"  # the rejection's code
ATTEMPT = "artstore.attempt"  # the operation's attempt, from 1
CONTENT_TYPE = "artstore.content_type"  # as detected
CODEC = "artstore.codec"
MODE = "artstore.mode"  # the element mode asked for
CANDIDATES = "artstore.candidates"  # elements able to take the file
REGISTRY_SOURCE = "artstore.registry_source"  # redis | admin | memory
TRANSFER_ID = "artstore.transfer_id"
SOURCE_ELEMENT_ID = "artstore.source_element_id"
DESTINATION_ELEMENT_ID = "artstore.destination_element_id"


class NoTracer:
    """Implements `Tracer` by recording nothing: one shared context manager, no allocation."""

    def __init__(self) -> None:
        self._none: AbstractContextManager[Span] = nullcontext(self)

    def span(
        self, name: str, attributes: Mapping[str, Attribute] | None = None
    ) -> AbstractContextManager[Span]:
        return self._none

    def set(self, key: str, value: Attribute) -> None:
        return None
