"""The ``yoloquant`` command line: ``run`` a pipeline, ``sweep`` a grid, ``sensitivity`` analysis, ``show`` a report."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yoloquant import __version__
from yoloquant._console import console
from yoloquant._io import disk_full_cause
from yoloquant.config import Backend, CalibMethod, Precision, parse_enum
from yoloquant.errors import ConfigError, DiskFullError, YoloQuantError
from yoloquant.pipeline import QuantPipeline
from yoloquant.report.result import PipelineResult
from yoloquant.tasks import Task
from yoloquant.vocabulary import RENAMED_FLAGS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yoloquant", description="Quantize Ultralytics YOLO models and measure them")
    parser.add_argument("--version", action="version", version=f"yoloquant {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub.add_parser("run", help="export, quantize, evaluate and benchmark; writes report.json / report.md"))
    _sweep_parser(sub.add_parser("sweep", help="variants over a grid, resumable; Pareto front of latency vs mAP"))
    _sensitivity_parser(
        sub.add_parser("sensitivity", help="rank layer groups by INT8 damage; report.json + sensitivity/ table, chart")
    )
    show = sub.add_parser("show", help="print the table of a finished run")
    show.add_argument("report", help="report.json or the run folder")
    return parser


def _run_parser(run: argparse.ArgumentParser) -> None:
    _add_inputs(run, required=False)
    run.add_argument(
        "--precision",
        default="fp32,int8",
        help="comma list of fp32,int8,fp8,fp16 and the Brevitas w8a16,w8a8,w4a16,w4a8 (fp32 always runs)",
    )
    run.add_argument(
        "--backend", default="ort-cpu", help="comma list of ort-cpu, openvino (CPU), ort-cuda (GPU: fp32 / fp16)"
    )
    run.add_argument("--calibration-method", help="minmax, entropy or percentile (brevitas: mse default, percentile)")
    run.add_argument(
        "--quantizer",
        help="ort (ONNX Runtime INT8, fast on CPU), modelopt (TensorRT layout, INT8/FP8), brevitas "
        "(W8/W4 weights, the default for w8a16, w8a8, w4a16, w4a8) or nncf (NNCF INT8, --backend openvino)",
    )
    run.add_argument("--keep-float", help="what stays float: nothing, decode, head, head+first, head+fusion")
    run.add_argument(
        "--max-map-drop", type=float, help="accuracy budget in mAP50-95 points for ORT INT8 (needs --eval)"
    )
    run.add_argument("--granularity", default="block", help="groups the budget keeps float: block or conv")
    run.add_argument(
        "--budget-data",
        default="calibration",
        help="images the budget is searched on: calibration (default; needs labels, and the evaluation set "
        "verifies the budget held-out) or evaluation (in-sample, optimistic)",
    )
    _add_executor_flags(run, "where the accuracy budget (--max-map-drop) measures its candidates")
    run.add_argument("--batch-sizes", default="1", help="comma list of benchmark batch sizes (default 1)")
    run.add_argument("--iterations", type=int, default=100, help="timed rounds per batch size (default 100)")
    run.add_argument("--no-bench", action="store_true", help="skip the latency benchmark")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_renamed_flags(run)


def _sweep_parser(sweep: argparse.ArgumentParser) -> None:
    _add_inputs(sweep, required=True, calib_images="32,64")
    sweep.add_argument("--quantizer", default="ort", help="comma list of ort, modelopt (default ort)")
    sweep.add_argument("--calibration-method", default="minmax,entropy,percentile", help="comma list of methods")
    sweep.add_argument("--keep-float", default="decode,head", help="comma list of presets (see run --keep-float)")
    sweep.add_argument("--recommend-max-drop", type=float, help="recommendation constraint: mAP50-95 points vs fp32")
    sweep.add_argument("--recommend-min-speedup", type=float, help="recommendation constraint: speedup vs fp32")
    sweep.add_argument("--iterations", type=int, default=30, help="timed rounds in the latency phase (default 30)")
    sweep.add_argument(
        "--keep-going", action="store_true", help="a variant that fails is recorded in failed.jsonl; the rest go on"
    )
    _add_executor_flags(sweep, "where variants run", timing=True)
    _add_renamed_flags(sweep, {"--max-map-drop": "--recommend-max-drop", "--min-speedup": "--recommend-min-speedup"})


def _sensitivity_parser(sens: argparse.ArgumentParser) -> None:
    _add_inputs(sens, required=True)
    sens.add_argument("--granularity", default="block", help="block (/model.N/, default) or conv (a Conv + its SiLU)")
    sens.add_argument("--top-k", type=int, default=10, help="most sensitive groups whose mAP is measured (default 10)")
    sens.add_argument("--calibration-method", help="calibration method of the INT8 model: minmax, entropy, percentile")
    sens.add_argument("--proxy-images", type=int, default=8, help="calibration images of the SQNR proxy (default 8)")
    sens.add_argument("--max-groups", type=int, help="analyze only the first N groups in graph order (quick look)")
    _add_executor_flags(sens, "where the groups are measured")
    sens.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_renamed_flags(sens)


def _add_executor_flags(parser: argparse.ArgumentParser, what: str, *, timing: bool = False) -> None:
    """``--executor local|ray`` and the Ray executor's flags (:func:`_executor` reads them)."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local", help=f"{what}: here or on Ray")
    parser.add_argument("--ray-address", help="Ray cluster to join: auto, host:6379 (default: a new local instance)")
    parser.add_argument("--ray-cpus", type=int, help="CPUs of a new local Ray instance (default: all)")
    parser.add_argument("--max-retries", type=int, help="Ray: tries after the first when a worker dies (default 2)")
    if timing:
        parser.add_argument(
            "--timing-resources",
            help="Ray: resource of the node that times every variant, NAME[=AMOUNT][,...], e.g. gpu-h100 (docs/ray.md)",
        )


