"""Label Studio interop against the real server, on exports Label Studio 1.23.2 wrote
itself (tests/fixtures/labelstudio/make_export.py says how)."""

from __future__ import annotations

import base64
import copy
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from annoloop.client import Client
from annoloop.client.labelstudio import LabelStudioError, parse_label_config
from tests.client.conftest import Live
from tests.client.test_cli import annoloop, as_engineer, ok_json

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "labelstudio"
MEDIA = FIXTURES / "media"
CONFIG = (FIXTURES / "label_config.xml").read_text()
CLASSES = ["cat", "dog", "bird"]


def _client(live: Live) -> Client:
    return Client(live.url, live.engineer, progress=False)


def _project(c: Client, name: str) -> int:
    spec = {
        "name": name,
        "classes": CLASSES,
        "model_spec": {"name": "small_cnn", "input_shape": [1, 16, 16]},
    }
    return int(c.create_project(spec)["id"])


def _file_votes(tasks: list[dict[str, Any]], name: Any) -> dict[str, set[tuple[str, str]]]:
    """What the file says, read plainly: external id -> {(annotator, class)}."""
    out: dict[str, set[tuple[str, str]]] = {}
    for t in tasks:
        ext = t["data"].get("annoloop_external_id") or f"ls-{t['id']}"
        out[ext] = {
            (name(a["completed_by"]), a["result"][0]["value"]["choices"][0])
            for a in t["annotations"]
            if not a["was_cancelled"] and a["result"]
        }
    return out


def _email(who: Any) -> str:
    email = str(who["email"])
    return email.removesuffix("@annoloop.invalid")


def _stored_votes(c: Client, pid: int) -> dict[str, set[tuple[str, str]]]:
    rows = c.export_rows(pid)
    return {r["external_id"]: {(v["annotator"], v["class"]) for v in r["votes"]} for r in rows}


def _payload_shas(c: Client, pid: int) -> dict[str, str]:
    return {i["external_id"]: i["blob_sha256"] for i in c.iter_items(pid)}


def _image_bytes(ref: str) -> bytes:
    if ref.startswith("data:"):
        return base64.b64decode(ref.split(",", 1)[1])
    return (MEDIA / ref.removeprefix("/data/")).read_bytes()


def test_label_studio_export_round_trip(live: Live, tmp_path: Path) -> None:
    original = json.loads((FIXTURES / "export_emails.json").read_text())
    with _client(live) as c:
        pid = _project(c, "ls-pets")
        done = c.import_labelstudio(
            pid, FIXTURES / "export_emails.json", files_root=MEDIA, label_config=CONFIG
        )
        assert done == {
            "tasks": 6,
            "items_created": 6,
            "items_reused": 0,
            "votes_created": 9,
            "votes_already_there": 0,
            "annotators_created": 3,
            "annotations_not_votes": 1,  # ann2's skipped (cancelled) annotation
        }
        want = {k: v for k, v in _file_votes(original, _email).items() if v}
        assert _stored_votes(c, pid) == want
        shas = _payload_shas(c, pid)
        for t in original:
            assert (
                shas[f"ls-{t['id']}"]
                == hashlib.sha256(_image_bytes(t["data"]["image"])).hexdigest()
            )

        again = c.import_labelstudio(pid, FIXTURES / "export_emails.json", files_root=MEDIA)
        assert (again["items_created"], again["items_reused"]) == (0, 6)
        assert (again["votes_created"], again["votes_already_there"]) == (0, 9)

        tasks = c.export_labelstudio(pid)
        assert sorted(t["id"] for t in tasks) == sorted(t["id"] for t in original)
        assert _file_votes(tasks, _email) == _file_votes(original, _email)
        by_id = {t["id"]: t for t in tasks}
        for t in original:
            assert _image_bytes(by_id[t["id"]]["data"]["image"]) == _image_bytes(t["data"]["image"])
            assert by_id[t["id"]]["data"]["annoloop_external_id"] == f"ls-{t['id']}"

        out = tmp_path / "annoloop-export.json"
        out.write_text(json.dumps(tasks))
        pid2 = _project(c, "ls-pets-again")
        back = c.import_labelstudio(pid2, out)  # inline images: no media folder needed
        assert (back["items_created"], back["votes_created"]) == (6, 9)
        assert _stored_votes(c, pid2) == _stored_votes(c, pid)
        assert _payload_shas(c, pid2) == shas


