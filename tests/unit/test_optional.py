"""Every optional import in src/ names an extra that exists, and the error says how to install it."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from yoloquant._optional import _EXTRAS, install_hint, require
from yoloquant.errors import MissingDependencyError

SRC = Path(__file__).resolve().parents[2] / "src" / "yoloquant"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_MODULE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def _extras() -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return set(project["optional-dependencies"])


def _require_args() -> tuple[dict[str, list[str]], list[str]]:
    """Literal ``require("...")`` keys (key -> files) and the files that call it with a non-literal."""
    literal: dict[str, list[str]] = {}
    dynamic: list[str] = []
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "require"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                literal.setdefault(arg.value, []).append(file.name)
            else:
                dynamic.append(file.name)
    return literal, dynamic


def _preflight_modules() -> set[str]:
    """The module names preflight's ``_needed_modules`` can hand to ``require(module)``."""
    tree = ast.parse((SRC / "preflight.py").read_text(encoding="utf-8"))
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_needed_modules")
    consts = (n.value for n in ast.walk(func) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return {c for c in consts if _MODULE_NAME.match(c)}


def test_every_require_key_maps_to_a_real_extra() -> None:
    literal, dynamic = _require_args()
    assert len(literal) > 20, "the scan found too few require() calls: is SRC right?"
    assert dynamic == ["preflight.py"], f"require() with a computed name outside preflight: {dynamic}"
    keys = set(literal) | _preflight_modules()
    unmapped = {k: literal.get(k, ["preflight.py"]) for k in keys if k.split(".")[0] not in _EXTRAS}
    assert not unmapped, f"require() keys missing from _optional._EXTRAS: {unmapped}"
    extras = _extras()
    bad = {top: extra for top, (_, extra) in _EXTRAS.items() if extra is not None and extra not in extras}
    assert not bad, f"_EXTRAS names extras that pyproject.toml does not define: {bad}"


def test_install_hints_in_src_name_real_extras() -> None:
    extras = _extras()
    named = {
        (file.name, extra)
        for file in SRC.rglob("*.py")
        for group in re.findall(r"yoloquant\[([\w,]+)\]", file.read_text(encoding="utf-8"))
        for extra in group.split(",")
    }
    assert named, "no install hint found: is the pattern right?"
    assert {(f, e) for f, e in named if e not in extras} == set()


def test_matplotlib_is_in_an_extra() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extra = _EXTRAS["matplotlib"][1]
    assert extra is not None
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"][extra])


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        ("onnxruntime.quantization", 'pip install "yoloquant[onnxruntime]"'),
        ("torch.nn.functional", 'pip install "yoloquant[ultralytics]"'),
        ("matplotlib.pyplot", 'pip install "yoloquant[plot]"'),
        ("yaml", "pip install --force-reinstall yoloquant"),
        ("no_such_pkg.sub", 'pip install "no_such_pkg"'),
    ],
)
def test_install_hint(module: str, hint: str) -> None:
    assert hint in install_hint(module)
    assert "yoloquant[all]" not in install_hint(module)


def test_missing_module_error_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r'brevitas\.nn_missing.*pip install "yoloquant\[brevitas\]"'):
        require("brevitas.nn_missing")
