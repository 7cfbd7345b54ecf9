"""Packaging: the serving side imports without torch; the CLI answers --help for every command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

_IMPORT_WITHOUT_TORCH = """
import importlib, importlib.abc, pkgutil, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    # Acts as if torch were not installed (a None in sys.modules would confuse scipy's checks).
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, BlockTorch())
import rohde.core, rohde.server
names = ["rohde.cli"]
for package in (rohde.core, rohde.server):
    names += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
for name in names:
    importlib.import_module(name)
import rohde.cli
rohde.cli.build_parser()
from rohde.server.app import create_app
from rohde.server.settings import load_settings
create_app(load_settings())
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
# Only the training side's command registrations (named *commands) load for the parser; they import no torch.
assert not any(m.startswith("rohde.training.") and not m.endswith("commands") for m in sys.modules)
print(len(names))
"""


def test_serving_and_core_import_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", _IMPORT_WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 8


def test_base_install_does_not_require_torch() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"])
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["train"])
    assert all(dep.startswith("onnxruntime-gpu") for dep in project["optional-dependencies"]["gpu"])
    assert "onnxruntime-gpu" not in " ".join(project["dependencies"])


def _subcommands(prefix: list[str]) -> list[list[str]]:
    import argparse

    from rohde.cli import build_parser

    parser = build_parser()
    for word in prefix:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                found += _subcommands([*prefix, name])
    return found


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from rohde.cli import build_parser

    commands = _subcommands([])
    assert len(commands) > 5
    for words in commands:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*words, "--help"])
        assert exited.value.code == 0, words
        assert "usage: rohde" in capsys.readouterr().out


def test_cli_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rohde.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("rohde "), result.stderr


_INSTALLED_FROM_CLONE_ROOT = """
import sys
from pathlib import Path
import rohde.core, rohde.server.app, rohde.training
from rohde.core.model_package import load_model_package
from rohde.server.settings import default_lsl_config, default_models_dir
target = Path(sys.argv[1]).resolve()
models, lsl = default_models_dir().resolve(), default_lsl_config().resolve()
assert models.is_relative_to(target) and lsl.is_relative_to(target), (models, lsl)
assert lsl.is_file(), lsl
assert Path(rohde.server.app.__file__).resolve().is_relative_to(target)
from rohde.server.dashboard_routes import DASHBOARD_ASSETS, DASHBOARD_DIR, DASHBOARD_PAGE
assert all((DASHBOARD_DIR / name).is_file() for name in [DASHBOARD_PAGE, *DASHBOARD_ASSETS]), DASHBOARD_DIR
package = load_model_package(models / "rohde-default")
print(package.metadata.name)
"""


def test_wheel_install_finds_its_models_and_lsl_config_from_the_clone_root(tmp_path: Path) -> None:
    # A non-editable install, run from the repository root where the source `rohde/` folder is on sys.path too:
    # the namespace merges both, and resources come from the installed package, not the source tree.
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO_ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    target = tmp_path / "installed"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                *map(str, wheels.glob("rohde-*.whl"))], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    # `-S` skips site-packages' .pth files (the editable install's import hook); dependencies come via PYTHONPATH.
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{target}:{site_packages}"}
    result = subprocess.run([sys.executable, "-S", "-c", _INSTALLED_FROM_CLONE_ROOT, str(target)], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "rohde-default"