def test_what_label_studio_made_of_annoloops_export_comes_back_the_same(live: Live) -> None:
    """export_emails.json -> annoloop -> Label Studio format -> Label Studio (which took all
    of it) -> its export, reimported_emails.json -> annoloop: the same votes and images."""
    with _client(live) as c:
        first = _project(c, "ls-first")
        c.import_labelstudio(first, FIXTURES / "export_emails.json", files_root=MEDIA)
        second = _project(c, "ls-through-label-studio")
        done = c.import_labelstudio(second, FIXTURES / "reimported_emails.json")
        assert (done["items_created"], done["votes_created"]) == (6, 9)
        assert _stored_votes(c, second) == _stored_votes(c, first)
        assert _payload_shas(c, second) == _payload_shas(c, first)


def test_annotators_given_as_ids_become_named_identities(live: Live) -> None:
    with _client(live) as c:
        pid = _project(c, "ls-ids")
        done = c.import_labelstudio(pid, FIXTURES / "export.json", files_root=MEDIA)
        assert done["votes_created"] == 9
        names = {v[0] for votes in _stored_votes(c, pid).values() for v in votes}
        assert names == {"ls-user-1", "ls-user-2", "ls-user-3"}


def _variant(tmp_path: Path, change: Any) -> tuple[Path, int | None]:
    """The Label Studio file changed by ``change``, which returns the object the problem is
    in (or None); that object gets a first key ``_here_`` so the test knows its line from
    the text alone: the line before the key's."""
    tasks = json.loads((FIXTURES / "export_emails.json").read_text())
    marked = change(tasks)
    if marked is not None:
        kept = dict(marked)
        marked.clear()
        marked.update({"_here_": 1, **kept})
    text = json.dumps(tasks, indent=2)
    path = tmp_path / "variant.json"
    path.write_text(text)
    lines = text.splitlines()
    here = next((n for n, line in enumerate(lines, 1) if '"_here_"' in line), None)
    return path, None if here is None else here - 1


def _rectangle(tasks: list[dict[str, Any]]) -> Any:
    result = tasks[2]["annotations"][1]["result"]
    result[0] = {
        "type": "rectanglelabels",
        "value": {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["cat"]},
        "from_name": "box",
        "to_name": "image",
    }
    return result[0]


def _hamster(tasks: list[dict[str, Any]]) -> Any:
    result = tasks[3]["annotations"][0]["result"][0]
    result["value"]["choices"] = ["hamster"]
    return result


def _two_choices(tasks: list[dict[str, Any]]) -> Any:
    result = tasks[0]["annotations"][0]["result"][0]
    result["value"]["choices"] = ["cat", "dog"]
    return result


def _twice(tasks: list[dict[str, Any]]) -> Any:
    tasks[3]["annotations"].append(copy.deepcopy(tasks[3]["annotations"][0]))
    return tasks[3]["annotations"][1]


def _missing_file(tasks: list[dict[str, Any]]) -> Any:
    tasks[4]["data"]["image"] = "/data/upload/3/not-there.png"
    return tasks[4]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_rectangle, "choices-type labels only"),
        (_hamster, "'hamster' is not one of the project's classes"),
        (_two_choices, "2 choices in one result"),
        (_twice, "a second annotation by 'eng@example.com'"),
        (_missing_file, "no file at"),
    ],
)
def test_a_file_it_cannot_read_is_refused_with_line_and_reason_storing_nothing(
    live: Live, tmp_path: Path, change: Any, reason: str
) -> None:
    path, line = _variant(tmp_path, change)
    with _client(live) as c:
        pid = _project(c, f"ls-bad-{change.__name__}")
        with pytest.raises(LabelStudioError) as refused:
            c.import_labelstudio(pid, path, files_root=MEDIA)
        assert reason in refused.value.reason
        assert refused.value.line == line
        assert f"line {line}" in str(refused.value)
        assert list(c.iter_items(pid)) == []
        assert list(c.iter_annotations(pid)) == []


