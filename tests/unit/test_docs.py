"""Docs that name code: the names must exist and behave as the docs say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from yoloquant import ConfigError, QuantPipeline

ROOT = Path(__file__).resolve().parents[2]


def _protocol_table() -> list[str]:
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text.split("## Seams: the Protocols", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_protocol_table_names_real_protocols_and_classes() -> None:
    rows = _protocol_table()
    assert len(rows) == 5
    src = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "yoloquant").rglob("*.py"))
    protocols = (ROOT / "src" / "yoloquant" / "protocols.py").read_text(encoding="utf-8")
    listed: set[str] = set()
    for row in rows:
        protocol, _, shipped = (cell.strip() for cell in row.strip("|").split("|"))
        assert f"class {protocol.strip('`')}(Protocol)" in protocols, row
        for name in re.findall(r"`(?:[\w.]+\.)?([A-Z]\w+)`", shipped):
            assert re.search(rf"^class {name}\b", src, re.MULTILINE), f"{name} in the Protocol table is no class"
            listed.add(name)
    shipped_classes = set(re.findall(r"^class (\w+(?:Quantizer|EngineBuilder|Engine|Exporter))\b", src, re.MULTILINE))
    assert shipped_classes - {"Quantizer", "EngineBuilder", "Engine", "Exporter"} <= listed


def test_the_tensorrt_backend_the_docs_warn_about_is_refused(yolov8n_pt: Path) -> None:
    """README / docs/brevitas.md say the pipeline has no backend="tensorrt": it must raise, not run."""
    with pytest.raises(ConfigError, match="TensorRT backend does not run here"):
        QuantPipeline.from_ultralytics(yolov8n_pt).quantize("w8a8", backend="tensorrt")
    for doc in ("README.md", "docs/brevitas.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert 'Symmetric W8A8 (`backend="tensorrt"`)' not in text and 'what `backend="tensorrt"`' not in text


# --- Examples in README.md and docs/*.md use the one vocabulary (#13) and work ---------------------------------
#
# Every ```python block must parse and every ```bash / ```sh `yoloquant ...` line must parse with the real CLI
# parser. A block that is deliberately partial is skipped only when the line before its opening fence is
# NOT_CODE ("<!-- not-code -->"); prefer making the block whole.

NOT_CODE = "<!-- not-code -->"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

PIPELINE_METHODS = (
    "from_ultralytics",
    "from_onnx",
    "calibrate",
    "quantize",
    "evaluate",
    "benchmark",
    "analyze_sensitivity",
    "run",
)
_PIPELINES = ("pipeline", "pipeline-class")
_PIPELINE_ONLY = set(PIPELINE_METHODS) - {"quantize", "run"}  # names no other object in the docs has


def _blocks(*languages: str) -> list[tuple[str, int, str]]:
    """(doc, line, code) of every fenced block in one of ``languages`` not marked NOT_CODE."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            if match.group(1) not in languages:
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            if before == NOT_CODE:
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append((doc.relative_to(ROOT).as_posix(), line, match.group(2)))
    return found


def _entry_points() -> tuple[dict[str, type], dict[str, object]]:
    """Classes (configs and their presets, quantizers) and functions a docs example may call by name."""
    from yoloquant import BenchConfig, EvalConfig, ExportConfig, FloatScope
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.decide import BudgetedQuantizer, analyze_sensitivity, search_budget
    from yoloquant.decide.sensitivity import SensitivityConfig
    from yoloquant.quantize import make_quantizer
    from yoloquant.quantize.brevitas import BrevitasQuantizer, QatConfig
    from yoloquant.quantize.brevitas.config import BrevitasConfig
    from yoloquant.quantize.fp16 import Fp16Config
    from yoloquant.quantize.modelopt import ModelOptConfig
    from yoloquant.quantize.nncf import NncfConfig
    from yoloquant.quantize.ort_static import OrtQuantConfig

    classes = (
        OrtQuantConfig,
        ModelOptConfig,
        NncfConfig,
        BrevitasConfig,
        Fp16Config,
        FloatScope,
        EvalConfig,
        ExportConfig,
        BenchConfig,
        SensitivityConfig,
        QatConfig,
        BrevitasQuantizer,
        BudgetedQuantizer,
        ImageCalibrator,
    )
    # called by bare name only: `.analyze_sensitivity(...)` on a pipeline is QuantPipeline's
    functions = {f.__name__: f for f in (make_quantizer, analyze_sensitivity, search_budget)}
    return {c.__name__: c for c in classes}, functions


