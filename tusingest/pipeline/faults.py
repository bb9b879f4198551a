"""Fault injection for the crash-safety tests: a process configured to die at a step
(`TUSINGEST_CRASH_AT_STEP`) SIGKILLs itself there, as a power cut would stop it."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)


def crash_point(configured: str | None, step: str) -> None:
    """Kill this process now if `configured` names `step`."""
    if configured == step:
        log.warning("fault injection: killing this process at step %s", step)
        os.kill(os.getpid(), signal.SIGKILL)
