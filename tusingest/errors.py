"""Error hierarchy: every error carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from collections.abc import Mapping


class TusingestError(Exception):
    """Base error: rendered at the HTTP edge with `status` and `code`."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})


class ConfigError(TusingestError):
    """A setting is missing or malformed; names the variable."""

    code = "invalid_config"

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class BadRequest(TusingestError):
    status = 400
    code = "bad_request"


class Unauthorized(TusingestError):
    status = 401
    code = "unauthorized"


class Forbidden(TusingestError):
    status = 403
    code = "forbidden"


class NotFound(TusingestError):
    status = 404
    code = "upload_not_found"


class Conflict(TusingestError):
    status = 409
    code = "offset_mismatch"


class Gone(TusingestError):
    status = 410
    code = "upload_expired"


class PreconditionFailed(TusingestError):
    status = 412
    code = "unsupported_version"


class PayloadTooLarge(TusingestError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(TusingestError):
    status = 415
    code = "unsupported_media_type"


class Locked(TusingestError):
    status = 423
    code = "upload_locked"


class BodyInterrupted(TusingestError):
    """The client's request body ended early (connection lost or reset)."""

    status = 400
    code = "body_interrupted"


class UploadInterrupted(BodyInterrupted):
    """A newer request on the same upload asked this one to stop and commit what it has."""

    code = "upload_interrupted"


class ChecksumMismatch(TusingestError):
    status = 460
    code = "checksum_mismatch"


class TransientError(TusingestError):
    """A dependency is down or slow: retry later, never treat as a verdict.

    `retry_after` (seconds), when set, asks the runner to wait that long without counting the
    attempt: waiting for storage to come back is no failure of the operation."""

    status = 503
    code = "temporarily_unavailable"
    retry_after: float | None = None


class NoStorageAvailable(TransientError):
    """No storage element can take the file now (none registered, all full, down or open)."""

    code = "no_storage_available"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ElementUnavailable(TransientError):
    """No registry knows the storage element a file is on now (down, or unregistered)."""

    code = "element_unavailable"

    def __init__(self, element_id: str) -> None:
        super().__init__(
            f"storage element {element_id} is not reachable now", headers={"Retry-After": "30"}
        )


class ScannerUnavailable(TransientError):
    code = "scanner_unavailable"


class ReceiverUnavailable(TransientError):
    """A webhook receiver did not take an event (no answer, or not a 2xx): tried again after
    `retry_after` seconds, without counting an attempt (the delivery's age bounds it)."""

    code = "receiver_unavailable"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Exhausted(TusingestError):
    """An operation used up the time it may take (a webhook delivery past its age): the runner
    gives up at once, whatever its attempts."""

    code = "retries_exhausted"


class RateLimited(TusingestError):
    """The caller started too many uploads: tried again after `retry_after` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
