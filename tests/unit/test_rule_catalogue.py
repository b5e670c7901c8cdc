"""Every rule of the catalogue (app/fastpath/rules.py) is tagged where Python applies it,
where the hot path's SQL applies it, and on a test that runs it both ways; no tag names a
rule the catalogue lacks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.fastpath.functions import SQL_DIR
from app.fastpath.rules import RULES

ROOT = Path(__file__).resolve().parents[2]
# Where the ORM path's rules live (SQLite, and Postgres without the hot path).
PYTHON = [
    ROOT / "app" / p
    for p in (
        "auth/service.py",
        "projects/service.py",
        "queue/service.py",
        "queue/repository.py",
        "annotations/service.py",
    )
]
# Runs the same operations on SQLite, Postgres through the ORM and through the functions.
DIFFERENTIAL = ROOT / "tests" / "api" / "test_hot_path_differential.py"
TAG = re.compile(r"\bR-[A-Z]+(?:-[A-Z]+)*\b")


def _tags(paths: list[Path], comment: str) -> set[str]:
    """Rule ids in comments (``#`` or ``--``) of these files."""
    found: set[str] = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if comment in line:
                found |= set(TAG.findall(line.split(comment, 1)[1]))
    return found


def _marked(node: ast.AST) -> set[str]:
    """The ids of ``pytest.mark.rules(...)`` calls in a decorator list or expression
    (``*RULES``: every rule)."""
    out: set[str] = set()
    for call in ast.walk(node):
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "rules"
        ):
            continue
        for arg in call.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.add(arg.value)
            elif isinstance(arg, ast.Starred) and "RULES" in _names(arg):
                out |= set(RULES)
    return out


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _tested_both_ways() -> dict[str, list[str]]:
    """Rule id → tests that carry it and run on every path: in a module or with a decorator
    that applies ``BOTH_DB_MODES`` (on Postgres the committed mode is the hot path), or in
    the differential test."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_marks: set[str] = set()
        module_both = path == DIFFERENTIAL
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            ):
                module_marks |= _marked(node.value)
                module_both |= "BOTH_DB_MODES" in _names(node.value)
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            decorators = ast.Module(
                body=[ast.Expr(d) for d in node.decorator_list], type_ignores=[]
            )
            both = module_both or "BOTH_DB_MODES" in _names(decorators)
            for rule in (module_marks | _marked(decorators)) if both else set():
                out.setdefault(rule, []).append(f"{path.relative_to(ROOT)}::{node.name}")
    return out


def test_every_rule_is_tagged_in_python() -> None:
    assert sorted(set(RULES) - _tags(PYTHON, "#")) == []


def test_every_rule_is_tagged_in_the_sql() -> None:
    assert sorted(set(RULES) - _tags(sorted(SQL_DIR.glob("*.sql")), "--")) == []


def test_every_rule_has_a_test_that_runs_on_every_path() -> None:
    assert sorted(set(RULES) - set(_tested_both_ways())) == []


def test_no_tag_names_an_unknown_rule() -> None:
    tagged = _tags(PYTHON, "#") | _tags(sorted(SQL_DIR.glob("*.sql")), "--")
    tagged |= set(_tested_both_ways())
    assert sorted(tagged - set(RULES)) == []


def test_the_differential_test_counts_for_every_rule() -> None:
    tested = _tested_both_ways()
    differential = (
        f"{DIFFERENTIAL.relative_to(ROOT)}::test_the_three_paths_agree_on_random_operations"
    )
    assert all(differential in tested[rule] for rule in RULES)


def test_the_check_finds_an_untagged_rule(tmp_path: Path) -> None:
    # The scanner itself: a file without the tag does not count.
    plain = tmp_path / "x.py"
    plain.write_text("x = 'R-TOKEN'  # nothing here\n# R-SPEND\n")
    assert _tags([plain], "#") == {"R-SPEND"}
