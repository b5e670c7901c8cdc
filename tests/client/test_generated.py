"""The client's generated files are current, and the client needs nothing but httpx."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_client_types  # noqa: E402
import unasync_client  # noqa: E402


def test_types_match_the_servers_openapi_schema() -> None:
    assert gen_client_types.OUT.read_text() == gen_client_types.render(
        gen_client_types.openapi()
    ), "annoloop/client/types.py is stale: run python scripts/gen_client_types.py"


def test_sync_client_matches_the_async_one() -> None:
    assert unasync_client.TARGET.read_text() == unasync_client.render(), (
        "annoloop/client/_sync_client.py is stale: run python scripts/unasync_client.py"
    )


def test_both_clients_offer_the_same_calls() -> None:
    from annoloop.client import AsyncClient, Client

    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_")}

    assert public(Client) - {"close"} == public(AsyncClient) - {"aclose"}


BLOCKED = ("app", "worker", "fastapi", "sqlalchemy", "pydantic", "numpy", "pandas", "tqdm")


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"]])
def test_client_and_cli_import_with_httpx_alone(argv: list[str]) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from annoloop.client import Client
        Client("http://127.0.0.1:9").http.close()
        from annoloop.client.cli import main
        main({argv!r})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
