"""The hashed locks in requirements/ cover pyproject.toml, agree with each other and name PyPI only."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Final

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT: Final = Path(__file__).resolve().parents[1]
PIN: Final = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^ ;\\]+)", re.MULTILINE)


def pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
    return {canonicalize_name(m[1]): m[2] for m in PIN.finditer(text)}


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]
    return {canonicalize_name(Requirement(line).name) for line in lines}


def test_every_declared_dependency_is_locked() -> None:
    """Fails when pyproject.toml changed without scripts/lock.sh being run."""
    assert declared() - set(pins("runtime.txt")) == set()
    assert declared("test") - set(pins("test.txt")) == set()


def test_runtime_lock_is_the_tested_versions() -> None:
    runtime, tested = pins("runtime.txt"), pins("test.txt")
    assert runtime and {name: tested.get(name) for name in runtime} == runtime


def test_every_pin_has_hashes_and_nothing_comes_from_a_local_source() -> None:
    for name in ("runtime.txt", "test.txt", "tools.txt"):
        text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip())
        assert entries and all("--hash=sha256:" in entry for entry in entries), name
        assert not re.search(r"file:|/opt/|--find-links|--index-url|--extra-index-url|^-e ", text,
                             flags=re.MULTILINE), name
    tools = pins("tools.txt")
    assert {"uv", "pip", "setuptools"} <= set(tools)
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert all(Requirement(r).specifier.contains(tools[canonicalize_name(Requirement(r).name)])
               for r in build)
