r"""Where ModelOpt FP8's loss on YOLO26n-seg comes from: one FP8 model, rewritten, measured on the tuning images.

Takes a ModelOpt FP8 model (``task_quant.py --variants fp8`` wrote it) and evaluates rewrites of it on coco128
images 64-127 (the seg tuning images), against FP32, through ONNX Runtime's CPU provider:

- ``base``: as ModelOpt wrote it. ``w-only`` / ``a-only``: only the weight / only the activation Q/DQ kept.
- ``w448`` / ``a448`` / ``s448``: weight / activation / both scales at ``amax / 448`` (e4m3's full range) instead of
  ModelOpt's ``amax / 36`` (it multiplies max-calibrated int8 scales by 448 / 127). ``w127``: weight scales at
  ``amax / 127``, the int8 grid step of these weights (small grid points exact in e4m3).
- ``wmse``: per-channel weight scales of least squared error (64 candidates over one octave below 448).
- a ``bc`` suffix (``bc``, ``w448bc``, ``wmsebc``): and the convs' float biases corrected for the weights' FP8
  rounding, ``b -= sum((dq(q(w)) - w) * E[x])`` with ``E[x]`` the input channel means over the calibration images.

Every rewrite keeps a layout TensorRT documents (not built here): float weights into a ``QuantizeLinear`` to
``float8e4m3fn`` with a scalar or 1-D per-channel scale, float biases. ``--proxy`` instead prints the relative
output error vs FP32 (the prototypes, and the pre-top-k boxes, scores and mask coefficients) on tuning images
64-71, the bias correction fitted on the calibration images 0-63: a smooth measure, to tell rounding luck from a
real change.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/fp8_diagnose.py runs/tune-fp8/fp8/yolo26n-seg-fp8.onnx \
        --variants base,w-only,a-only --out runs/fp8-diagnose
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task_quant as tq

TAP = "/model.23/Concat_4_output_0"  # YOLO26n-seg's boxes, scores and mask coefficients before the top-k


def _pairs(model: Any) -> Iterator[tuple[Any, Any, bool]]:
    """Each QuantizeLinear -> DequantizeLinear pair, and whether it quantizes a weight (an initializer)."""
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for dq in model.graph.node:
        q = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            yield q, dq, q.input[0] in inits


def _bypass(model: Any, *, weights: bool) -> Any:
    """Drop the weight (or activation) Q/DQ pairs: their consumers read the float tensor."""
    rename = {dq.output[0]: q.input[0] for q, dq, is_w in _pairs(model) if is_w == weights}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    return model


def _rescale(model: Any, factor: float, *, weights: bool, acts: bool) -> Any:
    numpy_helper = _onnx().numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    done: set[str] = set()
    for q, dq, is_w in _pairs(model):
        if (is_w and weights) or (not is_w and acts):
            for name in {q.input[1], dq.input[1]} - done:
                scale = numpy_helper.to_array(inits[name]) * np.float32(factor)
                inits[name].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), name))
                done.add(name)
    return model


def _fp8(values: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return values.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


def _mse_scales(model: Any, steps: int = 64) -> Any:
    numpy_helper = _onnx().numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    for q, _, is_w in _pairs(model):
        if not is_w:
            continue
        w = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        flat = w.reshape(w.shape[0], -1)
        amax = np.maximum(np.abs(flat).max(axis=1, keepdims=True), np.float32(1e-12))
        best_err, best = np.full(w.shape[0], np.inf), amax[:, 0] / 36
        for ratio in 448.0 * 2.0 ** (-np.arange(steps) / steps):
            scale = (amax / ratio).astype(np.float32)
            err = ((_fp8(flat / scale) * scale - flat) ** 2).sum(axis=1)
            better = err < best_err
            best_err[better], best[better] = err[better], scale[better, 0]
        shape = numpy_helper.to_array(inits[q.input[1]]).shape
        inits[q.input[1]].CopyFrom(numpy_helper.from_array(best.astype(np.float32).reshape(shape), q.input[1]))
    return model


def _input_means(fp32: Path, tensors: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel means of ``tensors`` in the float model over ``images`` (uint8 NCHW)."""
    import onnxruntime as ort

    from yoloquant.data.letterbox import normalize_pixels

    onnx = _onnx()
    model = onnx.load(str(fp32))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    data = normalize_pixels(images)
    for k in range(len(data)):
        for name, out in zip(names, session.run(None, {session.get_inputs()[0].name: data[k : k + 1]}), strict=True):
            if name in tensors:
                sums[name] = sums.get(name, 0) + out.mean(axis=(0, 2, 3))
    return {name: total / len(data) for name, total in sums.items()}


