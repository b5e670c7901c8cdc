"""The ``annoloop`` client verbs, run as the command an engineer types, against the real
server of tests/client/conftest.py; and the server verbs still there beside them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.client.conftest import Live

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def annoloop(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
        timeout=300,
    )


def as_engineer(live: Live) -> dict[str, str]:
    return {"ANNOLOOP_URL": live.url, "ANNOLOOP_TOKEN": live.engineer}


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


SPEC = """\
name: cli-digits
classes: [a, b, c]
model_spec:
  name: mlp
  input_shape: [4]
  hparams: {epochs: 2}
strategy: entropy
batch_size: 4
members: [ann0]
"""


def test_the_whole_loop_from_the_command_line(live: Live, tmp_path: Path) -> None:
    env = as_engineer(live)
    (tmp_path / "spec.yaml").write_text(SPEC)
    project = ok_json(
        annoloop("project", "create", "-f", str(tmp_path / "spec.yaml"), "--json", env=env)
    )
    pid = project["id"]
    assert project["strategy"] == "entropy"
    shown = ok_json(annoloop("project", "show", str(pid), "--json", env=env))
    assert shown["name"] == "cli-digits"

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "rows.npz",
        features=rng.normal(size=(30, 4)).astype(np.float32),
        external_ids=np.array([f"x{i}" for i in range(30)]),
        split=np.array(["pool"] * 24 + ["test"] * 6),
    )
    up = annoloop(
        "items",
        "upload",
        "-p",
        "cli-digits",
        str(tmp_path / "rows.npz"),
        "--part-items",
        "7",
        "--progress",
        "--json",
        env=env,
    )
    assert ok_json(up)["created"] == 30
    assert "upload" in up.stderr  # the progress bar, on stderr

    rows = tmp_path / "labels.csv"
    with rows.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["external_id", "annotator", "class_index"])
        w.writerows([[f"x{i}", "seed", i % 3] for i in [*range(6), *range(24, 30)]])
    first = ok_json(annoloop("labels", "import", "-p", str(pid), str(rows), "--json", env=env))
    again = ok_json(annoloop("labels", "import", "-p", str(pid), str(rows), "--json", env=env))
    assert (first["created"], again["created"], again["skipped_duplicates"]) == (12, 0, 12)

    started = annoloop(
        "cycle",
        "start",
        "-p",
        str(pid),
        "--seed",
        "5",
        "--wait",
        "--timeout",
        "120",
        "--progress",
        "--json",
        env=env,
    )
    cycle = ok_json(started)
    assert (cycle["state"], cycle["seed"]) == ("labeling", 5)
    assert "labeling" in started.stderr

    status = ok_json(annoloop("status", "-p", "cli-digits", "--json", env=env))
    assert status["progress"]["queue_depth"] == 4
    assert status["cycle"]["id"] == cycle["id"]
    assert status["health"]["status"] == "ok"
    text = annoloop("status", "-p", str(pid), env=env)
    assert text.returncode == 0, text.stderr
    assert "queue 4" in text.stdout

    out = tmp_path / "export.csv"
    assert (
        annoloop("export", "-p", str(pid), "--format", "csv", "-o", str(out), env=env).returncode
        == 0
    )
    exported = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(r["external_id"] for r in exported) == sorted(
        f"x{i}" for i in [*range(6), *range(24, 30)]
    )
    jsonl = annoloop("export", "-p", str(pid), env=env)
    assert len(jsonl.stdout.splitlines()) == 12


def test_a_folder_upload_and_api_errors_with_their_code(live: Live, tmp_path: Path) -> None:
    env = as_engineer(live)
    spec = {
        "name": "cli-images",
        "classes": ["a", "b"],
        "model_spec": {"name": "small_cnn", "input_shape": [1, 16, 16]},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    pid = ok_json(
        annoloop("project", "create", "-f", str(tmp_path / "spec.json"), "--json", env=env)
    )["id"]
    folder = tmp_path / "imgs"
    for n in range(5):
        (folder / f"s{n % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), n * 40, np.uint8), "L").save(
            folder / f"s{n % 2}" / f"{n}.png"
        )
    up = annoloop("items", "upload", "-p", str(pid), str(folder), "--split", "test", env=env)
    assert up.returncode == 0, up.stderr
    assert "uploaded 5 items" in up.stdout
    assert "test: 5" in up.stdout

    again = annoloop("items", "upload", "-p", str(pid), str(folder), "--json", env=env)
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["code"] == "duplicate_external_id"
    assert "409 duplicate_external_id" in again.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**spec, "name": "never", "batch_size": 0}))
    refused = annoloop("project", "create", "-f", str(bad), "--json", env=env)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["status"] == 422
    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("name: [unclosed\n")
    broken = annoloop("project", "create", "-f", str(unreadable), env=env)
    assert broken.returncode != 0
    assert "broken.yaml" in broken.stderr
    listed = ok_json(annoloop("project", "list", "--json", env=env))
    assert "never" not in [p["name"] for p in listed]


def test_url_and_token_from_flags_environment_or_config_file(live: Live, tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text(
        f'url = "http://127.0.0.1:9"\ntoken = "wrong"\n\n'
        f'[profiles.here]\nurl = "{live.url}"\ntoken = "{live.engineer}"\n'
    )
    config.chmod(0o600)
    by_profile = annoloop(
        "status", "--json", env={"ANNOLOOP_CONFIG": str(config), "ANNOLOOP_PROFILE": "here"}
    )
    assert ok_json(by_profile)["me"]["name"] == "eng"
    # Flags beat the file's default target.
    flags = annoloop(
        "status", "--json", "--config", str(config), "--url", live.url, "--token", live.engineer
    )
    assert ok_json(flags)["me"]["role"] == "engineer"
    # The environment beats the file; the file's wrong token is never used then.
    envd = annoloop("status", "--json", env={"ANNOLOOP_CONFIG": str(config), **as_engineer(live)})
    assert ok_json(envd)["me"]["name"] == "eng"
    wrong = annoloop(
        "status", "--json", env={"ANNOLOOP_CONFIG": str(config), "ANNOLOOP_URL": live.url}
    )
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["error"]["status"] == 401
    none = annoloop("status", env={"ANNOLOOP_CONFIG": str(tmp_path / "missing.toml")})
    assert none.returncode == 2
    assert "no token" in none.stderr


def test_the_server_verbs_still_work(tmp_path: Path) -> None:
    env = {"ANNOLOOP_DATA_DIR": str(tmp_path / "data"), "ANNOLOOP_ENVIRONMENT": "test"}
    helped = annoloop("--help")
    for verb in (
        "up",
        "api",
        "worker",
        "migrate",
        "create-admin",
        "bench",
        "simulate",
        "blobs",
        "project",
        "status",
    ):
        assert verb in helped.stdout
    assert annoloop("migrate", env=env, cwd=tmp_path).returncode == 0
    made = annoloop("create-admin", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.strip()) > 20
