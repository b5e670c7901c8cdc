"""requirements.lock pins everything pyproject.toml asks for, and every installer uses it
(issue 16, item 2): a dependency added to pyproject.toml without ``make lock`` fails here
instead of resolving to whatever is newest on the day an image is built."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, requires

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.deploy.compose import ROOT
from tests.deploy.runtime import runtime_python

LOCK = ROOT / "requirements.lock"
PROJECT = "annoloop"
# What the Dockerfile, the development machines' wheels and CI's venv are built for.
TORCH = {"torch": "2.14.1", "torchvision": "0.29.1"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not a pin: {line!r}"
        assert canonical(name) not in found, f"pinned twice: {name}"
        found[canonical(name)] = version.strip()
    return found


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [r for r in map(Requirement, lines) if canonical(r.name) != PROJECT]


def test_every_pyproject_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for req in pyproject_requirements():
        name = canonical(req.name)
        assert name in pinned, f"{req.name} is in pyproject.toml but not in the lock: make lock"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"the lock pins {req.name}=={pinned[name]}, outside pyproject.toml's {req}: make lock"
        )


def test_the_extras_pyproject_asks_of_its_dependencies_are_pinned_too() -> None:
    """``celery[redis]`` is only as locked as what its ``redis`` extra brings (``packaging``
    for kombu's Redis transport, issue 16, item 1)."""
    pinned = pins()
    env = {k: str(v) for k, v in default_environment().items()}
    checked = 0
    for req in pyproject_requirements():
        if not req.extras:
            continue
        try:
            declared = requires(req.name) or []
        except PackageNotFoundError:
            continue  # not installed here: its metadata is not at hand
        for line in declared:
            dep = Requirement(line)
            if dep.marker is None or "extra" not in str(dep.marker):
                continue
            if any(dep.marker.evaluate({**env, "extra": extra}) for extra in req.extras):
                assert canonical(dep.name) in pinned, f"{req} needs {dep.name}: make lock"
                checked += 1
    assert checked


def test_torch_is_pinned_to_the_release_the_image_and_the_machines_use() -> None:
    pinned = pins()
    for name, version in TORCH.items():
        assert pinned[name] == version
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_PINS := " + " ".join(f"{n}=={v}" for n, v in TORCH.items()) in makefile


def test_the_lock_is_a_constraints_file_with_no_machine_in_it() -> None:
    text = LOCK.read_text()
    assert "make lock" in text.splitlines()[4], "the header names the command that refreshes it"
    for line in text.splitlines():
        if line.startswith(("#", " ")) or not line:
            continue
        # pip refuses extras, URLs and editables in a constraints file: name==version only.
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), line
    # No path or URL of the machine that generated it (pip-compile writes the project's own
    # absolute file URL for the dev extra's self-reference, and its index options).
    assert "/" not in text
    assert "--" not in text


def test_make_ci_and_the_image_install_under_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if "pip install" in line]
    project_installs = [line for line in installs if line.endswith((" .", "'.[dev]'"))]
    assert len(project_installs) == 2, installs  # the dev venv and the bare runtime venv
    assert all("--constraint $(LOCK)" in line for line in project_installs), project_installs
    assert "LOCK := requirements.lock" in makefile
    assert "pyproject.toml $(LOCK)" in makefile  # a new lock re-installs the venvs
    assert "make test" in (ROOT / ".ci" / "run").read_text()

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile
    # Every pip install in the image is constrained by the lock, or installs no dependency.
    steps = [s for s in re.split(r"&&|\nRUN ", dockerfile) if "pip install" in s]
    assert steps
    for step in steps:
        assert "--constraint requirements.lock" in step or "--no-deps" in step, step
    # torch's version is the lock's, not a second pin in the Dockerfile.
    assert "TORCH_VERSION" not in dockerfile
    assert "grep -E '^(torch|torchvision)==' requirements.lock" in dockerfile


PROBE = """
import json
from importlib.metadata import distributions
print(json.dumps({d.metadata["Name"]: d.version for d in distributions()}))
"""


def test_the_venvs_the_tests_run_in_are_the_lock() -> None:
    """The dev venv (this interpreter) and the bare runtime venv hold the lock's versions,
    which is what `make install` / `make runtime` produce (a venv built before a lock change is
    rebuilt by make: its stamp depends on the lock)."""
    pinned = pins()
    for python in dict.fromkeys([sys.executable, runtime_python()]):
        done = subprocess.run(
            [python, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
        )
        installed = {canonical(k): v for k, v in json.loads(done.stdout).items()}
        drift = {
            name: (version, pinned[name])
            for name, version in installed.items()
            if name in pinned and version.split("+")[0] != pinned[name]
        }
        assert not drift, f"{python}: installed vs locked {drift}"