def _bias_correct(model: Any, fp32: Path, images: np.ndarray) -> Any:
    """``b -= sum((dq(q(w)) - w) * E[x])`` for every conv with FP8 weights (grouped convs too)."""
    numpy_helper = _onnx().numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_q = {dq.output[0]: q for q, dq, is_w in _pairs(model) if is_w}
    jobs = []
    for conv in model.graph.node:
        if conv.op_type == "Conv" and conv.input[1] in weight_q:
            act = producers.get(conv.input[0])
            quantized = act is not None and act.op_type == "DequantizeLinear"
            jobs.append(
                (conv, weight_q[conv.input[1]], producers[act.input[0]].input[0] if quantized else conv.input[0])
            )
    means = _input_means(fp32, sorted({src for *_, src in jobs}), images)
    for conv, q, src in jobs:
        w = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[q.input[1]]).reshape(-1, 1, 1, 1)
        per = (_fp8(w / scale) * scale - w).sum(axis=(2, 3))  # [out, in / group]
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        out, cin = w.shape[:2]
        shift = -(per.reshape(group, out // group, cin) * means[src].reshape(group, 1, cin)).sum(-1).reshape(out)
        if len(conv.input) > 2 and conv.input[2]:
            bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float32) + shift
            inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias, conv.input[2]))
        else:
            name = f"{conv.name}_fp8_bias_correction"
            model.graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), name))
            conv.input.extend([""] * (3 - len(conv.input)))
            conv.input[2] = name
    return model


REWRITES: dict[str, Callable[[Any], Any]] = {
    "base": lambda m: m,
    "w-only": lambda m: _bypass(m, weights=False),
    "a-only": lambda m: _bypass(m, weights=True),
    "s448": lambda m: _rescale(m, 36 / 448, weights=True, acts=True),
    "w448": lambda m: _rescale(m, 36 / 448, weights=True, acts=False),
    "a448": lambda m: _rescale(m, 36 / 448, weights=False, acts=True),
    "w127": lambda m: _rescale(m, 36 / 127, weights=True, acts=False),
    "wmse": _mse_scales,
}


def _onnx() -> Any:
    import onnx

    return onnx


def rewrite(source: Path, variant: str, fp32: Path, images: np.ndarray) -> Any:
    """The FP8 model at ``source``, rewritten as ``variant`` says (a ``bc`` suffix: bias-corrected too)."""
    base, corrected = (variant[:-2] or "base", True) if variant.endswith("bc") else (variant, False)
    model = REWRITES[base](_onnx().load(str(source)))
    return _bias_correct(model, fp32, images) if corrected else model


