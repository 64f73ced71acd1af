"""Static checks of the Dockerfile (no Docker engine here, so we read the text)."""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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


def stages(dockerfile) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (a stage starts at FROM)."""
    result: list[list[tuple[str, str]]] = []
    for kw, args in dockerfile:
        if kw == "FROM":
            result.append([])
        assert result, "an instruction before the first FROM"
        result[-1].append((kw, args))
    return result


@pytest.fixture(scope="module")
def runtime(dockerfile) -> list[tuple[str, str]]:
    """The final stage: what the image that runs is made of."""
    return stages(dockerfile)[-1]


def env_of(stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for args in args_of(stage, "ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            values[name] = value
    return values


def test_slim_python_311_base(dockerfile):
    assert {args.split()[0] for args in args_of(dockerfile, "FROM")} == {"python:3.11-slim"}


def test_runs_as_a_non_root_user(runtime):
    users = args_of(runtime, "USER")
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    keywords = [kw for kw, _ in runtime]
    assert max(i for i, kw in enumerate(keywords) if kw == "USER") < keywords.index("CMD")


def test_installs_the_package_without_pip_cache(dockerfile):
    assert any("pip install --no-cache-dir ." in run for run in args_of(dockerfile, "RUN"))


def test_the_source_tree_does_not_reach_the_runtime_image(dockerfile, runtime):
    """Multi-stage: the package is installed (not editable) in a build stage; the image gets the venv only."""
    assert len(stages(dockerfile)) >= 2
    build_stage = args_of(dockerfile, "FROM")[0].split()
    assert [w.lower() for w in build_stage[1:]] == ["as", "build"]
    assert not any(" -e " in f" {run} " or "--editable" in run for run in args_of(dockerfile, "RUN"))
    runtime_copies = [shlex.split(args) for kw, args in runtime if kw in ("COPY", "ADD")]
    assert runtime_copies == [["--from=build", "/opt/mlops-bot", "/opt/mlops-bot"]]
    assert "/app" not in " ".join(args for _, args in runtime)
    assert env_of(runtime)["PATH"].startswith("/opt/mlops-bot/bin:")


def test_exposes_the_bot_port(runtime):
    assert "3978" in " ".join(args_of(runtime, "EXPOSE")).split()
    assert env_of(runtime)["MLOPSBOT_PORT"] == "3978"


def healthcheck_script(runtime) -> str:
    [healthcheck] = args_of(runtime, "HEALTHCHECK")
    _, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")
    return argv[2]


def test_healthcheck_probes_healthz_with_python_on_mlopsbot_port(runtime):
    script = healthcheck_script(runtime)
    assert "urllib.request" in script and "/healthz" in script
    assert "3978" not in script.replace("or 3978", "")        # only as the default when the variable is unset
    assert "MLOPSBOT_PORT" in script


class Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def run_healthcheck(script: str, port: int | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MLOPSBOT_PORT"}
    if port is not None:
        env["MLOPSBOT_PORT"] = str(port)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=20).returncode


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_follows_mlopsbot_port(runtime, status, healthy):
    """The image's own health check command, run against a server on another port than 3978."""
    handler = type("Handler", (Healthz,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert port != 3978
        assert (run_healthcheck(healthcheck_script(runtime), port) == 0) is healthy
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens(runtime):
    with socket.socket() as probe:                     # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_healthcheck(healthcheck_script(runtime), port) == 1


def test_cmd_serves_on_all_interfaces_with_data_volume(runtime):
    [cmd] = args_of(runtime, "CMD")
    assert exec_form(cmd) == ["mlops-bot", "serve"]          # no --port: MLOPSBOT_PORT decides
    env = env_of(runtime)
    assert (env["MLOPSBOT_HOST"], env["MLOPSBOT_DATA_DIR"]) == ("0.0.0.0", "/data")
    assert "/data" in args_of(runtime, "VOLUME")[0]
    assert any("chown" in run and "/data" in run for run in args_of(runtime, "RUN"))


def test_the_image_environment_is_what_the_settings_read(runtime):
    from bot.settings import environment_names

    names = environment_names()
    env = env_of(runtime)
    for name in ("host", "port", "data_dir"):
        assert names[name][0] in env, name


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
    # The packages are found by pattern ("adapters*" brings adapters.storage): their top-level folders.
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
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


def test_readme_says_podman_needs_the_docker_format_for_the_healthcheck():
    readme = (REPO / "docs" / "operating.md").read_text(encoding="utf-8")     # the README's deployment page
    assert "podman build --format docker" in readme
    assert "HEALTHCHECK" in readme
