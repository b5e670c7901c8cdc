"""``annoloop.client`` against a real API process and worker (tests/client/conftest.py)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from annoloop.client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    CycleEnded,
    NotFound,
    RetryPolicy,
    Unauthorized,
    Unprocessable,
)
from annoloop.client.progress import PlainBar
from tests.aio import run as run_coroutine
from tests.client.conftest import Live
from tests.client.lossy import AsyncLoseAnswers, LoseAnswers

pytestmark = pytest.mark.slow
FAST = RetryPolicy(attempts=3, backoff_s=0.05)
MLP = {"name": "mlp", "input_shape": [4], "hparams": {"epochs": 2}}


def _client(live: Live, token: str | None = None, **kw: Any) -> Client:
    return Client(live.url, token or live.engineer, retry=FAST, progress=False, **kw)


def _project(c: Client, name: str, **extra: Any) -> dict[str, Any]:
    spec = {"name": name, "classes": ["a", "b", "c"], "model_spec": MLP, **extra}
    return dict(c.create_project(spec))


def _features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(path)


def test_errors_carry_the_api_code_and_store_nothing(live: Live) -> None:
    with _client(live) as c:
        before = len(c.list_projects())
        with pytest.raises(Unprocessable) as bad:
            c.create_project({"name": "x", "classes": ["a"], "model_spec": {"name": "nope"}})
        assert bad.value.status == 422
        assert bad.value.code
        with pytest.raises(NotFound) as missing:
            c.get_project(987654)
        assert missing.value.code == "not_found"
        assert len(c.list_projects()) == before
    with _client(live, token="not-a-token") as c, pytest.raises(Unauthorized) as who:
        c.me()
    assert who.value.status == 401
    assert who.value.code


def test_pages_come_back_as_one_iterator(live: Live) -> None:
    with _client(live) as c:
        pid = _project(c, "pages")["id"]
        ids = [f"row{i:02d}" for i in range(23)]
        done = c.upload_arrays(pid, features=_features(23), external_ids=ids, part_items=10)
        assert done["created"] == 23
        assert done["splits"] == {"pool": 23}
        seen = [item["external_id"] for item in c.iter_items(pid, page_size=5)]
        assert seen == ids
        assert [i["external_id"] for i in c.iter_items(pid, split="test")] == []


def test_folder_upload_names_items_by_their_path_and_refuses_a_second_upload(
    live: Live, tmp_path: Path
) -> None:
    for n, rel in enumerate(["cats/001.png", "dogs/001.png", "dogs/002.PNG", "top.jpg"]):
        _png(tmp_path / rel, n)
    (tmp_path / "notes.txt").write_text("not an image")
    with _client(live) as c:
        pid = _project(c, "folder", model_spec={"name": "small_cnn", "input_shape": [1, 16, 16]})[
            "id"
        ]
        done = c.upload_folder(pid, tmp_path, part_items=2)
        assert done["created"] == 4
        names = sorted(i["external_id"] for i in c.iter_items(pid))
        assert names == ["cats/001.png", "dogs/001.png", "dogs/002.PNG", "top.jpg"]
        with pytest.raises(Conflict) as again:
            c.upload_folder(pid, tmp_path)
        assert again.value.code == "duplicate_external_id"
        assert len(list(c.iter_items(pid))) == 4


def test_dataframe_rows_become_feature_items(live: Live) -> None:
    frame = pd.DataFrame(_features(6), columns=["f0", "f1", "f2", "f3"])
    frame["external_id"] = [f"df{i}" for i in range(6)]
    frame["split"] = ["pool"] * 4 + ["test"] * 2
    with _client(live) as c:
        pid = _project(c, "frame")["id"]
        done = c.upload_dataframe(pid, frame, part_items=4)
        assert done["created"] == 6
        assert done["splits"] == {"pool": 4, "test": 2}
        payload = np.frombuffer(c.get_payload(next(iter(c.iter_items(pid)))["id"]), np.float32)
        assert payload.tolist() == pytest.approx(frame.iloc[0, :4].tolist())
        with pytest.raises(ValueError, match="not numeric"):
            c.upload_dataframe(pid, frame.assign(note="x"))
        assert len(list(c.iter_items(pid))) == 6


def _lose_first(path_end: str, method: str = "POST") -> LoseAnswers:
    return LoseAnswers(lambda r: r.method == method and r.url.path.endswith(path_end))


def test_a_lost_label_answer_is_resent_under_its_key_and_counted_once(live: Live) -> None:
    (person, token) = live.annotators[0]
    with _client(live) as c:
        pid = _project(c, "resend")["id"]
        c.add_member(pid, person)
        c.upload_arrays(pid, features=_features(5), external_ids=[f"r{i}" for i in range(5)])
        c.import_labels(pid, [{"external_id": "r0", "annotator": "seed", "class_index": 0}])
        cycle = c.start_cycle(pid, strategy="random", batch_size=2)
        c.wait_for(cycle, "labeling", timeout=120)
    lossy = _lose_first("/annotations")
    with _client(live, token, http=httpx.Client(base_url=live.url, transport=lossy)) as a:
        nxt = a.next_item(pid)
        assert nxt["status"] == "leased"
        assert nxt["item"] is not None
        label = a.submit_label(nxt["item"]["id"], 2)
    assert lossy.left == 0  # the first answer was lost
    assert lossy.sent.count(f"POST /api/v1/items/{nxt['item']['id']}/annotations") == 2
    with _client(live) as c:
        votes = list(c.iter_annotations(pid, item_id=nxt["item"]["id"]))
    assert [(v["id"], v["class_index"]) for v in votes] == [(label["id"], 2)]


def test_a_lost_answer_to_a_create_is_not_resent(live: Live) -> None:
    lossy = _lose_first("/projects")
    http = httpx.Client(base_url=live.url, transport=lossy)
    with _client(live, http=http) as c, pytest.raises(httpx.ReadError):
        _project(c, "once")
    with _client(live) as c:
        assert [p["name"] for p in c.list_projects()].count("once") == 1


def test_a_lost_answer_to_an_upload_part_is_resent_and_stored_once(live: Live) -> None:
    lossy = _lose_first("/items:bulk")
    with _client(live) as c:
        pid = _project(c, "parts")["id"]
    ids = [f"p{i}" for i in range(9)]
    with _client(live, http=httpx.Client(base_url=live.url, transport=lossy)) as c:
        done = c.upload_arrays(pid, features=_features(9), external_ids=ids, part_items=4)
        assert done["created"] == 9
        assert sorted(i["external_id"] for i in c.iter_items(pid)) == sorted(ids)
    assert lossy.sent.count(f"POST /api/v1/projects/{pid}/items:bulk") == 4  # 3 parts + 1


def test_wait_for_follows_the_cycle_with_a_progress_bar(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    with _client(live) as c:
        pid = _project(c, "waiting")["id"]
        c.upload_arrays(pid, features=_features(12), external_ids=[f"w{i}" for i in range(12)])
        rows = [{"external_id": f"w{i}", "annotator": "seed", "class_index": i} for i in range(3)]
        assert c.import_labels(pid, rows)["created"] == 3
        cycle = c.start_cycle(pid, strategy="entropy", batch_size=4, seed=7)
    with Client(live.url, live.engineer, progress=True) as c:
        done = c.wait_for(cycle, "labeling", timeout=120, poll_s=0.2)
        assert done["state"] == "labeling"
        assert done["seed"] == 7
        assert len(c.cycle_queue(pid, done["id"])) == 4
        assert "labeling" in capsys.readouterr().err
        # Cancelled while waiting for a state it will never reach: raised, not hung.
        second = c.start_cycle(pid, strategy="random", batch_size=2)
        c.cancel_cycle(pid, second["id"])
        with pytest.raises(CycleEnded, match="cancelled"):
            c.wait_for(second, "labeling", timeout=60)


def test_plain_progress_bar_without_tqdm() -> None:
    out = io.StringIO()
    bar = PlainBar(10, "upload", "items", stream=out)
    bar.update(4)
    bar.update(6)
    bar.close()
    assert out.getvalue().splitlines()[-1] == "upload: 10/10 items"


def test_async_client_does_the_same(live: Live) -> None:
    (person, token) = live.annotators[1]

    async def run() -> tuple[list[str], int, int]:
        async with AsyncClient(live.url, live.engineer, retry=FAST, progress=False) as c:
            spec = {"name": "async", "classes": ["a", "b"], "model_spec": MLP}
            pid = (await c.create_project(spec))["id"]
            await c.add_member(pid, person)
            ids = [f"a{i}" for i in range(7)]
            await c.upload_arrays(pid, features=_features(7, 1), external_ids=ids, part_items=3)
            seen = [i["external_id"] async for i in c.iter_items(pid, page_size=2)]
            await c.import_labels(pid, [{"external_id": "a0", "annotator": "s", "class_index": 1}])
            started = await c.start_cycle(pid, batch_size=2)
            cycle = await c.wait_for(started, "labeling", timeout=120)
        lossy = AsyncLoseAnswers(lambda r: r.url.path.endswith("/annotations"))
        http = httpx.AsyncClient(base_url=live.url, transport=lossy)
        async with AsyncClient(live.url, token, retry=FAST, progress=False, http=http) as a:
            nxt = await a.next_item(pid)
            assert nxt["item"] is not None
            await a.submit_label(nxt["item"]["id"], 0)
            with pytest.raises(Conflict):  # a second label from the same person: a 409, shown
                await a.submit_label(nxt["item"]["id"], 1)
        async with AsyncClient(live.url, live.engineer, progress=False) as c:
            votes = [v async for v in c.iter_annotations(pid, item_id=nxt["item"]["id"])]
        return seen, cycle["batch_size"], len(votes)

    seen, batch, votes = run_coroutine(run())
    assert seen == [f"a{i}" for i in range(7)]
    assert batch == 2
    assert votes == 1


def test_a_zip_the_server_refuses_is_an_error_with_its_code(live: Live) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("bad.png", b"not a png at all")
    with _client(live) as c:
        pid = _project(c, "badzip")["id"]
        with pytest.raises(ApiError) as refused:
            c.upload_bulk(pid, buf.getvalue())
        assert 400 <= refused.value.status < 500
        assert refused.value.code
        assert list(c.iter_items(pid)) == []
