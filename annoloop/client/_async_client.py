"""The asynchronous client; ``_sync_client.py`` is generated from this file by
``scripts/unasync_client.py`` (async/await removed), so both offer the same calls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import httpx

from annoloop.client.errors import Conflict, CycleEnded, NotFound, WaitTimeout, error_for
from annoloop.client.labelstudio import (
    LabelConfig,
    LabelStudioError,
    data_uri,
    parse_label_config,
    plan_import,
    plan_zip,
    sha256,
    to_tasks,
)
from annoloop.client.progress import make_bar
from annoloop.client.retry import RetryPolicy
from annoloop.client.types import (
    AnnotationOut,
    AnnotatorOut,
    AnnotatorWithToken,
    BulkResult,
    CycleOut,
    DeliveryOut,
    GoldImportResult,
    GoldOut,
    Health,
    ImportResult,
    ItemOut,
    LabelledItemOut,
    NextOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    QueueEntryOut,
    ScoreHistogram,
    TokenOut,
    WebhookOut,
    WebhookWithSecret,
)
from annoloop.client.uploads import (
    PART_ITEMS,
    Part,
    array_parts,
    dataframe_parts,
    folder_parts,
    image_files,
    npz_parts,
)

API = "/api/v1"
CYCLE_STEPS = ("created", "training", "scoring", "labeling", "completed")
CYCLE_ENDS = frozenset({"completed", "failed", "cancelled"})
Rows = Sequence[dict[str, Any]]


class AsyncClient:
    """``AsyncClient(url, token)``: every public route of the annoloop API.

    Errors are raised as ``annoloop.client.errors.ApiError`` subclasses carrying the API's
    ``code``; lists that the API pages come back as iterators; label submissions carry an
    idempotency key (one is made when none is given) so that a retry never counts twice.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        progress: bool | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if self.url.endswith(API):
            self.url = self.url[: -len(API)]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self.http.headers.update(headers)
        self.retry = retry or RetryPolicy()
        self.progress = progress

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        ok: Iterable[int] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send (and resend, as ``RetryPolicy`` allows) one request; raise on a 4xx/5xx."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        url = path if path.startswith("/healthz") else API + path
        attempt = 0
        while True:
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt + 1 >= self.retry.attempts or not self.retry.retry_error(
                    exc, idempotent
                ):
                    raise
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            if response.is_success or response.status_code in ok:
                return response
            if attempt + 1 < self.retry.attempts and self.retry.retry_status(
                response.status_code, idempotent
            ):
                await asyncio.sleep(self.retry.delay(attempt, response))
                attempt += 1
                continue
            raise error_for(response)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        return response.json() if response.content else None

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[Any]:
        cursor: str | None = None
        while True:
            query = {k: v for k, v in params.items() if v is not None}
            if cursor:
                query["cursor"] = cursor
            page = await self._json("GET", path, params=query)
            for row in page["items"]:
                yield row
            cursor = page["next_cursor"]
            if not cursor:
                return

    # ------------------------------------------------------------------ accounts

    async def health(self) -> Health:
        """``/healthz``: the body also when the server answers 503 (something is down)."""
        return cast(Health, await self._json("GET", "/healthz", ok=(503,)))

    async def me(self) -> AnnotatorOut:
        return cast(AnnotatorOut, await self._json("GET", "/me"))

    async def list_annotators(self) -> list[AnnotatorOut]:
        return cast(list[AnnotatorOut], await self._json("GET", "/annotators"))

    async def create_annotator(self, name: str, role: str = "annotator") -> AnnotatorWithToken:
        body = {"name": name, "role": role}
        return cast(AnnotatorWithToken, await self._json("POST", "/annotators", json=body))

    async def create_token(self, annotator_id: int, label: str | None = None) -> TokenOut:
        body = {"label": label} if label else {}
        path = f"/annotators/{annotator_id}/tokens"
        return cast(TokenOut, await self._json("POST", path, json=body))

    async def revoke_token(self, token_id: int) -> None:
        # Not resent after a lost answer: a second revoke answers 404, which would hide that
        # the first one worked.
        await self.request("DELETE", f"/tokens/{token_id}", idempotent=False)

    # ------------------------------------------------------------------ projects

    async def list_projects(self) -> list[ProjectOut]:
        return cast(list[ProjectOut], await self._json("GET", "/projects"))

    async def create_project(self, spec: ProjectCreate | dict[str, Any]) -> ProjectOut:
        return cast(ProjectOut, await self._json("POST", "/projects", json=dict(spec)))

    async def get_project(self, project_id: int) -> ProjectOut:
        return cast(ProjectOut, await self._json("GET", f"/projects/{project_id}"))

    async def find_project(self, name: str) -> ProjectOut:
        """The visible project called ``name`` (the newest if several); NotFound if none."""
        named = [p for p in await self.list_projects() if p["name"] == name]
        if not named:
            raise NotFound(404, "not_found", f"no project named {name!r}")
        return max(named, key=lambda p: p["id"])

    async def update_project(
        self, project_id: int, changes: ProjectUpdate | dict[str, Any]
    ) -> ProjectOut:
        path = f"/projects/{project_id}"
        return cast(ProjectOut, await self._json("PATCH", path, json=dict(changes)))

    async def list_members(self, project_id: int) -> list[AnnotatorOut]:
        path = f"/projects/{project_id}/members"
        return cast(list[AnnotatorOut], await self._json("GET", path))

    async def add_member(self, project_id: int, annotator_id: int) -> None:
        # Adding a member twice is harmless, so a lost answer may be resent.
        body = {"annotator_id": annotator_id}
        await self.request("POST", f"/projects/{project_id}/members", json=body, idempotent=True)

    async def remove_member(self, project_id: int, annotator_id: int) -> None:
        path = f"/projects/{project_id}/members/{annotator_id}"
        await self.request("DELETE", path, idempotent=False)  # a second one is a 404

    # ------------------------------------------------------------------ items

    async def upload_item(
        self,
        project_id: int,
        image: bytes | str | Path,
        *,
        split: str = "pool",
        external_id: str | None = None,
        filename: str | None = None,
    ) -> ItemOut:
        """One PNG/JPEG, from bytes or a file path."""
        if isinstance(image, bytes):
            data, name = image, filename or "image"
        else:
            data, name = Path(image).read_bytes(), filename or Path(image).name
        form = {"split": split, **({"external_id": external_id} if external_id else {})}
        files = {"file": (name, data, "application/octet-stream")}
        path = f"/projects/{project_id}/items"
        return cast(ItemOut, await self._json("POST", path, files=files, data=form))

    async def upload_bulk(
        self,
        project_id: int,
        archive: bytes | str | Path,
        *,
        manifest: bytes | None = None,
        split: str = "pool",
        filename: str = "archive",
    ) -> BulkResult:
        """One ``items:bulk`` request as the server takes it (a zip or an npz, all or nothing)."""
        data = archive if isinstance(archive, bytes) else Path(archive).read_bytes()
        files: dict[str, Any] = {"archive": (filename, data, "application/octet-stream")}
        if manifest is not None:
            files["manifest"] = ("manifest.csv", manifest, "text/csv")
        path = f"/projects/{project_id}/items:bulk"
        return cast(BulkResult, await self._json("POST", path, files=files, data={"split": split}))

    async def upload_folder(
        self, project_id: int, folder: str | Path, *, split: str = "pool", part_items: int = 500
    ) -> BulkResult:
        """Every PNG/JPEG under ``folder`` (external id = its path under the folder)."""
        total = len(image_files(Path(folder)))
        parts = folder_parts(Path(folder), split, part_items=part_items)
        return await self._upload_parts(project_id, parts, total)

    async def upload_arrays(
        self,
        project_id: int,
        *,
        images: Any = None,
        features: Any = None,
        external_ids: Sequence[str] | None = None,
        split: str | Sequence[str] = "pool",
        part_items: int = PART_ITEMS,
    ) -> BulkResult:
        """numpy ``images`` (uint8 N×H×W[×3]) or ``features`` (float32 N×D) in parts."""
        n = len(images if images is not None else features)
        parts = array_parts(
            images=images,
            features=features,
            external_ids=external_ids,
            split=split,
            part_items=part_items,
        )
        return await self._upload_parts(project_id, parts, n)

    async def upload_npz(
        self, project_id: int, path: str | Path, *, part_items: int = PART_ITEMS
    ) -> BulkResult:
        import numpy as np

        with np.load(path, allow_pickle=False) as npz:
            key = "images" if "images" in npz.files else "features"
            n = len(npz[key]) if key in npz.files else None
        return await self._upload_parts(project_id, npz_parts(Path(path), part_items=part_items), n)

    async def upload_dataframe(
        self, project_id: int, frame: Any, *, split: str = "pool", part_items: int = PART_ITEMS
    ) -> BulkResult:
        """Feature rows from a pandas DataFrame (``external_id``/``split`` columns optional)."""
        parts = dataframe_parts(frame, split=split, part_items=part_items)
        return await self._upload_parts(project_id, parts, len(frame))

    async def _upload_parts(
        self, project_id: int, parts: Iterable[Part], total: int | None
    ) -> BulkResult:
        bar = make_bar(self.progress, total, "upload", "items")
        result: BulkResult = {"created": 0, "first_id": None, "last_id": None, "splits": {}}
        try:
            for part in parts:
                done = await self._upload_part(project_id, part)
                result["created"] += done["created"]
                if result["first_id"] is None:
                    result["first_id"] = done["first_id"]
                result["last_id"] = done["last_id"] or result["last_id"]
                for split, count in done["splits"].items():
                    result["splits"][split] = result["splits"].get(split, 0) + count
                bar.update(part.count)
        finally:
            bar.close()
        return result

    async def _upload_part(self, project_id: int, part: Part) -> BulkResult:
        try:
            return await self.upload_bulk(project_id, part.archive, filename=part.filename)
        except httpx.TransportError:
            if part.external_ids is None:
                raise  # no way to tell whether the server stored it: say so
        # The answer was lost. A part is stored whole or not at all, so on a resend a 409
        # naming only this part's ids means the first send was stored.
        try:
            return await self.upload_bulk(project_id, part.archive, filename=part.filename)
        except Conflict as exc:
            existing = (exc.detail or {}).get("existing") if isinstance(exc.detail, dict) else None
            if exc.code != "duplicate_external_id" or not existing:
                raise
            if not set(existing) <= set(part.external_ids):
                raise
            return {"created": part.count, "first_id": None, "last_id": None, "splits": {}}

    async def iter_items(
        self,
        project_id: int,
        *,
        split: str | None = None,
        labelled: bool | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[LabelledItemOut]:
        params = {"split": split, "labelled": labelled, "limit": page_size}
        async for row in self._pages(f"/projects/{project_id}/items", params):
            yield row

    async def get_item(self, item_id: int) -> LabelledItemOut:
        return cast(LabelledItemOut, await self._json("GET", f"/items/{item_id}"))

    async def get_payload(self, item_id: int) -> bytes:
        return (await self.request("GET", f"/items/{item_id}/payload")).content

    # ------------------------------------------------------------------ labels

    async def next_item(self, project_id: int, *, ahead: bool = False) -> NextOut:
        """Leases an item (not a pure read; asking again returns the same lease)."""
        path = f"/projects/{project_id}/next"
        params = {"ahead": int(ahead)}
        return cast(NextOut, await self._json("GET", path, params=params, idempotent=True))

    async def submit_label(
        self, item_id: int, class_index: int, *, idempotency_key: str | None = None
    ) -> AnnotationOut:
        """A label for an item leased to the caller; resent safely under its idempotency key."""
        body = {"class_index": class_index, "idempotency_key": idempotency_key or _key()}
        path = f"/items/{item_id}/annotations"
        return cast(AnnotationOut, await self._json("POST", path, json=body, idempotent=True))

    async def skip(self, lease_id: int) -> None:
        await self.request("POST", f"/leases/{lease_id}/skip")

    async def undo(self, project_id: int) -> NextOut:
        return cast(NextOut, await self._json("POST", f"/projects/{project_id}/annotations:undo"))

    async def iter_annotations(
        self, project_id: int, *, item_id: int | None = None, page_size: int = 500
    ) -> AsyncIterator[AnnotationOut]:
        params = {"item_id": item_id, "limit": page_size}
        async for row in self._pages(f"/projects/{project_id}/annotations", params):
            yield row

    async def import_labels(
        self, project_id: int, rows: Rows | str | bytes | Path, *, csv: bool = False
    ) -> ImportResult:
        """Rows of ``external_id, annotator, class_index | class_name``: dicts, or a CSV/JSON
        file (a ``Path``) or CSV text. All rows or none are stored; importing the same rows
        again stores nothing new (``skipped_duplicates``)."""
        path = f"/projects/{project_id}/annotations:import"
        # Idempotent on the server: resent rows are skipped as duplicates.
        kwargs = _rows_body(rows, csv)
        return cast(ImportResult, await self._json("POST", path, idempotent=True, **kwargs))

    async def import_gold(
        self, project_id: int, rows: Rows | str | bytes | Path, *, csv: bool = False
    ) -> GoldImportResult:
        path = f"/projects/{project_id}/gold:import"
        kwargs = _rows_body(rows, csv)
        return cast(GoldImportResult, await self._json("POST", path, idempotent=True, **kwargs))

    async def list_gold(self, project_id: int) -> list[GoldOut]:
        return cast(list[GoldOut], await self._json("GET", f"/projects/{project_id}/gold"))

    # ------------------------------------------------------------------ cycles

    async def start_cycle(
        self,
        project_id: int,
        *,
        strategy: str | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> CycleOut:
        body = {
            k: v
            for k, v in {
                "strategy": strategy,
                "params": params,
                "seed": seed,
                "batch_size": batch_size,
            }.items()
            if v is not None
        }
        path = f"/projects/{project_id}/cycles"
        return cast(CycleOut, await self._json("POST", path, json=body))

    async def list_cycles(self, project_id: int) -> list[CycleOut]:
        return cast(list[CycleOut], await self._json("GET", f"/projects/{project_id}/cycles"))

    async def get_cycle(self, project_id: int, cycle_id: int) -> CycleOut:
        path = f"/projects/{project_id}/cycles/{cycle_id}"
        return cast(CycleOut, await self._json("GET", path))

    async def retry_cycle(self, project_id: int, cycle_id: int) -> CycleOut:
        path = f"/projects/{project_id}/cycles/{cycle_id}/retry"
        return cast(CycleOut, await self._json("POST", path))

    async def cancel_cycle(self, project_id: int, cycle_id: int) -> CycleOut:
        path = f"/projects/{project_id}/cycles/{cycle_id}/cancel"
        return cast(CycleOut, await self._json("POST", path))  # a second one is a 409

    async def cycle_queue(self, project_id: int, cycle_id: int) -> list[QueueEntryOut]:
        path = f"/projects/{project_id}/cycles/{cycle_id}/queue"
        return cast(list[QueueEntryOut], await self._json("GET", path))

    async def cycle_scores(
        self, project_id: int, cycle_id: int, *, bins: int = 30
    ) -> ScoreHistogram:
        path = f"/projects/{project_id}/cycles/{cycle_id}/scores"
        return cast(ScoreHistogram, await self._json("GET", path, params={"bins": bins}))

    async def wait_for(
        self,
        cycle: CycleOut | dict[str, Any],
        state: str | Sequence[str] = "labeling",
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
    ) -> CycleOut:
        """Follow ``cycle`` until it is in ``state`` (or one of several) and return it.

        Raises ``CycleEnded`` when it stops elsewhere (failed, cancelled, or completed short
        of the state) and ``WaitTimeout`` after ``timeout`` seconds. "labeling" is also met
        by a cycle already past it (completed) only when "completed" is asked for too.
        """
        wanted = (state,) if isinstance(state, str) else tuple(state)
        pid, cid = int(cycle["project_id"]), int(cycle["id"])
        target = max((CYCLE_STEPS.index(s) for s in wanted if s in CYCLE_STEPS), default=0)
        bar = make_bar(self.progress, target, f"cycle {cycle.get('number', cid)}", "steps")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        step = 0
        try:
            while True:
                current = await self.get_cycle(pid, cid)
                now = current["state"]
                if now in CYCLE_STEPS and CYCLE_STEPS.index(now) > step:
                    bar.update(min(CYCLE_STEPS.index(now), target) - min(step, target))
                    step = CYCLE_STEPS.index(now)
                bar.set_description_str(f"cycle {current['number']}: {now}")
                if now in wanted:
                    return current
                if now in CYCLE_ENDS:
                    raise CycleEnded(dict(current), wanted)
                if deadline is not None and loop.time() >= deadline:
                    raise WaitTimeout(dict(current), wanted, timeout or 0.0)
                await asyncio.sleep(poll_s)
        finally:
            bar.close()

    # ------------------------------------------------------------------ reports

    async def progress_report(self, project_id: int) -> dict[str, Any]:
        return cast(dict[str, Any], await self._json("GET", f"/projects/{project_id}/progress"))

    async def export(
        self, project_id: int, *, format: str = "jsonl", aggregation: str | None = None
    ) -> bytes:
        """The export file's bytes (``csv``, ``json`` or ``jsonl``)."""
        params = {"format": format, **({"aggregation": aggregation} if aggregation else {})}
        response = await self.request("GET", f"/projects/{project_id}/export", params=params)
        return response.content

    async def export_rows(
        self, project_id: int, *, aggregation: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item with votes, as dicts (the ``json`` export)."""
        import json

        raw = await self.export(project_id, format="json", aggregation=aggregation)
        return cast(list[dict[str, Any]], json.loads(raw))

    # ------------------------------------------------------------------ webhooks

    async def create_webhook(
        self, project_id: int, url: str, events: Sequence[str], *, secret: str | None = None
    ) -> WebhookWithSecret:
        """Subscribe ``url`` to ``events`` (cycle.state_changed, batch.labelled,
        budget.spent); the answer's ``secret`` signs deliveries and is shown only here."""
        body: dict[str, Any] = {"url": url, "events": list(events)}
        if secret is not None:
            body["secret"] = secret
        path = f"/projects/{project_id}/webhooks"
        return cast(WebhookWithSecret, await self._json("POST", path, json=body))

    async def list_webhooks(self, project_id: int) -> list[WebhookOut]:
        path = f"/projects/{project_id}/webhooks"
        return cast(list[WebhookOut], await self._json("GET", path))

    async def delete_webhook(self, project_id: int, webhook_id: int) -> None:
        await self.request("DELETE", f"/projects/{project_id}/webhooks/{webhook_id}")

    async def webhook_deliveries(
        self, project_id: int, webhook_id: int, *, limit: int = 100
    ) -> list[DeliveryOut]:
        """The delivery log, newest first."""
        path = f"/projects/{project_id}/webhooks/{webhook_id}/deliveries"
        return cast(list[DeliveryOut], await self._json("GET", path, params={"limit": limit}))

    async def retry_delivery(
        self, project_id: int, webhook_id: int, delivery_id: int
    ) -> DeliveryOut:
        path = f"/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"
        return cast(DeliveryOut, await self._json("POST", path))

    # ------------------------------------------------------------------ Label Studio

    async def import_labelstudio(
        self,
        project_id: int,
        source: str | Path | bytes,
        *,
        files_root: str | Path | None = None,
        split: str = "pool",
        label_config: str | None = None,
    ) -> dict[str, int]:
        """A Label Studio JSON export: its tasks as items, its annotations as votes
        (``annoloop.client.labelstudio``). Checked whole, images fetched, before anything is
        stored; ``LabelStudioError`` names the line and the reason."""
        project = await self.get_project(project_id)
        config = parse_label_config(label_config) if label_config else None
        if config is not None:
            missing = [c for c in config.classes if c not in project["classes"]]
            if missing:
                raise LabelStudioError(
                    "label config", None, f"classes {missing} are not the project's classes"
                )
        if isinstance(source, bytes):
            raw, name, base = source, "export", Path(".")
        else:
            raw, name, base = Path(source).read_bytes(), str(source), Path(source).parent
        bar = make_bar(self.progress, None, "images", "tasks")
        try:
            plan = await asyncio.to_thread(
                plan_import,
                raw,
                project["classes"],
                source=name,
                base_dir=base,
                files_root=Path(files_root) if files_root else None,
                config=config,
                progress=bar.update,
            )
        finally:
            bar.close()
        wanted = {t.external_id: t for t in plan.export.tasks}
        reused: set[str] = set()
        async for item in self.iter_items(project_id):
            task = wanted.get(item["external_id"])
            if task is None:
                continue
            if item["blob_sha256"] != sha256(plan.payloads[task.external_id][0]):
                raise LabelStudioError(
                    name,
                    task.line,
                    f"task {task.task_id}: the project already has an item "
                    f"{task.external_id!r} with other content",
                )
            reused.add(task.external_id)
        archive, count = plan_zip(plan, reused, split)
        created = 0
        if count:
            done = await self.upload_bulk(project_id, archive, filename="labelstudio.zip")
            created = done["created"]
        rows = plan.rows()
        labels: ImportResult = {"created": 0, "skipped_duplicates": 0, "annotators_created": 0}
        if rows:
            labels = await self.import_labels(project_id, rows)
        return {
            "tasks": len(plan.export.tasks),
            "items_created": created,
            "items_reused": len(reused),
            "votes_created": labels["created"],
            "votes_already_there": labels["skipped_duplicates"],
            "annotators_created": labels["annotators_created"],
            "annotations_not_votes": plan.export.skipped_annotations,
        }

    async def export_labelstudio(
        self,
        project_id: int,
        *,
        images: str = "inline",
        labelled_only: bool = False,
        config: LabelConfig | None = None,
    ) -> list[dict[str, Any]]:
        """The project as Label Studio tasks (its JSON export's shape), votes as annotations.

        ``images``: ``inline`` (data URIs: self-contained), ``url`` (this server's payload
        URL: readable with a token only), or a template such as
        ``https://cdn.example.org/{external_id}`` (``{item_id}`` too)."""
        rows = await self.export_rows(project_id)
        items: list[dict[str, Any]] = [dict(i) async for i in self.iter_items(project_id)]
        voted = {r["item_id"] for r in rows}
        chosen = [i for i in items if i["id"] in voted] if labelled_only else items
        refs: dict[int, str] = {}
        bar = make_bar(self.progress, len(chosen), "images", "items")
        try:
            for item in chosen:
                if images == "inline":
                    payload = await self.get_payload(item["id"])
                    refs[item["id"]] = data_uri(item["media_type"], payload)
                elif images == "url":
                    refs[item["id"]] = f"{self.url}{API}/items/{item['id']}/payload"
                else:
                    refs[item["id"]] = images.format(
                        external_id=item["external_id"], item_id=item["id"]
                    )
                bar.update(1)
        finally:
            bar.close()
        return to_tasks(rows, chosen, lambda item: refs[item["id"]], config=config)


def _key() -> str:
    return uuid.uuid4().hex


def _rows_body(rows: Rows | str | bytes | Path, csv: bool) -> dict[str, Any]:
    if isinstance(rows, Path):
        data = rows.read_bytes()
        is_csv = csv or rows.suffix.lower() == ".csv"
        kind = "text/csv" if is_csv else "application/json"
        return {"content": data, "headers": {"Content-Type": kind}}
    if isinstance(rows, str | bytes):
        data = rows.encode() if isinstance(rows, str) else rows
        kind = "application/json" if not csv and data.lstrip()[:1] in (b"[", b"{") else "text/csv"
        return {"content": data, "headers": {"Content-Type": kind}}
    return {"json": [dict(r) for r in rows]}
