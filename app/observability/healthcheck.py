"""Container health checks: ``python -m app.observability.healthcheck [api|worker]``.

``api`` (the image's default HEALTHCHECK) asks the local ``/healthz``; ``worker`` pings this
host's Celery node over the broker, which the main process answers even while its pool is
busy training. Exit 0 = healthy. Uses only the standard library and Celery, never torch.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

API_URL = os.environ.get("ANNOLOOP_HEALTHCHECK_URL", "http://127.0.0.1:8000/healthz")


def check_api(url: str = API_URL, timeout: float = 5) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, response.read(500).decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)


def check_worker(timeout: float = 5) -> tuple[bool, str]:
    from worker.celery_app import celery_app

    # Celery's default node name; a worker started with `annoloop worker --name` sets its own.
    node = os.environ.get("ANNOLOOP_HEALTHCHECK_NODE") or f"celery@{socket.gethostname()}"
    replies = celery_app.control.ping(destination=[node], timeout=timeout)
    return bool(replies), json.dumps(replies)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    role = args[0] if args else "api"
    if role == "api":
        ok, detail = check_api()
    elif role == "worker":
        ok, detail = check_worker()
    else:
        print(f"unknown role {role!r}: use api or worker", file=sys.stderr)
        return 2
    print(detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
