"""The project's set-up files agree with each other."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_dependencies_as_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {_name(r) for r in pyproject["project"]["dependencies"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    pip = {
        _name(d)
        for entry in env["dependencies"]
        if isinstance(entry, dict)
        for d in entry["pip"]
        if not d.startswith("-")
    }
    assert conda | pip == wanted


def test_every_dependency_has_a_lower_bound() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    deps = pyproject["project"]["dependencies"] + [
        d for extra in pyproject["project"]["optional-dependencies"].values() for d in extra
    ]
    assert all(">=" in d for d in deps), [d for d in deps if ">=" not in d]
