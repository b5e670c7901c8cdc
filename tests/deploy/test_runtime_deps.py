"""The runtime dependencies are complete on their own (issue 16, item 1)."""

from __future__ import annotations

import subprocess
import sys

from tests.deploy.runtime import runtime_python

# What the compose services import: the API (with the Redis broker's transport, which the
# health check and task sending load), and the worker's Celery app and tasks.
PROBE = """
import importlib.util, json
import kombu.transport.redis
from kombu import Connection
Connection("redis://127.0.0.1:1/0").get_transport_cls()
import app.main, worker.celery_app, worker.tasks.cycles, worker.tasks.scoring
print(json.dumps({"pytest": importlib.util.find_spec("pytest") is not None}))
"""


def test_the_runtime_venv_imports_every_service_without_extras() -> None:
    python = runtime_python()
    done = subprocess.run(
        [python, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if python != sys.executable:  # the bare venv really is bare: no test extra in it
        assert done.stdout.strip().splitlines()[-1] == '{"pytest": false}'