@dataclass(frozen=True)
class Rewrite:
    """The report's record of a rewrite."""

    source: str
    variant: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RewrittenFp8:
    """A quantizer that hands the pipeline a rewrite of an existing ModelOpt FP8 model."""

    source: Path
    variant: str
    name: ClassVar[str] = "modelopt"
    needs_calibration: ClassVar[bool] = True

    @property
    def config(self) -> Rewrite:
        return Rewrite(source=str(self.source), variant=self.variant)

    def with_progress(self, enabled: bool) -> RewrittenFp8:
        return self

    def quantize(self, model: Any, data: Any, out_dir: Path) -> Any:
        from yoloquant.artifacts import QdqModel
        from yoloquant.config import Precision

        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"yolo26n-seg-fp8-{self.variant}.onnx"
        _onnx().save(rewrite(self.source, self.variant, model.path, data.images), str(target))
        return QdqModel(
            path=target, info=model.info, precision=Precision.FP8, source=model, quantizer="modelopt",
            backend="tensorrt", config=self.config.to_dict(),
        )  # fmt: skip


def _proxy(source: Path, variants: list[str], out: Path) -> dict[str, Any]:
    import onnxruntime as ort

    from yoloquant.artifacts import OnnxModel
    from yoloquant.data.calibration import ImageCalibrator
    from yoloquant.data.letterbox import normalize_pixels
    from yoloquant.export import UltralyticsExporter

    fp32 = UltralyticsExporter().export(tq.MODELS["yolo26n-seg"], out)
    info = OnnxModel.load(fp32.path).info
    fit = ImageCalibrator(source=tq.CALIB, num_images=64, progress=False).calibrate(info)
    held = ImageCalibrator(source=tq.CALIB, num_images=8, offset=64, progress=False).calibrate(info)
    x = normalize_pixels(held.images).astype(np.float32)

    def outputs(model: Any) -> list[np.ndarray]:
        onnx = _onnx()
        model.graph.output.append(onnx.helper.make_tensor_value_info(TAP, onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        runs = [session.run(["output1", TAP], {"images": x[i : i + 1]}) for i in range(len(x))]
        return [np.concatenate([r[k] for r in runs]) for k in range(2)]

    ref = outputs(_onnx().load(str(fp32.path)))
    result = {}
    for variant in variants:
        protos, head = outputs(rewrite(source, variant, fp32.path, fit.images))
        rel = {"protos": float(np.mean((protos - ref[0]) ** 2) / np.mean(ref[0] ** 2))}
        for part, cut in (("boxes", slice(0, 4)), ("scores", slice(4, 84)), ("coefficients", slice(84, 116))):
            rel[part] = float(np.mean((head[:, cut] - ref[1][:, cut]) ** 2) / np.mean(ref[1][:, cut] ** 2))
        result[variant] = rel
        print(variant, {k: f"{v:.2e}" for k, v in rel.items()}, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp8", type=Path, help="a ModelOpt FP8 model of YOLO26n-seg (task_quant.py --variants fp8)")
    parser.add_argument("--variants", default="base,w-only,a-only", help="comma list (see above)")
    parser.add_argument("--proxy", action="store_true", help="output error vs FP32 instead of mAP")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--save", type=Path, help="also write the summary JSON here")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if ((v[:-2] or "base") if v.endswith("bc") else v) not in REWRITES]
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {', '.join(REWRITES)} (each with an optional 'bc')")
    if args.proxy:
        summary: dict[str, Any] = {"proxy_relative_mse": _proxy(args.fp8, variants, args.out)}
    else:
        from yoloquant import QuantPipeline

        source, offset, count = tq.SETS["yolo26n-seg"]["tune"]
        plan = QuantPipeline.from_ultralytics(tq.MODELS["yolo26n-seg"]).calibrate(tq.CALIB, num_images=64)
        for v in variants:
            plan = plan.quantize("fp8", quantizer=RewrittenFp8(args.fp8, v), name=f"fp8-{v}")
        result = plan.evaluate(source, num_images=count, offset=offset).run(args.out)
        print(result.table())
        report = json.loads((args.out / "report.json").read_text())
        summary = {v["name"]: v["delta_vs_fp32"] for v in report["variants"] if v["delta_vs_fp32"]}
    if args.save:
        payload = {"command": " ".join(["benchmarks/fp8_diagnose.py", *sys.argv[1:]]), "images": "tune", **summary}
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