def _parameters(fn: object) -> set[str]:
    import inspect

    target = inspect.unwrap(fn.__init__ if isinstance(fn, type) else fn)  # type: ignore[misc]
    params = inspect.signature(target).parameters
    return {name for name, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self"}


class _Checker:
    """Walks one python block: what each call's receiver is, and whether its keywords are real parameters."""

    def __init__(self, where: str) -> None:
        from yoloquant.decide.sweep import Sweep

        self.where = where
        self.names: dict[str, str] = {}  # variable -> "pipeline" | "sweep"
        self.entry, self.functions = _entry_points()
        self.pipeline = {m: _parameters(getattr(QuantPipeline, m)) for m in PIPELINE_METHODS}
        self.sweep = {"__init__": _parameters(Sweep), "grid": _parameters(Sweep.grid), "run": _parameters(Sweep.run)}
        self.problems: list[str] = []

    def kind(self, node: object) -> str | None:
        import ast

        if isinstance(node, ast.Name):
            return {"QuantPipeline": "pipeline-class"}.get(node.id, self.names.get(node.id))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "Sweep":
                return "sweep"
            if isinstance(func, ast.Attribute):
                inner = self.kind(func.value)
                if inner in ("pipeline", "pipeline-class") and func.attr in set(PIPELINE_METHODS) - {"run"}:
                    return "pipeline"
                if inner == "sweep" and func.attr == "grid":
                    return "sweep"
        return None

    def check_call(self, node: object) -> None:
        import ast

        assert isinstance(node, ast.Call)
        func = node.func
        params: set[str] | None = None
        what = ""
        if isinstance(func, ast.Name) and func.id == "Sweep":
            params, what = self.sweep["__init__"], "Sweep"
        elif isinstance(func, ast.Name) and func.id in {**self.entry, **self.functions}:
            params, what = _parameters({**self.entry, **self.functions}[func.id]), func.id
        elif isinstance(func, ast.Attribute):
            receiver = self.kind(func.value)
            owner = func.value.id if isinstance(func.value, ast.Name) else getattr(func.value, "attr", None)
            if func.attr in self.entry:  # yoloquant.quantize.float_scope.FloatScope(...)
                params, what = _parameters(self.entry[func.attr]), func.attr
            elif owner in self.entry:  # a preset: BrevitasConfig.w4a8(**changes)
                preset = getattr(self.entry[owner], func.attr, None)
                if (owner, func.attr) == ("BrevitasConfig", "preset"):  # kept only to name its replacement
                    self.problems.append(f"{self.where}: BrevitasConfig.preset(name) is now BrevitasConfig.<name>()")
                    return
                if preset is None:
                    self.problems.append(f"{self.where}: {owner}.{func.attr} does not exist")
                    return
                params, what = _parameters(self.entry[owner]), f"{owner}.{func.attr}"
            elif receiver == "sweep" and func.attr in ("grid", "run"):
                params, what = self.sweep[func.attr], f"Sweep.{func.attr}"
            elif func.attr in _PIPELINE_ONLY or (
                receiver in ("pipeline", "pipeline-class") and func.attr in PIPELINE_METHODS
            ):
                params, what = self.pipeline[func.attr], f"QuantPipeline.{func.attr}"
        for kw in node.keywords:
            if kw.arg is None:
                continue
            if params is not None and kw.arg not in params:
                self.problems.append(f"{self.where}: {what}({kw.arg}=) is no parameter of it")
            self.check_value(kw)

    def check_value(self, kw: object) -> None:
        import ast

        from yoloquant import Backend
        from yoloquant.quantize.float_scope import PRESETS
        from yoloquant.vocabulary import RENAMED

        assert isinstance(kw, ast.keyword)
        if kw.arg in RENAMED:
            self.problems.append(f"{self.where}: {kw.arg}= is now {RENAMED[kw.arg]}=")
        values = kw.value.elts if isinstance(kw.value, ast.Tuple | ast.List) else [kw.value]
        for value in values:
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                continue
            if kw.arg == "backend" and value.value not in {b.value for b in Backend}:
                self.problems.append(f"{self.where}: backend={value.value!r} is no Backend value")
            if kw.arg == "keep_float" and value.value not in PRESETS:
                self.problems.append(f"{self.where}: keep_float={value.value!r} is no preset ({', '.join(PRESETS)})")

    def visit(self, tree: object) -> None:
        import ast
        import importlib

        from yoloquant.vocabulary import RENAMED

        assert isinstance(tree, ast.AST)
        for node in ast.walk(tree):  # assignments first, so a name's kind is known wherever it is used
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                kind = self.kind(node.value)
                if kind:
                    self.names[node.targets[0].id] = "pipeline" if kind == "pipeline-class" else kind
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                self.check_call(node)
            elif isinstance(node, ast.Attribute) and node.attr in RENAMED:
                self.problems.append(f"{self.where}: .{node.attr} is now .{RENAMED[node.attr]}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yoloquant"):
                try:
                    module = importlib.import_module(node.module or "")
                except ImportError as exc:
                    self.problems.append(f"{self.where}: from {node.module} import ...: {exc}")
                    continue
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        self.problems.append(f"{self.where}: {node.module} has no {alias.name}")


def _python_problems(code: str, where: str) -> list[str]:
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [f"{where}: does not parse ({exc.msg}, block line {exc.lineno}); fix it or mark it {NOT_CODE}"]
    checker = _Checker(where)
    checker.visit(tree)
    return checker.problems


def _cli_lines(code: str) -> list[str]:
    """The ``yoloquant ...`` command lines of a shell block: continuations joined, [optional] groups dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = []
    for raw in joined.splitlines():
        line = raw.strip().removeprefix("$ ")
        if line.startswith("yoloquant "):
            lines.append(re.sub(r"\[[^\]]*\]", " ", line))
    return lines


def _cli_problem(line: str) -> str | None:
    import contextlib
    import io
    import shlex

    from yoloquant.cli import _parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            _parser().parse_args(shlex.split(line, comments=True)[1:])
    except SystemExit:
        return f"{stderr.getvalue().strip().splitlines()[-1:]}"
    except ConfigError as exc:
        return str(exc)
    return None


def test_docs_have_examples_to_check() -> None:
    assert len(_blocks("python")) >= 10
    assert sum(len(_cli_lines(code)) for _, _, code in _blocks("bash", "sh")) >= 5


def test_docs_python_examples_parse_and_call_real_parameters_with_the_new_names() -> None:
    problems = [p for doc, line, code in _blocks("python") for p in _python_problems(code, f"{doc}:{line}")]
    assert not problems, "\n".join(problems)


def test_docs_cli_examples_parse_with_the_real_parser() -> None:
    problems = []
    for doc, line, code in _blocks("bash", "sh"):
        for command in _cli_lines(code):
            problem = _cli_problem(command)
            if problem:
                problems.append(f"{doc}:{line}: {command!r}: {problem}")
    assert not problems, "\n".join(problems)


def test_docs_name_no_old_flag() -> None:
    from yoloquant.vocabulary import RENAMED_FLAGS

    problems = []
    for doc in DOCS:
        if doc.name == "concepts.md":
            continue
        text = doc.read_text(encoding="utf-8")
        for old, new in RENAMED_FLAGS.items():
            for match in re.finditer(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{doc.relative_to(ROOT)}:{line}: {old} is now {new}")
    assert not problems, "\n".join(problems)


def test_the_check_catches_old_spellings() -> None:
    """The checks above fail on an old keyword, value, attribute, import and flag, not only on typos."""
    assert _python_problems('QuantPipeline.from_onnx("m.onnx").quantize("int8", keep="head")', "x")
    assert _python_problems('p = QuantPipeline.from_onnx("m.onnx")\np.quantize("int8", backend="onnxruntime")', "x")
    assert _python_problems('p.quantize("int8", keep_float="none")', "x")
    assert _python_problems("print(model.layout)", "x")
    assert _python_problems("from yoloquant.quantize.presets import KeepPreset", "x")
    assert _python_problems('BrevitasConfig.preset("w4a8", rounding="gptq")', "x")
    assert _python_problems('BrevitasConfig.w4a8(rounding="gptq", no_such_field=1)', "x")
    assert _python_problems('BrevitasConfig.w4a8(rounding="gptq")', "x") == []
    assert _python_problems('Sweep(base).grid(num_images=(32, 64)).run("out", min_speedup=1.5)', "x")
    assert _python_problems("OrtQuantConfig(op_types=('Conv',))", "x")
    assert _python_problems("make_quantizer(Precision.INT8, Backend.ORT_CPU, calibration='minmax')", "x")
    assert _python_problems("FloatScope(keep_head_convs_float=True)", "x")
    assert _cli_problem("yoloquant run --model m.pt --calib c --eval e --out o --precisions int8")
    assert _cli_problem("yoloquant run --model m.pt --calib c --eval e --out o --no-such-flag")
    assert _cli_problem("yoloquant run --model m.pt --calib c --eval e --out o --precision int8") is None


def test_the_readme_plan_example_runs_on_the_bundled_assets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yolov8n_pt: Path, coco64_images: Path
) -> None:
    """The README's multi-variant plan, executed as written with its paths on the bundled assets."""
    block = next(code for doc, _, code in _blocks("python") if doc == "README.md" and "plan.describe()" in code)
    (tmp_path / "coco128" / "images").mkdir(parents=True)
    (tmp_path / "coco128" / "images" / "train2017").symlink_to(coco64_images)
    (tmp_path / "yolov8n.pt").symlink_to(yolov8n_pt)
    monkeypatch.chdir(tmp_path)
    printed: list[str] = []
    # the block continues the README's first one, which imports QuantPipeline
    namespace = {"QuantPipeline": QuantPipeline, "print": lambda *args: printed.append(" ".join(map(str, args)))}
    exec(compile(block, "README.md", "exec"), namespace)  # the README's own example
    described = "\n".join(printed)
    for name in ("int8", "int8-openvino", "int8-modelopt", "fp8", "fp16", "w4a16"):
        assert re.search(rf"\b{re.escape(name)}\b", described), (name, described)
