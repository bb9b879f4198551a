"""A server on its embedded defaults loads only what it uses: the commands' own modules (the
reference element, the upload client, the elements admin) and redis-py (with the OpenTelemetry
API it pulls in) stay out of the process until a command or `REDIS_URL` needs them."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import tusingest.cli, tusingest.app, tusingest.services
heavy = ("redis", "opentelemetry", "rich", "tusingest.refelement", "tusingest.client",
         "tusingest.elementscmd")
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_the_server_imports_no_command_modules_and_no_redis() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_the_elements_command_brings_redis_with_it() -> None:
    probe = "import sys, tusingest.elementscmd; print('redis' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "True"
