"""The interpreter of a venv holding the project without any extra, as the image installs it.

``make test`` builds it (``make runtime``) and names it in ``ANNOLOOP_TEST_RUNTIME_PYTHON``; the
compose test runs the services' commands with it, so a runtime dependency that only the
development extras happen to bring (``packaging`` for kombu's Redis transport, issue 16) fails
the tests instead of the deployment. Outside CI the development interpreter stands in.
"""

from __future__ import annotations

import os
import sys

import pytest


def runtime_python() -> str:
    named = os.environ.get("ANNOLOOP_TEST_RUNTIME_PYTHON")
    if named:
        return named
    if os.environ.get("CI"):
        pytest.fail("CI runs `make test`, which names the bare venv: ANNOLOOP_TEST_RUNTIME_PYTHON")
    return sys.executable