class _RenamedFlag(argparse.Action):
    """A flag that was renamed: using it raises a ConfigError naming the new flag."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        del args, kwargs
        msg = f"{self.option_strings[0]} is now {self.new} (docs/concepts.md)"
        raise ConfigError(msg)


def _add_renamed_flags(parser: argparse.ArgumentParser, local: dict[str, str] | None = None) -> None:
    """Hidden old spellings of this command's flags (``vocabulary.RENAMED_FLAGS``), each naming the new one."""
    flags = {s for a in parser._actions for s in a.option_strings}  # argparse has no public list of them
    for old, new in {**RENAMED_FLAGS, **(local or {})}.items():
        if new in flags and old not in flags:
            parser.add_argument(old, action=_RenamedFlag, new=new, nargs="?", help=argparse.SUPPRESS)


def _add_inputs(parser: argparse.ArgumentParser, *, required: bool, calib_images: str | None = None) -> None:
    """The model, data and output options shared by ``run``, ``sweep`` and ``sensitivity``."""
    parser.add_argument("--model", required=True, help="Ultralytics .pt checkpoint or exported .onnx")
    parser.add_argument("--calib", required=required, help="calibration images: folder, dataset yaml or COCO json")
    parser.add_argument("--eval", required=required, help="evaluation set: folder with sibling labels/, yaml or json")
    parser.add_argument("--out", required=True, help="output folder for models and reports")
    if calib_images is None:
        parser.add_argument("--calib-images", type=int, default=64, help="number of calibration images (default 64)")
    else:  # a sweep's grid axis
        parser.add_argument(
            "--calib-images", default=calib_images, help=f"comma list of counts (default {calib_images})"
        )
    parser.add_argument("--calib-offset", type=int, default=0, help="index of the first calibration image (sorted)")
    parser.add_argument("--eval-images", type=int, help="number of evaluation images (default: all)")
    parser.add_argument("--eval-offset", type=int, default=0, help="index of the first evaluation image (sorted)")
    parser.add_argument("--split", default="val", help="split of a dataset yaml to evaluate on (default val)")
    parser.add_argument("--imgsz", type=int, default=640, help="input size (default 640)")
    parser.add_argument(
        "--task",
        choices=[t.value for t in Task],
        help="run the model as this task (default: the model's own); detect scores a seg or pose model's boxes only",
    )


def _words(text: str, option: str) -> tuple[str, ...]:
    words = tuple(t.strip() for t in text.split(",") if t.strip())
    if not words:
        msg = f"{option} lists nothing (got {text!r}); give a comma list, e.g. {option} {_EXAMPLES[option]}"
        raise ConfigError(msg)
    return words


