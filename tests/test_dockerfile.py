"""Static checks of the Dockerfile (no Docker engine here, so we read the text)."""

from __future__ import annotations

import fnmatch
import json
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """Return ``(INSTRUCTION, arguments)`` pairs, joining ``\\`` continuations, skipping comments."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((REPO / "Dockerfile").read_text(encoding="utf-8"))


def args_of(dockerfile, keyword: str) -> list[str]:
    return [args for kw, args in dockerfile if kw == keyword]


def exec_form(args: str) -> list[str]:
    """Parse the JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def copy_sources(dockerfile) -> list[str]:
    """Source paths of every COPY/ADD from the build context (not ``--from`` stages)."""
    sources = []
    for kw, args in dockerfile:
        if kw not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources.extend(paths[:-1])  # the last word is the destination
    return sources


def test_slim_python_311_base(dockerfile):
    assert args_of(dockerfile, "FROM")[0].split()[0] == "python:3.11-slim"


def test_runs_as_a_non_root_user(dockerfile):
    users = args_of(dockerfile, "USER")
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    keywords = [kw for kw, _ in dockerfile]
    assert max(i for i, kw in enumerate(keywords) if kw == "USER") < keywords.index("CMD")


def test_installs_the_package_without_pip_cache(dockerfile):
    assert any("pip install --no-cache-dir ." in run for run in args_of(dockerfile, "RUN"))


def test_exposes_the_bot_port(dockerfile):
    assert "3978" in " ".join(args_of(dockerfile, "EXPOSE")).split()


def test_healthcheck_probes_healthz_with_python(dockerfile):
    [healthcheck] = args_of(dockerfile, "HEALTHCHECK")
    _, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv[0] == "python"
    assert "urllib.request" in argv[-1]
    assert "http://127.0.0.1:3978/healthz" in argv[-1]
    compile(argv[-1], "<healthcheck>", "exec")


def test_cmd_serves_on_all_interfaces_with_data_volume(dockerfile):
    [cmd] = args_of(dockerfile, "CMD")
    assert exec_form(cmd) == [
        "mlops-bot", "serve", "--host", "0.0.0.0", "--port", "3978", "--data-dir", "/data",
    ]
    assert "/data" in args_of(dockerfile, "VOLUME")[0]
    assert any("chown" in run and "/data" in run for run in args_of(dockerfile, "RUN"))


def test_cmd_program_is_the_packages_console_script(dockerfile):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    [cmd] = args_of(dockerfile, "CMD")
    assert exec_form(cmd)[0] in pyproject["project"]["scripts"]


def test_every_copied_path_exists(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources
    missing = [s for s in sources if not (REPO / s).exists()]
    assert not missing, f"COPY sources missing from the repository: {missing}"


def test_copies_everything_pip_install_needs(dockerfile):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {s.rstrip("/") for s in copy_sources(dockerfile)}
    # A subpackage ("adapters.drift") comes with its top-level folder.
    packages = {name.split(".")[0] for name in pyproject["tool"]["setuptools"]["packages"]}
    needed = {"pyproject.toml", pyproject["project"]["readme"], *packages}
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Roughly Docker's rule: a path is excluded if it or a parent matches the last matching pattern."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        globs = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_copied_paths_in_the_context(dockerfile):
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ".git" in patterns
    ignored = [s for s in copy_sources(dockerfile) if dockerignore_excludes(patterns, s)]
    assert not ignored, f".dockerignore drops files the Dockerfile copies: {ignored}"


def test_dockerfile_mentions_that_a_public_host_needs_an_app_id():
    assert "MicrosoftAppId" in (REPO / "Dockerfile").read_text(encoding="utf-8")
