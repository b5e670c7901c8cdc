"""docs/deploy.md: its settings table is the one the Settings classes generate, and it covers
what an operator needs."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.deploy.compose import ROOT

DEPLOY = ROOT / "docs" / "deploy.md"


def reference_script() -> ModuleType:
    path = ROOT / "scripts" / "settings_reference.py"
    spec = importlib.util.spec_from_file_location("settings_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_reference_is_up_to_date() -> None:
    script = reference_script()
    text = DEPLOY.read_text()
    assert script.replace_block(text, script.render()) == text, (
        "docs/deploy.md is stale: python scripts/settings_reference.py --write docs/deploy.md"
    )
    assert script.main(["--check", str(DEPLOY)]) == 0


def test_every_setting_is_in_the_reference() -> None:
    from app.core.config import Settings
    from app.observability.settings import ObservabilitySettings

    text = DEPLOY.read_text()
    for cls in (Settings, ObservabilitySettings):
        for name in cls.model_fields:
            assert f"`ANNOLOOP_{name.upper()}`" in text


def test_the_operator_topics_are_covered() -> None:
    text = DEPLOY.read_text()
    for needle in (
        "docker compose up",
        "## GPU workers on other hosts",
        "ANNOLOOP_BROKER_URL",
        "NFS",
        "pg_dump",
        "pg_restore",
        "annoloop migrate",
        "## Tracing a label",
        "X-Request-ID",
        "labelled_set_hash",
        "idempotency_key",
        "SIGTERM",
    ):
        assert needle in text, needle


def test_the_build_the_lock_and_the_smoke_run_are_documented() -> None:
    text = DEPLOY.read_text()
    for needle in (
        "PYTHON_IMAGE",
        "TORCH_VARIANT",
        "TORCH_INDEX_URL",
        "PIP_INDEX_URL",
        "requirements.lock",
        "make lock",
        "scripts/compose_smoke.sh",
        "debootstrap",
        "docker import",
        "REDIS_PASSWORD",
        "ANNOLOOP_POSTGRES_IMAGE",
        "ANNOLOOP_REDIS_IMAGE",
    ):
        assert needle in text, needle
