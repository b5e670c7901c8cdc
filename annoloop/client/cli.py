"""The engineer's verbs of the ``annoloop`` command, on ``annoloop.client``:

    annoloop project create -f spec.yaml        annoloop project list | show P
    annoloop items upload -p P DIR|FILE.npz|FILE.zip|IMAGE
    annoloop labels import -p P FILE.csv|FILE.json|LABEL-STUDIO-EXPORT.json
    annoloop cycle start -p P [--wait [STATE]]  annoloop cycle wait|list|cancel
    annoloop export -p P [--format csv|json|jsonl|labelstudio] [-o FILE]
    annoloop status [-p P]

``--json`` prints one JSON document on stdout (progress stays on stderr). The server and the
token come from ``--url``/``--token``, ``ANNOLOOP_URL``/``ANNOLOOP_TOKEN`` or a config file
(``annoloop.client.config``). An API error prints its status and ``code`` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from annoloop.client._sync_client import Client
from annoloop.client.config import resolve
from annoloop.client.errors import AnnoloopError, ApiError
from annoloop.client.labelstudio import label_config

VERBS = ("project", "items", "labels", "cycle", "export", "status")
Handler = Callable[[Client, argparse.Namespace], Any]


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection and output")
    g.add_argument("--url", help="server, e.g. http://127.0.0.1:8000 (env ANNOLOOP_URL)")
    g.add_argument("--token", help="API token (env ANNOLOOP_TOKEN)")
    g.add_argument("--config", help="client config file (default ~/.config/annoloop/client.toml)")
    g.add_argument("--profile", help="a [profiles.NAME] of the config file")
    g.add_argument("--json", action="store_true", help="print JSON on stdout")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when it is a terminal)",
    )
    return common


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--project", required=True, help="project id or name")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="annoloop", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    project = verbs.add_parser("project", help="create, list, show projects").add_subparsers(
        dest="action", required=True
    )
    create = project.add_parser("create", parents=[common], help="create from a spec file")
    create.add_argument("-f", "--file", required=True, help="YAML or JSON: the project's fields")
    create.add_argument(
        "--member", action="append", default=[], help="annotator id or name to add (repeat)"
    )
    create.set_defaults(run=_project_create)
    project.add_parser("list", parents=[common]).set_defaults(run=_project_list)
    show = project.add_parser("show", parents=[common])
    show.add_argument("project", help="project id or name")
    show.set_defaults(run=_project_show)

    items = verbs.add_parser("items", help="upload items").add_subparsers(
        dest="action", required=True
    )
    up = items.add_parser(
        "upload", parents=[common], help="a folder of images, an .npz, a .zip or one image"
    )
    _project_arg(up)
    up.add_argument("source", help="DIR, FILE.npz, FILE.zip, FILE.png|jpg")
    up.add_argument("--split", default="pool", choices=["pool", "test"])
    up.add_argument("--part-items", type=int, default=500, help="items per request")
    up.set_defaults(run=_items_upload)

    labels = verbs.add_parser("labels", help="import labels").add_subparsers(
        dest="action", required=True
    )
    imp = labels.add_parser(
        "import", parents=[common], help="CSV/JSON rows, or a Label Studio JSON export"
    )
    _project_arg(imp)
    imp.add_argument(
        "file", help="external_id,annotator,class_index|class_name rows, or Label Studio tasks"
    )
    imp.add_argument(
        "--format",
        choices=["auto", "csv", "json", "labelstudio"],
        default="auto",
        help="auto: Label Studio for a JSON list of tasks with `data`, else by suffix",
    )
    lsg = imp.add_argument_group("Label Studio")
    lsg.add_argument(
        "--files-root",
        help="Label Studio's media folder (for /data/upload/...) or local-files root",
    )
    lsg.add_argument("--label-config", help="the project's labelling config XML, to check it")
    lsg.add_argument("--split", default="pool", choices=["pool", "test"])
    imp.set_defaults(run=_labels_import)

    cycle = verbs.add_parser("cycle", help="start, follow, list, cancel cycles").add_subparsers(
        dest="action", required=True
    )
    start = cycle.add_parser("start", parents=[common], help="train, score, queue")
    _project_arg(start)
    start.add_argument("--strategy")
    start.add_argument("--batch-size", type=int)
    start.add_argument("--seed", type=int)
    start.add_argument("--params", type=json.loads, help="strategy parameters as JSON")
    start.add_argument(
        "--wait", nargs="?", const="labeling", metavar="STATE", help="follow it (to labeling)"
    )
    start.add_argument("--timeout", type=float, help="seconds --wait may take")
    start.set_defaults(run=_cycle_start)
    wait = cycle.add_parser("wait", parents=[common], help="follow a cycle until a state")
    _project_arg(wait)
    wait.add_argument("cycle", type=int, help="cycle id")
    wait.add_argument("--state", default="labeling", help="state(s), comma-separated")
    wait.add_argument("--timeout", type=float)
    wait.set_defaults(run=_cycle_wait)
    ls = cycle.add_parser("list", parents=[common])
    _project_arg(ls)
    ls.set_defaults(run=_cycle_list)
    cancel = cycle.add_parser("cancel", parents=[common])
    _project_arg(cancel)
    cancel.add_argument("cycle", type=int)
    cancel.set_defaults(run=_cycle_cancel)

    export = verbs.add_parser("export", parents=[common], help="every vote and derived label")
    _project_arg(export)
    export.add_argument(
        "--format", choices=["csv", "json", "jsonl", "labelstudio"], default="jsonl"
    )
    export.add_argument("--aggregation", help="another aggregation model's labels")
    export.add_argument("-o", "--output", help="file to write (default stdout)")
    lso = export.add_argument_group("Label Studio")
    lso.add_argument(
        "--images",
        default="inline",
        help="inline (data URIs), url (this server's payload URLs) or a template "
        "like https://cdn/x/{external_id}",
    )
    lso.add_argument("--labelled-only", action="store_true", help="only items with votes")
    lso.add_argument("--label-config-out", help="write the matching labelling config here")
    export.set_defaults(run=_export)

    status = verbs.add_parser("status", parents=[common], help="server, account, a project")
    status.add_argument("-p", "--project", help="project id or name")
    status.set_defaults(run=_status)
    return parser


# ---------------------------------------------------------------------- verbs


def _project_id(c: Client, ref: str) -> int:
    return int(ref) if ref.isdigit() else c.find_project(ref)["id"]


def _read_spec(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SystemExit("annoloop: YAML specs need PyYAML (pip install pyyaml)") from None
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SystemExit(f"annoloop: {path}: {exc}") from exc
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"annoloop: {path}: line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(spec, dict):
        raise SystemExit(f"annoloop: {path}: a project spec is a mapping of fields")
    return spec


def _project_create(c: Client, a: argparse.Namespace) -> Any:
    spec = _read_spec(Path(a.file))
    members = [str(m) for m in spec.pop("members", [])] + a.member
    ids = _annotator_ids(c, members) if members else []  # unknown names fail before creating
    project = c.create_project(spec)
    for annotator_id in ids:
        c.add_member(project["id"], annotator_id)
    _say(a, f"created project {project['id']} {project['name']!r}")
    return project


def _annotator_ids(c: Client, refs: list[str]) -> list[int]:
    by_name = {p["name"]: p["id"] for p in c.list_annotators()}
    out = []
    for ref in refs:
        if ref.isdigit():
            out.append(int(ref))
        elif ref in by_name:
            out.append(by_name[ref])
        else:
            raise SystemExit(f"annoloop: no annotator named {ref!r}")
    return out


def _project_list(c: Client, a: argparse.Namespace) -> Any:
    projects = c.list_projects()
    for p in projects:
        _say(a, f"{p['id']:>5}  {p['kind']:<8} {p['name']}")
    return projects


def _project_show(c: Client, a: argparse.Namespace) -> Any:
    project = c.get_project(_project_id(c, a.project))
    _say(a, json.dumps(project, indent=2))
    return project


def _items_upload(c: Client, a: argparse.Namespace) -> Any:
    pid = _project_id(c, a.project)
    source = Path(a.source)
    if source.is_dir():
        done: Any = c.upload_folder(pid, source, split=a.split, part_items=a.part_items)
    elif source.suffix.lower() == ".npz":
        if a.split != "pool":
            raise SystemExit("annoloop: an .npz names its splits in its own `split` array")
        done = c.upload_npz(pid, source, part_items=a.part_items)
    elif source.suffix.lower() == ".zip":
        done = c.upload_bulk(pid, source, split=a.split, filename=source.name)
    elif source.is_file():
        item = c.upload_item(pid, source, split=a.split)
        done = {"created": 1, "first_id": item["id"], "last_id": item["id"], "splits": {}}
        done["splits"][a.split] = 1
    else:
        raise SystemExit(f"annoloop: {source} is neither a folder nor a file")
    _say(a, f"uploaded {done['created']} items to project {pid} ({_splits(done['splits'])})")
    return done


def _splits(splits: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())) or "none"


def _labels_import(c: Client, a: argparse.Namespace) -> Any:
    pid = _project_id(c, a.project)
    path = Path(a.file)
    if a.format == "labelstudio" or (a.format == "auto" and _looks_like_label_studio(path)):
        config = Path(a.label_config).read_text() if a.label_config else None
        done = c.import_labelstudio(
            pid, path, files_root=a.files_root, split=a.split, label_config=config
        )
        _say(
            a,
            f"imported {done['tasks']} Label Studio tasks: {done['items_created']} new items "
            f"({done['items_reused']} already there), {done['votes_created']} votes "
            f"({done['votes_already_there']} already there, {done['annotations_not_votes']} "
            "cancelled or empty annotations left out)",
        )
        return done
    csv = a.format == "csv" or (a.format == "auto" and path.suffix.lower() == ".csv")
    result = c.import_labels(pid, path.read_bytes(), csv=csv)
    _say(
        a,
        f"imported {result['created']} labels ({result['skipped_duplicates']} already there, "
        f"{result['annotators_created']} new annotators)",
    )
    return result


def _looks_like_label_studio(path: Path) -> bool:
    """A JSON list of objects with ``data`` (or one such object): Label Studio's tasks."""
    if path.suffix.lower() != ".json":
        return False
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return False  # let the reader say what is wrong with it
    first = value[0] if isinstance(value, list) and value else value
    return isinstance(first, dict) and "data" in first


