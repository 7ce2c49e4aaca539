"""Every optional dependency the CLI and the examples need belongs to an extra of pyproject.toml, and a missing
one stops the command with the pip line that installs it."""

import importlib.util
import sys
from pathlib import Path

import pytest
import tomllib

from fastercache_kernels import _extras
from fastercache_kernels.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
EXTRA_DEPS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _pip_names(extra: str) -> set[str]:
    return {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in EXTRA_DEPS[extra]}


@pytest.mark.parametrize("extra", sorted(_extras.EXTRAS))
def test_each_checked_module_is_in_its_extra(extra):
    wanted = {_extras.PIP_NAMES.get(m, m) for m in _extras.EXTRAS[extra]}
    assert wanted <= _pip_names(extra), f"[{extra}] lacks {wanted - _pip_names(extra)}"
    assert wanted <= _pip_names("test")


def _hide(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


@pytest.mark.parametrize("argv, module, extra", [
    (["demo", "--clips", "1"], "tqdm", "demo"),
    (["demo"], "skimage", "demo"),
    (["quality", "--clips", "1"], "skimage", "demo"),
    (["bench", "--numel", "1000", "--plot", "never.png"], "matplotlib", "plot"),
])
def test_cli_names_the_extra(monkeypatch, tmp_path, argv, module, extra):
    _hide(monkeypatch, module)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value)
    assert f'pip install "fastercache_kernels[{extra}]"' in message
    assert _extras.PIP_NAMES.get(module, module) in message
    assert not (tmp_path / "never.png").exists()


def test_train_names_the_extra(monkeypatch, tmp_path):
    from fastercache_kernels import train

    _hide(monkeypatch, "tqdm")
    with pytest.raises(SystemExit, match=r'pip install "fastercache_kernels\[train\]"'):
        train.main(["--model", "latte", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["cogvideox_example.py", "latte_example.py"])
def test_examples_name_the_extra(monkeypatch, tmp_path, script):
    monkeypatch.syspath_prepend(str(ROOT / "python"))
    spec = importlib.util.spec_from_file_location(f"_example_{script[:-3]}", ROOT / "python" / script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    _hide(monkeypatch, "diffusers")
    with pytest.raises(SystemExit, match=r'needs diffusers.*pip install "fastercache_kernels\[examples\]"'):
        example.main(["--out", str(tmp_path)])


def test_require_passes_when_installed():
    _extras.require("plot", "a chart")  # matplotlib is in the test extra
