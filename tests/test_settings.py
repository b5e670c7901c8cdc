from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import DEFAULT_SECRET, Settings


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'annoloop.sqlite'}"
    assert s.broker_url.startswith("sqla+sqlite:///")
    assert s.result_backend.startswith("db+sqlite:///")
    assert s.blobs == tmp_path.resolve() / "blobs"


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANNOLOOP_DATABASE_URL", "postgresql+psycopg://u@db/annoloop")
    monkeypatch.setenv("ANNOLOOP_BROKER_URL", "redis://redis:6379/0")
    s = Settings()
    assert (s.database_url, s.broker_url) == (
        "postgresql+psycopg://u@db/annoloop",
        "redis://redis:6379/0",
    )


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(environment="production", secret_key=DEFAULT_SECRET)
    strong = "3f9c0a7e5b1d4c2a8e6f0b9d7c5a3e1f2b4d6c8a0e9f7b5d3c1a2e4f6b8d0c9a"
    assert Settings(environment="production", secret_key=strong).environment == "production"


@pytest.mark.parametrize("weak", ["", "x", "x" * 40, "ab" * 20, "0123456789abcdef"])
def test_production_refuses_a_weak_secret(weak: str) -> None:
    with pytest.raises(ValueError, match="ANNOLOOP_SECRET_KEY"):
        Settings(environment="production", secret_key=weak)
    assert Settings(environment="development", secret_key=weak).secret_key == weak