def _cycle_start(c: Client, a: argparse.Namespace) -> Any:
    pid = _project_id(c, a.project)
    cycle = c.start_cycle(
        pid, strategy=a.strategy, params=a.params, seed=a.seed, batch_size=a.batch_size
    )
    _say(a, f"started cycle {cycle['number']} (id {cycle['id']}, {cycle['strategy']})")
    if a.wait:
        cycle = c.wait_for(cycle, a.wait.split(","), timeout=a.timeout)
        _say(a, _cycle_line(cycle))
    return cycle


def _cycle_wait(c: Client, a: argparse.Namespace) -> Any:
    cycle = c.get_cycle(_project_id(c, a.project), a.cycle)
    cycle = c.wait_for(cycle, a.state.split(","), timeout=a.timeout)
    _say(a, _cycle_line(cycle))
    return cycle


def _cycle_line(cycle: Any) -> str:
    test = (cycle.get("metrics") or {}).get("test") or {}
    acc = f", test accuracy {test['accuracy']:.3f}" if "accuracy" in test else ""
    return f"cycle {cycle['number']} (id {cycle['id']}) is {cycle['state']}{acc}"


def _cycle_list(c: Client, a: argparse.Namespace) -> Any:
    cycles = c.list_cycles(_project_id(c, a.project))
    for cycle in cycles:
        _say(a, _cycle_line(cycle))
    return cycles