_EXAMPLES = {
    "--precision": "fp32,int8",
    "--backend": "ort-cpu",
    "--quantizer": "ort",
    "--calibration-method": "minmax,entropy",
    "--keep-float": "decode,head",
    "--timing-resources": "gpu-h100",
}


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        msg = f"{option} takes comma-separated integers, got {text!r}"
        raise ConfigError(msg) from None


def _base(args: argparse.Namespace, calib_images: int | None = None) -> QuantPipeline:
    """Model, calibration and evaluation of a ``run``, ``sweep`` or ``sensitivity``."""
    if args.model.endswith(".onnx"):
        pipe = QuantPipeline.from_onnx(args.model, task=args.task)
    else:
        pipe = QuantPipeline.from_ultralytics(args.model, imgsz=args.imgsz, task=args.task)
    if args.calib:
        count = args.calib_images if calib_images is None else calib_images
        pipe = pipe.calibrate(args.calib, num_images=count, offset=args.calib_offset)
    if args.eval:
        pipe = pipe.evaluate(args.eval, split=args.split, num_images=args.eval_images, offset=args.eval_offset)
    return pipe


def build_pipeline(args: argparse.Namespace) -> QuantPipeline:
    """The QuantPipeline that ``yoloquant run`` arguments describe."""
    precisions = [parse_enum(Precision, p, option="precision") for p in _words(args.precision, "--precision")]
    backends = [parse_enum(Backend, b, option="backend") for b in _words(args.backend, "--backend")]
    method = args.calibration_method
    calibration = parse_enum(CalibMethod, method, option="calibration_method") if method else None
    executor = _executor(args)
    if args.executor == "ray" and args.max_map_drop is None:
        msg = "--executor ray spreads the accuracy budget's search: give --max-map-drop too (docs/ray.md)"
        raise ConfigError(msg)
    pipe = _base(args)
    for backend in backends:
        for precision in precisions:
            if precision is Precision.FP32 and backend is Backend.ORT_CPU:
                continue  # the baseline
            if precision is Precision.FP32:
                pipe = pipe.quantize(precision, backend=backend)
                continue
            pipe = pipe.quantize(
                precision,
                backend=backend,
                quantizer=args.quantizer,
                calibration_method=calibration,
                keep_float=args.keep_float,
                max_map_drop=args.max_map_drop,
                granularity=args.granularity,
                budget_data=args.budget_data,
                executor=executor if args.executor == "ray" else None,
            )
    if not args.no_bench:
        pipe = pipe.benchmark(batch_sizes=_ints(args.batch_sizes, "--batch-sizes"), iterations=args.iterations)
    return pipe.with_progress(not args.quiet)


