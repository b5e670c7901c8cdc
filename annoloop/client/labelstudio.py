"""Label Studio interop: its JSON export in (tasks -> items, annotations -> votes), annoloop
projects out in its task format.

In: a Label Studio "JSON" export (a list of tasks, as ``data_export`` writes them: ``data``,
``annotations`` with ``completed_by`` and ``result``) of a choices-type labelling config.
Each task becomes an item (external id ``ls-<task id>``, or the ``annoloop_external_id`` an
annoloop export put there); each annotation that is not cancelled and holds one choice
becomes one vote of its annotator (``completed_by.email``, or ``ls-user-<id>``).
Predictions and drafts are not votes and are left out.

The whole file is read and checked, and every image fetched, before anything is stored; a
file that cannot be read is refused with the line and the reason (``LabelStudioError``).
Importing the same file again stores nothing new: items whose payload is already there are
reused, votes already there are skipped.

Out: one task per item with its votes as annotations (one annotation per vote, each with one
``choices`` result), images inline as data URIs (or a URL per item), and the labelling config
that goes with it (``label_config``).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import re
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx

from annoloop.client import located_json
from annoloop.client.errors import AnnoloopError

# The server's rule for imported annotator names (app/auth/schemas.py NAME_PATTERN).
NAME = re.compile(r"[\w.@+-]+( [\w.@+-]+)*")
NO_EMAIL_DOMAIN = "@annoloop.invalid"  # names without one get it on the way out, lose it in
MAX_EXTERNAL_ID = 255


class LabelStudioError(AnnoloopError):
    """The file cannot be imported; nothing was stored."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        where = f"{source}: line {line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source, self.line, self.reason = source, line, reason


@dataclass(frozen=True)
class LabelConfig:
    """The parts of a ``<View>`` config a choices project uses."""

    choices_name: str = "label"
    object_name: str = "image"
    data_key: str = "image"
    classes: tuple[str, ...] = ()


def parse_label_config(xml: str) -> LabelConfig:
    """The first ``<Choices>`` (single choice) and the ``<Image>`` it labels."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise LabelStudioError("label config", line, f"not XML: {exc}") from None
    found = [el for el in root.iter() if el.tag.lower() == "choices"]
    if not found:
        raise LabelStudioError("label config", None, "no <Choices> tag: not a choices config")
    choices = found[0]
    if (choices.get("choice") or "single") not in ("single", "single-radio"):
        raise LabelStudioError(
            "label config", None, "<Choices choice=multiple>: annoloop takes one class per vote"
        )
    object_name = choices.get("toName") or "image"
    data_key = object_name
    for el in root.iter():
        if el.get("name") == object_name and (el.get("value") or "").startswith("$"):
            data_key = el.get("value", "")[1:]
    classes = tuple(
        c.get("value") or c.get("alias") or "" for c in choices if c.tag.lower() == "choice"
    )
    return LabelConfig(choices.get("name") or "label", object_name, data_key, classes)


def label_config(classes: Iterable[str], config: LabelConfig | None = None) -> str:
    """A labelling config for an annoloop project's classes, for a new Label Studio project."""
    config = config or LabelConfig()
    rows = "\n".join(f'    <Choice value="{_xml_attr(c)}"/>' for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{config.object_name}" value="${config.data_key}"/>\n'
        f'  <Choices name="{config.choices_name}" toName="{config.object_name}" '
        'choice="single" showInline="true">\n'
        f"{rows}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _xml_attr(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


# ------------------------------------------------------------------------------- reading


@dataclass
class Vote:
    annotator: str
    class_name: str
    line: int


@dataclass
class Task:
    task_id: int
    line: int
    external_id: str
    image_ref: str
    votes: list[Vote] = field(default_factory=list)


@dataclass
class ExportFile:
    source: str
    tasks: list[Task]
    skipped_annotations: int  # cancelled, or no choice in them


def read_export(
    raw: bytes, classes: Iterable[str], *, source: str = "export", config: LabelConfig | None = None
) -> ExportFile:
    """Parse and check a Label Studio JSON export against the project's ``classes``."""
    known = list(classes)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelStudioError(source, None, f"not UTF-8 text: {exc}") from None
    try:
        value, lines = located_json.loads(text)
    except located_json.LocatedJSONError as exc:
        raise LabelStudioError(source, exc.line, f"not JSON: {exc.reason}") from None
    except RecursionError:
        raise LabelStudioError(source, None, "JSON nested too deeply") from None
    if isinstance(value, dict):
        value = [value]  # one task, as Label Studio also accepts
    if not isinstance(value, list):
        raise LabelStudioError(source, 1, "expected a list of tasks (Label Studio's JSON export)")
    reader = _Reader(source, lines, set(known), config)
    tasks = [reader.task(t, n) for n, t in enumerate(value)]
    if not tasks:
        raise LabelStudioError(source, 1, "the export holds no tasks")
    return ExportFile(source, tasks, reader.skipped)


class _Reader:
    def __init__(
        self, source: str, lines: dict[int, int], classes: set[str], config: LabelConfig | None
    ) -> None:
        self.source, self.lines, self.classes, self.config = source, lines, classes, config
        self.skipped = 0
        self.external_ids: dict[str, int] = {}

    def fail(self, node: Any, reason: str, fallback: int | None = None) -> LabelStudioError:
        return LabelStudioError(self.source, self.lines.get(id(node), fallback), reason)

    def task(self, node: Any, n: int) -> Task:
        if not isinstance(node, dict):
            raise self.fail(node, f"task {n + 1} is not an object")
        line = self.lines[id(node)]
        task_id = node.get("id")
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise self.fail(node, f"task {n + 1} has no integer id")
        data = node.get("data")
        if not isinstance(data, dict):
            raise self.fail(node, f"task {task_id} has no data object")
        external_id = data.get("annoloop_external_id") or f"ls-{task_id}"
        if not isinstance(external_id, str) or len(external_id) > MAX_EXTERNAL_ID:
            raise self.fail(data, f"task {task_id}: annoloop_external_id is not a short string")
        if external_id in self.external_ids:
            raise self.fail(
                node,
                f"task {task_id}: external id {external_id!r} again (first at line "
                f"{self.external_ids[external_id]})",
            )
        self.external_ids[external_id] = line
        annotations = node.get("annotations", [])
        if not isinstance(annotations, list):
            raise self.fail(node, f"task {task_id}: annotations is not a list")
        task = Task(task_id, line, external_id, self.image_ref(node, data, annotations, task_id))
        seen: dict[str, int] = {}
        for a in annotations:
            vote = self.vote(a, task_id, line)
            if vote is None:
                self.skipped += 1
                continue
            if vote.annotator in seen:
                raise self.fail(
                    a,
                    f"task {task_id}: a second annotation by {vote.annotator!r} (first at line "
                    f"{seen[vote.annotator]}); annoloop counts one vote per person per item",
                )
            seen[vote.annotator] = vote.line
            task.votes.append(vote)
        return task

    def image_ref(self, task: Any, data: dict[str, Any], annotations: list[Any], tid: int) -> str:
        keys: list[str] = []
        if self.config is not None:
            keys.append(self.config.data_key)
        for a in annotations:
            for r in a.get("result", []) if isinstance(a, dict) else []:
                if isinstance(r, dict) and isinstance(r.get("to_name"), str):
                    keys.append(r["to_name"])
        keys.append("image")
        for key in keys:
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
        strings = [
            v for k, v in data.items() if isinstance(v, str) and not k.startswith("annoloop_")
        ]
        if len(strings) == 1:
            return str(strings[0])
        raise self.fail(
            data, f"task {tid}: no image in its data (looked for {sorted(set(keys))})", None
        )

    def vote(self, node: Any, tid: int, task_line: int) -> Vote | None:
        if not isinstance(node, dict):
            raise self.fail(node, f"task {tid}: an annotation is not an object", task_line)
        if node.get("was_cancelled"):
            return None
        result = node.get("result", [])
        if not isinstance(result, list):
            raise self.fail(node, f"task {tid}: an annotation's result is not a list")
        picked: list[tuple[str, Any]] = []
        for r in result:
            if not isinstance(r, dict):
                raise self.fail(node, f"task {tid}: a result is not an object")
            kind = r.get("type")
            if kind != "choices":
                raise self.fail(
                    r,
                    f"task {tid}: a {kind!r} result; annoloop imports choices-type labels only",
                )
            if self.config is not None and r.get("from_name") not in (
                None,
                self.config.choices_name,
            ):
                continue
            choices = (r.get("value") or {}).get("choices")
            if not isinstance(choices, list) or len(choices) != 1:
                raise self.fail(
                    r,
                    f"task {tid}: {len(choices) if isinstance(choices, list) else 'no'} choices "
                    "in one result; annoloop takes one class per vote",
                )
            picked.append((str(choices[0]), r))
        if not picked:
            return None
        if len(picked) > 1:
            raise self.fail(node, f"task {tid}: an annotation with {len(picked)} choices results")
        class_name, r = picked[0]
        if class_name not in self.classes:
            raise self.fail(
                r, f"task {tid}: class {class_name!r} is not one of the project's classes"
            )
        return Vote(self.annotator(node, tid), class_name, self.lines[id(r)])

    def annotator(self, node: dict[str, Any], tid: int) -> str:
        who = node.get("completed_by")
        if isinstance(who, dict) and isinstance(who.get("email"), str):
            name = who["email"]
            if name.endswith(NO_EMAIL_DOMAIN):
                name = name[: -len(NO_EMAIL_DOMAIN)]
        elif isinstance(who, int) and not isinstance(who, bool):
            name = f"ls-user-{who}"
        else:
            raise self.fail(node, f"task {tid}: an annotation without completed_by")
        if len(name) > 100 or not NAME.fullmatch(name):
            raise self.fail(node, f"task {tid}: annotator {name!r} is not a usable name")
        return name


# ------------------------------------------------------------------------------- images


def fetch_image(
    ref: str, *, base_dir: Path, files_root: Path | None, http: httpx.Client
) -> tuple[bytes, str]:
    """The bytes behind a task's image reference and a file name for them.

    ``data:`` URIs; ``http(s)://`` URLs (fetched without annoloop's token); Label Studio's
    own ``/data/upload/<project>/<file>`` and ``/data/local-files/?d=<path>`` under
    ``files_root`` (its media folder, or its local-files document root); file paths, relative
    to the export's folder."""
    if ref.startswith("data:"):
        head, _, body = ref.partition(",")
        if not head.endswith(";base64"):
            raise ValueError("a data: URI that is not base64")
        try:
            return base64.b64decode(body, validate=True), "inline"
        except binascii.Error as exc:
            raise ValueError(f"a data: URI with broken base64 ({exc})") from None
    parsed = urllib.parse.urlsplit(ref)
    if parsed.scheme in ("http", "https"):
        response = http.get(ref)
        if response.status_code != 200:
            raise ValueError(f"GET {ref} answered {response.status_code}")
        return response.content, Path(parsed.path).name or "image"
    if parsed.scheme:
        raise ValueError(f"cannot fetch {parsed.scheme}: references ({ref[:80]})")
    if ref.startswith("/data/"):
        if files_root is None:
            raise ValueError(f"{ref} is a Label Studio file: give its media folder (files_root)")
        if ref.startswith("/data/local-files/"):
            rel = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
        else:
            rel = urllib.parse.unquote(parsed.path[len("/data/") :])
        path = _inside(files_root, rel)
    else:
        path = (
            _inside(base_dir, urllib.parse.unquote(ref))
            if not Path(ref).is_absolute()
            else Path(ref)
        )
    if not path.is_file():
        raise ValueError(f"{ref}: no file at {path}")
    return path.read_bytes(), path.name


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{rel} points outside {root}")
    return path


# ------------------------------------------------------------------------------- import


@dataclass
class ImportPlan:
    export: ExportFile
    payloads: dict[str, tuple[bytes, str]]  # external id -> (bytes, file name)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"external_id": t.external_id, "annotator": v.annotator, "class_name": v.class_name}
            for t in self.export.tasks
            for v in t.votes
        ]


def plan_import(
    raw: bytes,
    classes: Iterable[str],
    *,
    source: str = "export",
    base_dir: Path = Path("."),
    files_root: Path | None = None,
    config: LabelConfig | None = None,
    progress: Callable[[int], Any] | None = None,
    http: httpx.Client | None = None,
) -> ImportPlan:
    """Read the file and fetch every image; raises ``LabelStudioError`` on the first
    problem, before anything is stored."""
    export = read_export(raw, classes, source=source, config=config)
    own = http is None
    http = http or httpx.Client(timeout=60, follow_redirects=True)
    payloads = {}
    try:
        for task in export.tasks:
            try:
                payloads[task.external_id] = fetch_image(
                    task.image_ref, base_dir=base_dir, files_root=files_root, http=http
                )
            except (ValueError, OSError, httpx.HTTPError) as exc:
                raise LabelStudioError(source, task.line, f"task {task.task_id}: {exc}") from None
            if progress:
                progress(1)
    finally:
        if own:
            http.close()
    return ImportPlan(export, payloads)


def plan_zip(plan: ImportPlan, skip: set[str], split: str) -> tuple[bytes, int]:
    """The items not already in the project as one zip with its manifest."""
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["filename", "external_id", "split"])
    buf = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for task in plan.export.tasks:
            if task.external_id in skip:
                continue
            data, name = plan.payloads[task.external_id]
            member = f"{count:06d}-{_safe(name)}"
            zf.writestr(member, data)
            writer.writerow([member, task.external_id, split])
            count += 1
        zf.writestr("manifest.csv", manifest.getvalue())
    return buf.getvalue(), count