def _cycle_cancel(c: Client, a: argparse.Namespace) -> Any:
    cycle = c.cancel_cycle(_project_id(c, a.project), a.cycle)
    _say(a, _cycle_line(cycle))
    return cycle


def _export(c: Client, a: argparse.Namespace) -> Any:
    pid = _project_id(c, a.project)
    if a.format == "labelstudio":
        tasks = c.export_labelstudio(pid, images=a.images, labelled_only=a.labelled_only)
        if a.label_config_out:
            Path(a.label_config_out).write_text(label_config(c.get_project(pid)["classes"]))
        data = json.dumps(tasks, indent=2).encode()
    else:
        data = c.export(pid, format=a.format, aggregation=a.aggregation)
    if a.output:
        Path(a.output).write_bytes(data)
        print(f"wrote {len(data)} bytes to {a.output}", file=sys.stderr)
        return {"project_id": pid, "format": a.format, "output": a.output, "bytes": len(data)}
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return None  # the export itself went to stdout


def _status(c: Client, a: argparse.Namespace) -> Any:
    health = c.health()
    me = c.me()
    out: dict[str, Any] = {"url": c.url, "health": health, "me": me}
    _say(
        a,
        f"{c.url}: {health['status']} (database {health['database']}, broker "
        f"{health['broker']}, blobs {health['blobs']}); signed in as {me['name']} ({me['role']})",
    )
    if a.project:
        pid = _project_id(c, a.project)
        project, report, cycles = c.get_project(pid), c.progress_report(pid), c.list_cycles(pid)
        out.update(project=project, progress=report, cycle=cycles[-1] if cycles else None)
        remaining = report["labels_remaining"]
        _say(
            a,
            f"project {pid} {project['name']!r}: {report['labels_spent']} labels spent"
            + (f", {remaining} left" if remaining is not None else "")
            + f"; queue {report['queue_depth']}, leases {report['leases_open']}",
        )
        _say(a, _cycle_line(cycles[-1]) if cycles else "no cycle yet")
    else:
        projects = c.list_projects()
        out["projects"] = projects
        _say(a, f"{len(projects)} project(s) visible")
    return out


# ---------------------------------------------------------------------- plumbing


def _say(a: argparse.Namespace, line: str) -> None:
    if not a.json:
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    target = resolve(args.url, args.token, args.config, args.profile)
    if target.token is None:
        print(
            'annoloop: no token: pass --token, set ANNOLOOP_TOKEN, or put token = "..." in '
            "the config file",
            file=sys.stderr,
        )
        return 2
    try:
        with Client(target.url, target.token, progress=args.progress) as client:
            result = args.run(client, args)
    except ApiError as exc:
        _fail(
            args,
            {"status": exc.status, "code": exc.code, "message": exc.message, "detail": exc.detail},
        )
        return 1
    except AnnoloopError as exc:
        _fail(args, {"code": type(exc).__name__, "message": str(exc)})
        return 1
    except httpx.TransportError as exc:
        _fail(args, {"code": "connection_failed", "message": f"{target.url}: {exc}"})
        return 1
    if args.json and result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def _fail(args: argparse.Namespace, error: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"error": error}, indent=2, default=str))
    status = f"{error['status']} " if "status" in error else ""
    print(f"annoloop: error: {status}{error['code']}: {error['message']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