def build_sensitivity(args: argparse.Namespace) -> QuantPipeline:
    """The QuantPipeline that ``yoloquant sensitivity`` arguments describe: FP32 and full INT8, analyzed."""
    method = args.calibration_method
    calibration = parse_enum(CalibMethod, method, option="calibration_method") if method else None
    executor = _executor(args)  # checks the Ray flags either way
    pipe = _base(args).quantize("int8", calibration_method=calibration)
    pipe = pipe.analyze_sensitivity(
        granularity=args.granularity,
        top_k=args.top_k,
        proxy_images=args.proxy_images,
        max_groups=args.max_groups,
        executor=executor if args.executor == "ray" else None,  # local: the analysis's own loop, no tasks
    )
    return pipe.with_progress(not args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yoloquant`` command. Returns the exit status.

    The one place errors become exit codes: a :class:`YoloQuantError` (and an ``OSError`` from the
    environment, such as a full disk) prints one line on stderr and returns 2; Ctrl-C prints one line
    and returns 130, after the run folder dropped its partial files; a bug keeps its traceback.
    """
    out: str | None = None
    try:
        args = _parser().parse_args(argv)
        out = getattr(args, "out", None)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        with console(quiet=getattr(args, "quiet", False)):
            return _command(args)
    except KeyboardInterrupt:
        where = f"; partial files were removed from {out}: rerun the same command (a sweep resumes)" if out else ""
        print(f"yoloquant: interrupted (Ctrl-C){where}", file=sys.stderr)
        return 130
    except (YoloQuantError, OSError) as exc:
        print(f"yoloquant: error: {_one_line(_named(exc))}", file=sys.stderr)
        return 2


def _named(exc: BaseException) -> BaseException:
    """A raw OSError in its yoloquant name: a full disk as DiskFullError, others with the path and the fix."""
    if isinstance(exc, YoloQuantError) or not isinstance(exc, OSError):
        return exc
    if disk_full_cause(exc) is not None:
        folder = Path(exc.filename).parent if isinstance(exc.filename, str) else Path.cwd()
        free = shutil.disk_usage(folder if folder.exists() else Path.cwd()).free
        msg = f"disk full writing to {folder} ({free / 1e6:.1f} MB free); free some space there or write elsewhere"
        return DiskFullError(msg, folder=folder, free=free)
    what = f" {exc.filename}" if exc.filename else ""
    return ConfigError(f"cannot use{what}: {exc.strerror or exc}; check the path and its permissions")


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _command(args: argparse.Namespace) -> int:
    if args.command == "show":
        print(PipelineResult.load(args.report).table())
        return 0
    if args.command == "sweep":
        return _sweep(args)
    pipe = build_pipeline(args) if args.command == "run" else build_sensitivity(args)
    print(pipe.describe(), flush=True)
    result = pipe.run(args.out)
    print(result.table())
    print(f"\nreport: {args.out}/report.json, {args.out}/report.md")
    if result.sensitivity is not None:
        print(f"sensitivity: {', '.join(result.sensitivity['files'])}")
    return 0


def _none_given(option: str, text: str) -> tuple[int, ...]:
    msg = f"{option} lists nothing (got {text!r}); give a comma list of integers, e.g. {option} 32,64"
    raise ConfigError(msg)


def _executor(args: argparse.Namespace) -> Any:
    """The executor that ``--executor`` and the Ray flags describe (``sweep``, ``sensitivity``, ``run``)."""
    from yoloquant.decide.executor import LocalExecutor

    timing = getattr(args, "timing_resources", None)  # the sweep's only
    ray_flags = {"--ray-address": args.ray_address, "--ray-cpus": args.ray_cpus, "--max-retries": args.max_retries}
    ray_flags["--timing-resources"] = timing
    if args.executor == "local":
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if given:
            msg = f"{', '.join(given)} configure the Ray executor; add --executor ray (docs/ray.md)"
            raise ConfigError(msg)
        return LocalExecutor()
    from yoloquant.decide.ray_executor import RayExecutor

    return RayExecutor(
        address=args.ray_address,
        num_cpus=args.ray_cpus,
        max_retries=2 if args.max_retries is None else args.max_retries,
        timing_resources=_resources(timing) if timing else None,
    )


def _resources(text: str) -> dict[str, float]:
    """``gpu-h100`` or ``GPU=1,cpu-xeon=0.5`` as Ray resources (an amount defaults to 1)."""
    out: dict[str, float] = {}
    for word in _words(text, "--timing-resources"):
        name, _, amount = word.partition("=")
        try:
            out[name.strip()] = float(amount) if amount else 1.0
        except ValueError:
            msg = f"--timing-resources takes NAME[=AMOUNT], got {word!r}; e.g. --timing-resources gpu-h100=1"
            raise ConfigError(msg) from None
    return out


def _sweep(args: argparse.Namespace) -> int:
    from yoloquant.config import BenchConfig
    from yoloquant.decide.sweep import Sweep

    counts = _ints(args.calib_images, "--calib-images") or _none_given("--calib-images", args.calib_images)
    base = _base(args, calib_images=max(counts)).with_progress(False)
    sweep = Sweep(base, executor=_executor(args), keep_going=args.keep_going).grid(
        quantizer=_words(args.quantizer, "--quantizer"),
        calibration_method=_words(args.calibration_method, "--calibration-method"),
        calib_images=counts,
        keep_float=_words(args.keep_float, "--keep-float"),
    )
    print(f"sweep: {len(sweep.variants)} variants + fp32 into {args.out} (rerun the same command to resume)")
    result = sweep.run(
        args.out,
        bench=BenchConfig(iterations=args.iterations),
        recommend_max_drop=args.recommend_max_drop,
        recommend_min_speedup=args.recommend_min_speedup,
    )
    print(result.report.table())
    if result.recommended_call:
        print(f"\nreproduce {result.recommended}:\n{result.recommended_call}\n{result.recommended_cli or ''}")
    print(f"\nreport: {args.out}/report.json, {args.out}/report.md, {args.out}/pareto.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
