"""Webhook receivers over HTTP: implements `WebhookSender` with aiohttp, one bounded POST per
try; the answer's status is all that is read."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from tusingest.errors import TransientError


class HttpWebhookSender:
    """Implements `WebhookSender`: `timeout_seconds` bounds a POST from connecting to the
    answer's status line and headers; redirects are not followed (a 3xx is not a delivery)."""

    def __init__(self, session: aiohttp.ClientSession, timeout_seconds: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            async with self._session.post(
                url,
                data=body,
                headers=dict(headers),
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                # The body stays unread: aiohttp buffers at most its read-ahead, and a
                # connection left with an unread answer is closed, not reused.
                return response.status
        except TimeoutError:
            raise TransientError("gave no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Only the kind of failure: aiohttp's messages may quote the URL (and its token).
            raise TransientError(f"gave no answer ({type(exc).__name__})") from None