def test_broken_json_names_its_line(live: Live, tmp_path: Path) -> None:
    lines = json.dumps(json.loads((FIXTURES / "export.json").read_text()), indent=2).splitlines()
    lines[40] = lines[40].rstrip(",")  # a missing comma
    path = tmp_path / "broken.json"
    path.write_text("\n".join(lines))
    with _client(live) as c:
        pid = _project(c, "ls-broken")
        with pytest.raises(LabelStudioError, match="not JSON") as refused:
            c.import_labelstudio(pid, path, files_root=MEDIA)
        assert refused.value.line == 42
        assert list(c.iter_items(pid)) == []


@pytest.fixture
def image_server() -> Iterator[str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(MEDIA), **kw)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_image_urls_are_fetched_and_a_dead_one_refused(
    live: Live, tmp_path: Path, image_server: str
) -> None:
    def to_urls(tasks: list[dict[str, Any]]) -> None:
        for t in tasks:
            if t["data"]["image"].startswith("/data/"):
                t["data"]["image"] = image_server + t["data"]["image"].removeprefix("/data")

    def dead_url(tasks: list[dict[str, Any]]) -> Any:
        to_urls(tasks)
        tasks[1]["data"]["image"] = image_server + "/gone.png"
        return tasks[1]

    path, _ = _variant(tmp_path, to_urls)
    with _client(live) as c:
        pid = _project(c, "ls-urls")
        assert c.import_labelstudio(pid, path)["items_created"] == 6
        dead, line = _variant(tmp_path, dead_url)
        pid2 = _project(c, "ls-dead-url")
        with pytest.raises(LabelStudioError, match="answered 404") as refused:
            c.import_labelstudio(pid2, dead)
        assert refused.value.line == line
        assert list(c.iter_items(pid2)) == []


def test_label_config_must_be_a_single_choice_config_of_the_projects_classes(live: Live) -> None:
    assert parse_label_config(CONFIG).classes == ("cat", "dog", "bird")
    with pytest.raises(LabelStudioError, match="one class per vote"):
        parse_label_config(CONFIG.replace('choice="single"', 'choice="multiple"'))
    with pytest.raises(LabelStudioError, match="no <Choices>"):
        parse_label_config('<View><Image name="i" value="$i"/></View>')
    with _client(live) as c:
        pid = _project(c, "ls-config")
        with pytest.raises(LabelStudioError, match="not the project's classes"):
            c.import_labelstudio(
                pid,
                FIXTURES / "export.json",
                files_root=MEDIA,
                label_config=CONFIG.replace('"bird"', '"fish"'),
            )
        assert list(c.iter_items(pid)) == []


def test_labelstudio_from_the_command_line(live: Live, tmp_path: Path) -> None:
    env = as_engineer(live)
    with _client(live) as c:
        pid = _project(c, "ls-cli")
    done = annoloop(
        "labels",
        "import",
        "-p",
        str(pid),
        str(FIXTURES / "export_emails.json"),
        "--files-root",
        str(MEDIA),
        "--label-config",
        str(FIXTURES / "label_config.xml"),
        "--json",
        env=env,
    )
    assert ok_json(done)["votes_created"] == 9
    out, cfg = tmp_path / "ls.json", tmp_path / "config.xml"
    exported = annoloop(
        "export",
        "-p",
        str(pid),
        "--format",
        "labelstudio",
        "-o",
        str(out),
        "--label-config-out",
        str(cfg),
        "--labelled-only",
        env=env,
    )
    assert exported.returncode == 0, exported.stderr
    assert len(json.loads(out.read_text())) == 5  # task 5 had no votes
    assert parse_label_config(cfg.read_text()).classes == tuple(CLASSES)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1, "data": {"image": "x.png"},\n "annotations": [}]')
    refused = annoloop("labels", "import", "-p", str(pid), str(bad), env=env)
    assert refused.returncode == 1
    assert "line 2" in refused.stderr


def test_module_runs_without_the_server_packages() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import annoloop.client.labelstudio, sys; "
            "assert not any(m.startswith(('app', 'worker')) for m in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
