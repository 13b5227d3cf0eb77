"""``import yoloquant`` needs only numpy; every submodule imports without the optional extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = (
    "onnxruntime",
    "onnx",
    "torch",
    "ultralytics",
    "cv2",
    "pycocotools",
    "modelopt",
    "tensorrt",
    "brevitas",
    "openvino",
    "nncf",
    "ray",
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False)


def test_import_loads_no_heavy_library() -> None:
    proc = _run(
        f"""
        import sys, yoloquant
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, loaded
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_every_submodule_imports_without_extras_and_require_names_the_extra() -> None:
    # A finder that makes every heavy library unimportable, as in a base install.
    proc = _run(
        f"""
        import importlib, pkgutil, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError(f"blocked {{name}}")
        sys.meta_path.insert(0, Block())
        import yoloquant
        for mod in pkgutil.walk_packages(yoloquant.__path__, "yoloquant."):
            if mod.name != "yoloquant.__main__":
                importlib.import_module(mod.name)
        from yoloquant._optional import require
        from yoloquant.errors import MissingDependencyError
        try:
            require("onnxruntime")
        except MissingDependencyError as exc:
            assert 'pip install "yoloquant[onnxruntime]"' in str(exc), exc
        else:
            raise SystemExit("require did not raise")
        """
    )
    assert proc.returncode == 0, proc.stderr
