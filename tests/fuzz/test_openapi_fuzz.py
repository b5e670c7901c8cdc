"""Schemathesis against the app's own OpenAPI schema, in process (ASGI), as an engineer.

Each operation gets a bounded number of generated requests, positive (schema-valid) and
negative (schema-violating) ones, twice: once with generated path ids (mostly 404s) and once
with the ids of a real project, item, cycle and lease (so the handlers' bodies run). Checks:
no 5xx, every status is documented, and every body, content type and header matches the
schema. No shrinking, fixed seed: the test stays bounded and repeatable on a 2-core CI box.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from app.auth.service import create_annotator, issue_token
from app.core.config import Settings
from app.core.db import make_engine, make_session_factory
from app.core.enums import Role
from app.main import create_app
from tests.api.helpers import CLASSES, SMALL_CNN, open_batch, png_bytes
from tests.backends import BACKENDS, fresh_database

# ~10 s on 2 cores; 40/20 was run once while writing this, also clean.
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 5}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Revoking the fuzzer's token or removing it from its project (generated ids are often 1)
# would turn every later request into a 401/404: these run last.
LAST = {
    "DELETE /api/v1/tokens/{token_id}",
    "DELETE /api/v1/projects/{project_id}/members/{annotator_id}",
}


class _Sender:
    """Cycles the fuzzer starts are recorded, not sent: no broker, no worker."""

    def send(self, name: str, args: list[Any], queue: str) -> None:
        pass


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The same run on each test database: Postgres is what production answers from, and
    its driver refuses values (out-of-range integers, NUL bytes in text) that SQLite stores."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with fresh_database(str(request.param), tmp) as url:
        cfg = Settings(environment="test", data_dir=tmp / "data", database_url=url)
        engine = make_engine(url)
        factory: sessionmaker[Session] = make_session_factory(engine)
        with factory() as db:
            engineer = create_annotator(db, actor=None, name="fuzzer", role=Role.engineer)
            token, _ = issue_token(db, engineer, cfg.secret_key)
            helper = create_annotator(db, actor=None, name="helper", role=Role.annotator)
            db.commit()
            helper_id = helper.id
        app = create_app(cfg, engine=engine, task_sender=_Sender())
        yield {"app": app, "token": token, "factory": factory, "helper": helper_id}
        engine.dispose()


def _ids(world: dict[str, Any]) -> dict[str, int]:
    """A project with an item, a labelling cycle and a lease held by the fuzzer."""
    h = {"Authorization": f"Bearer {world['token']}"}
    with TestClient(world["app"]) as client:
        body = {"name": "fuzzed", "classes": CLASSES, "model_spec": SMALL_CNN}
        pid = client.post("/api/v1/projects", json=body, headers=h).json()["id"]
        item = client.post(
            f"/api/v1/projects/{pid}/items",
            files={"file": ("a.png", png_bytes(3), "image/png")},
            headers=h,
        ).json()["id"]
        cycle = open_batch(world["factory"], pid, [item], labels_wanted=5)
        lease = client.get(f"/api/v1/projects/{pid}/next", headers=h).json()["lease"]["id"]
        # Removing a member must not remove the fuzzer itself (its project would vanish).
        member = {"annotator_id": world["helper"]}
        client.post(f"/api/v1/projects/{pid}/members", json=member, headers=h)
    return {
        "project_id": pid,
        "item_id": item,
        "cycle_id": cycle,
        "lease_id": lease,
        "annotator_id": world["helper"],
        "token_id": 10_000,  # not the fuzzer's own token: revoking it would end the run
    }


@pytest.mark.slow  # about a minute per database on 2 loaded cores
def test_api_conforms_to_its_schema(world: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", world["app"])
    real_ids = _ids(world)
    headers = {"Authorization": f"Bearer {world['token']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.label in LAST)
    failures: list[str] = []
    for op in operations:
        names = {p.name for p in op.path_parameters}
        fixed = {k: v for k, v in real_ids.items() if k in names}
        for mode, examples in EXAMPLES.items():
            for path_parameters in ({}, fixed) if fixed else ({},):
                strategy = op.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters or None
                )

                @given(case=strategy)
                @settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: schemathesis.Case) -> None:
                    case.call_and_validate(headers=headers, checks=CHECKS)

                try:
                    run()
                except Unsatisfiable:
                    pass  # nothing to negate (no parameters, no body): positive mode covers it
                except Exception as exc:  # collect every operation's failure, then report
                    failures.append(f"{op.label} [{mode.value}]: {exc}"[:1500])
    assert failures == [], "\n\n".join(failures)
