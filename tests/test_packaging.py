"""pyproject.toml is the one source of the dependencies; environment.yml must install the same pins."""
import re
import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_pyproject_pins():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    minimum = re.search(r">=\s*([\d.]+)", project["requires-python"]).group(1)
    assert tuple(map(int, python.split("=")[-1].split("."))) >= tuple(map(int, minimum.split(".")))
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    extras = set()
    for line in pip:
        m = re.fullmatch(r"-e \.\[([\w,]+)\]", line)
        assert m, f"environment.yml pip line {line!r} must install the project itself, not its own pins"
        extras |= set(m.group(1).split(","))
    assert extras <= set(project["optional-dependencies"])
    assert "pinned" in extras and "dev" in extras
    pins = project["optional-dependencies"]["pinned"]
    assert all("==" in pin for pin in pins)
    # every pinned package is a dependency of the project
    names = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    assert {re.split(r"==", p)[0].lower() for p in pins} <= names


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in readme[:15] if line.strip().startswith("bash scripts/")]
    assert len(commands) == 2, commands
    test_command = next(c for c in commands if "test" in c)
    assert test_command in (REPO_ROOT / ".ci" / "run").read_text()
