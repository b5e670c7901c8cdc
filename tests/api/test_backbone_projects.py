"""A project on a pretrained backbone is checked when it is configured: an unknown name, a
weights file whose checksum or architecture does not match, each a 422 with its code that
creates nothing; a sound file passes (the tests write the file themselves)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.projects import backbones as checks
from tests.api.helpers import CLASSES
from tests.conftest import Accounts, row_counts


@pytest.fixture
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    path = folder / "mnv3s.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def settings(tmp_path: Path, weights: tuple[Path, str]) -> Settings:
    path, sha = weights
    config = {
        "good": {"arch": "mobilenet_v3_small", "weights": path.as_uri(), "sha256": sha},
        "badsum": {"arch": "mobilenet_v3_small", "weights": str(path), "sha256": "1" * 64},
        "badarch": {"arch": "resnet18", "weights": str(path), "sha256": sha},
    }
    checks._VERIFIED.clear()  # each test checks from scratch
    return Settings(environment="test", data_dir=tmp_path / "data", backbones=json.dumps(config))


def _create(client: TestClient, accounts: Accounts, backbone: str, **hparams: object) -> Response:
    spec = {
        "name": "pretrained",
        "input_shape": [3, 32, 32],
        "hparams": {"backbone": backbone, **hparams},
    }
    body = {"name": f"on {backbone}", "classes": CLASSES, "model_spec": spec}
    return client.post("/api/v1/projects", json=body, headers=accounts.h("engineer"))


def test_backbones_are_checked_when_a_project_is_configured(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session], settings: Settings
) -> None:
    before = row_counts(factory)
    for name, code in (
        ("nothere", "unknown_backbone"),
        ("badsum", "backbone_checksum_mismatch"),
        ("badarch", "backbone_arch_mismatch"),
    ):
        r = _create(app_client, accounts, name)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == code
        assert "backbone" in r.json()["error"]["message"]
    assert row_counts(factory) == before
    # No weights file of a bad checksum is left in the cache.
    cached = list(settings.backbone_cache.glob("*.pt")) if settings.backbone_cache.exists() else []
    assert [p.name for p in cached] in (
        [],
        [f"{json.loads(settings.backbones)['good']['sha256']}.pt"],
    )

    r = _create(app_client, accounts, "good", frozen=False)
    assert r.status_code == 201, r.text
    assert r.json()["model_spec"]["hparams"] == {"backbone": "good", "frozen": False}
    # A spec key of the wrong kind is named.
    r = _create(app_client, accounts, "good", frozen="no")
    assert r.status_code == 422
    assert "hparams.frozen" in r.text


def test_bad_backbone_settings_are_refused_at_start_up(tmp_path: Path) -> None:
    for bad in (
        "{",
        '{"x": {"arch": "resnet18"}}',
        '{"x": {"arch": "a", "weights": "w", "sha256": "xyz"}}',
        # The project's own pretraining run goes by this name (backbone: "pretraining").
        json.dumps({"pretraining": {"arch": "resnet18", "weights": "w", "sha256": "a" * 64}}),
    ):
        with pytest.raises(ValueError, match="ANNOLOOP_BACKBONES"):
            Settings(environment="test", data_dir=tmp_path, backbones=bad)
