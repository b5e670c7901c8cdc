"""The schema comes from migrations alone, on every backend, and matches the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError

import migrations
from tests.backends import fresh_database


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def test_upgrade_head_leaves_no_drift_and_downgrades_cleanly(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path, migrated=False) as url:
        cfg = _config(url)
        command.upgrade(cfg, "head")
        command.check(cfg)  # raises when the models and the migrated schema differ
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")
        command.check(cfg)


def test_check_notices_drift(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path, migrated=False) as url:
        cfg = _config(url)
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
        with pytest.raises(CommandError):
            command.check(cfg)
