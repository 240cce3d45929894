"""The lock files `make lock` writes agree with pyproject.toml, and `make venv`/`make dev` install from them.

requirements-build.lock pins pip and the build backend, requirements.lock the production set (what the
VPS runs), requirements-dev.lock that set plus the dev tools. A dependency changed in pyproject.toml
without `make lock` fails here: every dependency must be pinned, every pin within its bounds.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PRODUCTION = PYPROJECT["project"]["dependencies"]
DEV = PRODUCTION + PYPROJECT["project"]["optional-dependencies"]["dev"]
BUILD = PYPROJECT["build-system"]["requires"]


def read_lock(text: str) -> dict[str, tuple[Requirement, int]]:
    """name → (the pinned requirement with its marker, how many hashes it carries)."""
    pins: dict[str, tuple[Requirement, int]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        if not line.strip():
            continue
        spec, *hashes = line.split(" --hash=")
        requirement = Requirement(spec.strip())
        pins[canonicalize_name(requirement.name)] = (requirement, len(hashes))
    return pins


def pinned_version(requirement: Requirement) -> str:
    [exact] = [s for s in requirement.specifier if s.operator == "=="]
    return exact.version


def disagreements(wanted: list[str], lock: dict[str, tuple[Requirement, int]]) -> list[str]:
    """What `make lock` would have to fix: a dependency not pinned, or pinned outside its bounds."""
    problems = []
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in lock:
            problems.append(f"{requirement.name}: in pyproject.toml, not in the lock")
            continue
        version = pinned_version(lock[name][0])
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}: locked {version}, pyproject.toml wants {requirement.specifier}")
    return problems


LOCKS = {
    "requirements-build.lock": BUILD,
    "requirements.lock": PRODUCTION,
    "requirements-dev.lock": DEV,
}


@pytest.mark.parametrize(("lock_name", "wanted"), LOCKS.items(), ids=list(LOCKS))
def test_every_dependency_is_pinned_within_its_bounds(lock_name: str, wanted: list[str]) -> None:
    lock = read_lock((ROOT / lock_name).read_text(encoding="utf-8"))
    assert disagreements(wanted, lock) == [], "pyproject.toml changed without `make lock`"
    unhashed = [name for name, (_, hashes) in lock.items() if hashes == 0]
    assert lock and unhashed == [], "`pip install --require-hashes` refuses a pin without a hash"


def test_a_bound_the_lock_breaks_or_a_dependency_it_lacks_is_reported() -> None:
    lock = read_lock((ROOT / "requirements.lock").read_text(encoding="utf-8"))
    typer = pinned_version(lock["typer"][0])
    assert disagreements([f"typer>{typer}", "cronsim>=2.8", "Requests>=2.32"], lock) == [
        f"typer: locked {typer}, pyproject.toml wants >{typer}",
        "cronsim: in pyproject.toml, not in the lock",
    ]


def test_the_dev_lock_keeps_the_production_pins_and_production_has_no_dev_tool() -> None:
    production = read_lock((ROOT / "requirements.lock").read_text(encoding="utf-8"))
    dev = read_lock((ROOT / "requirements-dev.lock").read_text(encoding="utf-8"))
    changed = {name: (str(pin), str(dev.get(name, ("missing",))[0])) for name, (pin, _) in production.items()}
    assert {name: pair for name, pair in changed.items() if pair[0] != pair[1]} == {}
    dev_only = {canonicalize_name(Requirement(text).name) for text in DEV} - {
        canonicalize_name(Requirement(text).name) for text in PRODUCTION
    }
    assert {"pytest", "ruff", "mypy"} <= dev_only
    assert dev_only & set(production) == set()


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
@pytest.mark.parametrize(
    ("changed", "target", "expected"),
    [
        ("pyproject.toml", ".venv/.installed", "-m venv --clear .venv"),
        ("requirements-build.lock", ".venv/.installed", "--require-hashes --no-deps -r requirements-build.lock"),
        ("requirements.lock", ".venv/.installed", "--require-hashes -r requirements.lock"),
        ("requirements-dev.lock", ".venv/.dev-installed", "--require-hashes -r requirements-dev.lock"),
    ],
)
def test_a_changed_lock_or_pyproject_rebuilds_the_venv(changed: str, target: str, expected: str) -> None:
    if subprocess.run(["make", "-q", target], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip(f"{target} is not up to date here, so a change cannot be told from that (run `make dev`)")
    plan = subprocess.run(["make", "-n", "-W", changed, target], cwd=ROOT, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert expected in plan.stdout


def test_the_package_metadata_builds_without_a_warning(tmp_path: Path) -> None:
    """setuptools warned three times on every install while `license` was a TOML table."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "lib", tmp_path / "lib", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    build = "import setuptools.build_meta as backend; print(backend.prepare_metadata_for_build_editable('meta'))"
    (tmp_path / "meta").mkdir()
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", build], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr[-3000:]
    metadata = (tmp_path / "meta" / result.stdout.split()[-1] / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: MIT" in metadata


def test_the_tests_run_on_the_pinned_dev_set() -> None:
    """What `make test` (and so CI) runs on is what the locks pin: each pinned package at its version."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"not running in this checkout's .venv ({sys.prefix}): `make test` does")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wanted = read_lock((ROOT / "requirements-dev.lock").read_text(encoding="utf-8"))
    wanted |= read_lock((ROOT / "requirements-build.lock").read_text(encoding="utf-8"))
    off = {
        name: (pinned_version(requirement), installed.get(name, "missing"))
        for name, (requirement, _) in wanted.items()
        if (requirement.marker is None or requirement.marker.evaluate())
        and installed.get(name) != pinned_version(requirement)
    }
    assert off == {}, "pinned → installed; run `make dev`"