def _safe(name: str) -> str:
    cleaned = re.sub(r"[^\w.-]", "_", name)[-80:]
    return cleaned or "image"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------- export


def to_tasks(
    rows: list[dict[str, Any]],
    items: list[dict[str, Any]],
    image: Callable[[dict[str, Any]], str],
    *,
    config: LabelConfig | None = None,
    labelled_only: bool = False,
) -> list[dict[str, Any]]:
    """Label Studio tasks (its JSON export's shape) from annoloop's export rows and items."""
    config = config or LabelConfig()
    by_item = {r["item_id"]: r for r in rows}
    tasks = []
    annotation_id = 0
    for item in items:
        row = by_item.get(item["id"])
        if labelled_only and row is None:
            continue
        ext = item["external_id"]
        task_id = int(ext[3:]) if re.fullmatch(r"ls-\d+", ext) else item["id"]
        annotations = []
        for vote in (row or {}).get("votes", []):
            annotation_id += 1
            name = vote["annotator"] or "unknown"
            email = name if "@" in name else name + NO_EMAIL_DOMAIN
            annotations.append(
                {
                    "id": annotation_id,
                    "completed_by": {"email": email},
                    "result": [
                        {
                            "id": f"a{annotation_id}",
                            "type": "choices",
                            "value": {"choices": [vote["class"]]},
                            "from_name": config.choices_name,
                            "to_name": config.object_name,
                            "origin": "manual",
                        }
                    ],
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": vote["created_at"],
                    "updated_at": vote["created_at"],
                    "lead_time": None,
                    "task": task_id,
                }
            )
        tasks.append(
            {
                "id": task_id,
                "data": {
                    config.data_key: image(item),
                    "annoloop_external_id": ext,
                    "annoloop_split": item["split"],
                },
                "annotations": annotations,
                "predictions": [],
                "meta": {},
                "created_at": item["created_at"],
                "updated_at": item["created_at"],
            }
        )
    return tasks


def data_uri(media_type: str, payload: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(payload).decode()}"
