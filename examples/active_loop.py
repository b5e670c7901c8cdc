"""The whole active-learning loop through annoloop.client, against a running server.

    annoloop up                                   # or any annoloop deployment
    export ANNOLOOP_URL=http://127.0.0.1:8000 ANNOLOOP_TOKEN=$(annoloop create-admin)
    python examples/active_loop.py --cycles 3

An engineer's script: create a project, upload MNIST digits (the 2,000 shipped with annoloop
in app/demo/mnist_demo.npz, or any npz with `images` and `labels`), import a few seed labels,
subscribe a webhook (optional), then per cycle: start it, follow it to `labeling`, let an
"oracle" annotator answer the queued items from the known labels (a stand-in for people on
the annotator page), and read the test accuracy. Ends with the labels exported as CSV and in
Label Studio's format. Needs httpx and numpy only (the client does not import the server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from annoloop.client import Client

DEMO = Path(__file__).resolve().parent.parent / "app" / "demo" / "mnist_demo.npz"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("ANNOLOOP_URL", "http://127.0.0.1:8000"))
    p.add_argument("--token", default=os.environ.get("ANNOLOOP_TOKEN"))
    p.add_argument("--data", type=Path, default=DEMO, help="npz with images and labels")
    p.add_argument("--pool", type=int, default=1500)
    p.add_argument("--test", type=int, default=400)
    p.add_argument("--batch", type=int, default=40)
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--strategy", default="entropy")
    p.add_argument("--name", default=f"digits-{int(time.time())}")
    p.add_argument("--webhook", help="URL to receive the project's events")
    p.add_argument("--out", type=Path, default=Path("."), help="where the exports go")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.token:
        p.error("give --token or set ANNOLOOP_TOKEN (an engineer's or admin's)")

    with np.load(args.data) as data:
        images, truth = data["images"], data["labels"].astype(int)
    n = args.pool + args.test
    images, truth = images[:n], truth[:n]
    ids = [f"d{i}" for i in range(n)]

    progress = False if args.no_progress else None
    with Client(args.url, args.token, progress=progress) as c:
        # 1. The project, its data, a few seed labels (two per class).
        project = c.create_project(
            {
                "name": args.name,
                "classes": [str(d) for d in range(10)],
                "model_spec": {
                    "name": "small_cnn",
                    "input_shape": [1, 28, 28],
                    "hparams": {"epochs": args.epochs, "batch_size": 16},
                },
                "strategy": args.strategy,
                "batch_size": args.batch,
                "seed": 0,
            }
        )
        pid = project["id"]
        print(f"project {pid} {project['name']!r}")
        c.upload_arrays(
            pid,
            images=images,
            external_ids=ids,
            split=["pool"] * args.pool + ["test"] * args.test,
        )
        seeds = [int(i) for d in range(10) for i in np.flatnonzero(truth[: args.pool] == d)[:2]]
        test_rows = range(args.pool, n)
        rows = [
            {"external_id": ids[i], "annotator": "seed", "class_index": int(truth[i])}
            for i in seeds
        ]
        rows += [
            {"external_id": ids[i], "annotator": "truth", "class_index": int(truth[i])}
            for i in test_rows
        ]
        c.import_labels(pid, rows)
        if args.webhook:
            hook = c.create_webhook(
                pid, args.webhook, ["cycle.state_changed", "batch.labelled", "budget.spent"]
            )
            print(f"webhook {hook['id']}: keep its secret to verify deliveries: {hook['secret']}")

        # 2. An annotator; here an oracle that answers from the known labels.
        oracle = c.create_annotator(f"oracle-{pid}")
        c.add_member(pid, oracle["id"])
        by_id = dict(zip(ids, truth, strict=True))

        history = []
        for n_cycle in range(args.cycles):
            cycle = c.start_cycle(pid)
            cycle = c.wait_for(cycle, "labeling", timeout=1800)
            test = cycle["metrics"].get("test", {})
            labels, accuracy = cycle["metrics"].get("labels"), test.get("accuracy")
            history.append((labels, accuracy))
            print(f"cycle {cycle['number']}: {labels} labels, test accuracy {accuracy}")
            if n_cycle == args.cycles - 1:
                break
            with Client(args.url, oracle["token"], progress=False) as annotator:
                given = 0
                while True:
                    nxt = annotator.next_item(pid)
                    if nxt["status"] != "leased" or nxt["item"] is None:
                        break
                    item = nxt["item"]
                    annotator.submit_label(item["id"], int(by_id[item["external_id"]]))
                    given += 1
            print(f"  the oracle labelled {given} items")
            c.wait_for(cycle, "completed", timeout=300)  # closed once its batch is labelled

        # 3. What came of it.
        report = c.progress_report(pid)
        print(f"labels spent {report['labels_spent']}; per cycle (labels, accuracy): {history}")
        args.out.mkdir(parents=True, exist_ok=True)
        csv_path = args.out / f"{args.name}.csv"
        csv_path.write_bytes(c.export(pid, format="csv"))
        ls_path = args.out / f"{args.name}.labelstudio.json"
        ls_path.write_text(json.dumps(c.export_labelstudio(pid, labelled_only=True)))
        print(f"wrote {csv_path} and {ls_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
