"""The warning for a Python that keeps no .pyc files for torch's compiler stack (a real module file, compiled with
py_compile; no torch needed)."""

from __future__ import annotations

import logging
import py_compile
from pathlib import Path

import pytest

from yoloquant.backends.torch.bytecode import has_bytecode, warn_if_compiled_from_source


def test_a_module_without_its_pyc_warns_once_with_the_fix_and_one_with_it_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "torch" / "_dynamo" / "__init__.py"
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    assert not has_bytecode(source)
    with caplog.at_level(logging.WARNING, logger="yoloquant.backends.torch.bytecode"):
        assert warn_if_compiled_from_source(source)
        assert warn_if_compiled_from_source(source)  # the answer is kept: no second warning
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(source) in message and f"compileall -q {tmp_path / 'torch'}" in message
    assert "PYTHONPYCACHEPREFIX" in message
    py_compile.compile(str(source), doraise=True)  # writes where importlib looks for it
    assert has_bytecode(source)
    warn_if_compiled_from_source.cache_clear()
    assert not warn_if_compiled_from_source(source)
