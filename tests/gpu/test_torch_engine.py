"""The compiled-PyTorch engine on a real GPU: ONNX Runtime's detections, saved code reused, streams, GPU letterbox."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yoloquant.artifacts import OnnxModel
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import normalize_pixels, preprocess
from yoloquant.detections import Detections
from yoloquant.errors import EngineBuildError

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for PyTorch", allow_module_level=True)

from yoloquant.backends.torch.engine import TorchEngine, TorchEngineBuilder, TorchEngineConfig  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "assets"
IMAGES = sorted((ASSETS / "coco64" / "images").glob("*.jpg"))[:16]
CROWDS = [ASSETS / "coco64" / "images" / f"000000000{n}.jpg" for n in (257, 315, 357, 368)]  # 12-13 people each


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    from yoloquant.export import UltralyticsExporter

    return UltralyticsExporter().export(ASSETS / "weights" / "yolov8n.pt", tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def fp32_engine(exported: OnnxModel, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = TorchEngineConfig(precision="fp32", batch_sizes=(1,), artifact_dir=tmp_path_factory.mktemp("art32"))
    with TorchEngineBuilder(cfg).build(exported) as engine:
        yield engine


def _detect(engine: Any, images: list[Path]) -> list[Detections]:
    from yoloquant.postprocess.predict import predict

    return predict(engine, [str(p) for p in images], conf=0.25)


def _matched(a: Detections, b: Detections) -> float:
    """The largest coordinate difference over boxes paired by class and order of score (pixels)."""
    assert len(a.boxes) == len(b.boxes) and (np.sort(a.classes) == np.sort(b.classes)).all()
    worst = 0.0
    for box, cls in zip(a.boxes, a.classes, strict=True):
        same = b.boxes[b.classes == cls]
        worst = max(worst, float(np.abs(same - box).max(axis=1).min()))
    return worst


def test_same_detections_as_onnx_runtime(exported: OnnxModel, fp32_engine: TorchEngine) -> None:
    from yoloquant.backends.ort import OrtEngineBuilder

    with OrtEngineBuilder().build(exported) as ort:
        ref = _detect(ort, IMAGES)
    got = _detect(fp32_engine, IMAGES)
    assert sum(len(d.boxes) for d in ref) > 30
    assert max(_matched(g, r) for g, r in zip(got, ref, strict=True)) < 1.0  # within 1 px, same classes


def test_infer_async_infer_and_infer_gpu_agree(fp32_engine: TorchEngine) -> None:
    chw, _ = preprocess(read_image(IMAGES[0]), 640)
    batch = chw[None]
    pending = fp32_engine.infer_async(batch)  # uint8 in, returns before the GPU is done
    assert pending.tensors[0].is_cuda
    queued = pending.wait()[0]
    np.testing.assert_array_equal(queued, fp32_engine.infer(normalize_pixels(batch))[0])  # float input: same pixels
    on_gpu = fp32_engine.infer_gpu(torch.from_numpy(batch).cuda())[0]
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), queued)


@pytest.mark.parametrize("artifact", ["precompiled", "inductor-cache"])
def test_saved_code_is_reused_and_a_mismatch_is_refused(exported: OnnxModel, tmp_path: Path, artifact: str) -> None:
    cfg = TorchEngineConfig(precision="fp16", batch_sizes=(1, 2), artifact_dir=tmp_path / "art", artifact=artifact)
    x = np.stack([preprocess(read_image(IMAGES[0]), 640)[0]])
    with TorchEngineBuilder(cfg).build(exported) as first:
        assert not first.loaded_artifact and (tmp_path / "art" / "engine.json").is_file()
        # before batch 2 ever replays, a batch-1 graph captured now computes what the build's does (a precompiled
        # batch-1 function once read the head's anchors, which batch 2's capture had left holding garbage)
        with torch.cuda.stream(first.stream):
            now = first.capture(1, lambda outputs: outputs).run(torch.from_numpy(x).cuda())[0]
        torch.cuda.synchronize()
        np.testing.assert_allclose(now.cpu().numpy(), first.infer(x)[0], atol=1e-3)
        out = first.infer(np.zeros((2, 3, 640, 640), np.uint8))[0]
    assert json.loads((tmp_path / "art" / "engine.json").read_text())["kind"] == artifact
    with TorchEngineBuilder(cfg).build(exported) as second:
        assert second.loaded_artifact
        assert ("precompiled_load" in second.build_phases) == (artifact == "precompiled")
        assert "precompile_b2" not in second.build_phases  # loaded, not compiled again
        np.testing.assert_array_equal(second.infer(np.zeros((2, 3, 640, 640), np.uint8))[0], out)
    meta = json.loads((tmp_path / "art" / "engine.json").read_text())
    (tmp_path / "art" / "engine.json").write_text(json.dumps({**meta, "torch": "0.0.0"}))
    with pytest.raises(EngineBuildError, match=r"torch: artifact '0\.0\.0'"):
        TorchEngineBuilder(cfg).build(exported)


def test_a_model_dynamo_cannot_trace_whole_falls_back_to_the_inductor_cache_once(tmp_path: Path) -> None:
    """YOLO26's head breaks the graph on torch 2.11, which ``aot_compile`` cannot take: the build saves an
    inductor cache with the reason, and the next build loads it without trying to precompile again."""
    from yoloquant.export import UltralyticsExporter

    model = UltralyticsExporter().export(ASSETS / "weights" / "yolo26n.pt", tmp_path / "export")
    cfg = TorchEngineConfig(precision="fp32", batch_sizes=(1,), artifact_dir=tmp_path / "art", artifact="precompiled")
    x = np.stack([preprocess(read_image(IMAGES[0]), 640)[0]])
    with TorchEngineBuilder(cfg).build(model) as first:
        out = first.infer(x)[0]
    meta = json.loads((tmp_path / "art" / "engine.json").read_text())
    assert meta["kind"] == "precompiled" or (meta["kind"] == "inductor-cache" and meta["fallback"])
    with TorchEngineBuilder(cfg).build(model) as second:
        assert second.loaded_artifact and "precompile_b1" not in second.build_phases
        np.testing.assert_array_equal(second.infer(x)[0], out)


def test_an_aoti_package_loads_without_tracing_and_runs_any_batch_size(
    exported: OnnxModel, fp32_engine: TorchEngine, tmp_path: Path
) -> None:
    """The AOTInductor package: built once, then loaded with no Dynamo or Ultralytics step; every batch size up
    to max_batch runs from it, with the inductor engine's outputs."""
    from yoloquant.postprocess.decode import decode

    cfg = TorchEngineConfig(precision="fp32", batch_sizes=(1,), artifact="aoti", max_batch=4, artifact_dir=tmp_path)
    frames = np.stack([preprocess(read_image(p), 640)[0] for p in IMAGES[:3]])
    try:
        first = TorchEngineBuilder(cfg).build(exported)
    except EngineBuildError as exc:  # torch 2.11.0+cu130 on the lent H200: see compiled.check_package_loads
        if "does not load in a new process" not in str(exc):
            raise
        pytest.skip(f"AOTInductor packages crash a new process on this machine: {exc}")
    with first:
        assert not first.loaded_artifact and "aoti_compile" in first.build_phases
    assert json.loads((tmp_path / "engine.json").read_text())["kind"] == "aoti"
    with TorchEngineBuilder(cfg).build(exported) as second:
        assert second.loaded_artifact and "ultralytics_load" not in second.build_phases
        got = decode(second.infer(frames), exported.info, conf=0.25)  # batch 3: served by the dynamic batch
    want = [decode(fp32_engine.infer(f[None]), exported.info, conf=0.25)[0] for f in frames]
    assert sum(len(w) for w in want) > 10
    for g, w in zip(got, want, strict=True):  # TF32 convolutions round differently per batch size
        assert _matched(_clear_of(g, 0.25), _clear_of(w, 0.25)) < 1.0


def test_engines_on_several_streams_match_serial(fp32_engine: TorchEngine) -> None:
    frames = [preprocess(read_image(p), 640)[0][None] for p in IMAGES[:8]]
    serial = [fp32_engine.infer(f)[0] for f in frames]
    engines = [fp32_engine] + [fp32_engine.on_stream() for _ in range(7)]  # 8 streams, one compiled model
    bad: list[int] = []

    def work(k: int, engine: TorchEngine) -> None:
        for _ in range(10):
            for i, f in enumerate(frames):
                if not np.array_equal(engine.infer(f)[0], serial[i]):
                    bad.append(k)

    threads = [threading.Thread(target=work, args=(k, e)) for k, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines[1:]:
        e.close()
    assert not bad


def test_gpu_letterbox_and_decode_give_the_cpu_path_detections(fp32_engine: TorchEngine) -> None:
    from yoloquant.data.letterbox import scale_detections
    from yoloquant.data.letterbox_gpu import letterbox_batch
    from yoloquant.postprocess.gpu import decode_torch

    frames = [torch.from_numpy(read_image(p)).cuda() for p in IMAGES[:4]]
    batch, metas = letterbox_batch(frames, 640)  # predict's letterbox, as _detect's
    dets = [fp32_engine.infer_gpu(batch[i : i + 1])[0] for i in range(4)]
    got = [
        scale_detections(decode_torch(d, fp32_engine.info, conf=0.25)[0], m) for d, m in zip(dets, metas, strict=True)
    ]
    ref = _detect(fp32_engine, IMAGES[:4])
    assert max(_matched(g, r) for g, r in zip(got, ref, strict=True)) < 1.0


def test_eager_graphs_of_several_batch_sizes_keep_their_anchors(
    exported: OnnxModel, fp32_engine: TorchEngine, tmp_path: Path
) -> None:
    """Each batch size's warm-up made new head anchors and freed the ones the previous graph reads: after the
    allocator hands that memory out again (or gives it back to the driver), batch 1 must still be right."""
    from yoloquant.postprocess.decode import decode

    frame = preprocess(read_image(IMAGES[0]), 640)[0][None]
    ref = decode(fp32_engine.infer(frame), exported.info, conf=0.25)[0]
    cfg = TorchEngineConfig(precision="fp32", batch_sizes=(1, 16), compile=False, artifact_dir=tmp_path)
    with TorchEngineBuilder(cfg).build(exported) as eager:
        twin = eager.on_stream()  # prepares both sizes again: the head's anchors are replaced once more
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # unreferenced blocks go back to the driver: a graph reading one faults
        junk = []
        for _ in range(64):  # every stream of PyTorch's pool, so freed blocks of any stream are reused
            with torch.cuda.stream(torch.cuda.Stream()):
                junk += [torch.full((n,), 1e4, device="cuda") for n in (8400, 16800, 4200, 2100, 525)]
        torch.cuda.synchronize()
        for engine in (eager, twin):
            got = decode(engine.infer(frame), exported.info, conf=0.25)[0]
            # eager vs compiled rounding: near-tied scores may swap order and a score on the threshold may
            # flip, so compare the detections clear of it, paired by class (garbage anchors move every box)
            clear, ref_clear = _clear_of(got, 0.25), _clear_of(ref, 0.25)
            assert len(ref_clear.boxes) > 0 and _matched(clear, ref_clear) < 1.0
        twin.close()
        del junk


def _clear_of(d: Detections, conf: float, margin: float = 2e-3) -> Detections:
    keep = d.scores > conf + margin
    return Detections(d.boxes[keep], d.scores[keep], d.classes[keep])


@pytest.mark.parametrize(
    "weights", ["yolo26n-seg_coco_from_int8ir/yolo26n-seg.pt", "yolov8n-pose_coco_from_int8ir/yolov8n-pose.pt"]
)
def test_seg_and_pose_models_decode_on_the_gpu_as_onnx_runtime_on_the_cpu(
    weights: str, tmp_path: Path, shared_weights: Callable[[str], Path | None]
) -> None:
    """The torch engine returns every output the ONNX model has (a seg model's prototypes too), and the GPU
    decoder of the model's task gives ONNX Runtime + CPU decode's detections, masks and keypoints."""
    from yoloquant.backends.ort import OrtEngineBuilder
    from yoloquant.export import UltralyticsExporter
    from yoloquant.postprocess.decode import decode
    from yoloquant.postprocess.gpu import decode_outputs_torch

    pt = shared_weights(weights)
    if pt is None:
        pytest.skip(f"needs {weights} in ../shared/data/weights or .gpu-data")
    model = UltralyticsExporter().export(pt, tmp_path / "export")
    batch = np.stack([preprocess(read_image(p), 640)[0] for p in CROWDS])
    cfg = TorchEngineConfig(precision="fp32", batch_sizes=(4,), artifact_dir=tmp_path / "art")
    with TorchEngineBuilder(cfg).build(model) as engine, OrtEngineBuilder().build(model) as ort:
        outputs = engine.infer_gpu(torch.from_numpy(batch).cuda())
        floats = normalize_pixels(batch)  # ONNX Runtime takes float32 in [0, 1]
        assert len(outputs) == len(ort.infer(floats[:1]))
        got = decode_outputs_torch(outputs, model.info, conf=0.25)
        want = [decode(ort.infer(floats[i : i + 1]), model.info, conf=0.25)[0] for i in range(4)]
    assert sum(len(w) for w in want) > 5
    for gpu_dets, cpu_dets in zip(got, want, strict=True):
        g, w = _clear_of_all(gpu_dets, 0.25), _clear_of_all(cpu_dets, 0.25)
        assert _matched(g, w) < 1.0
        if w.masks is not None:
            inter = (g.masks & w.masks).sum((1, 2))
            union = (g.masks | w.masks).sum((1, 2))
            assert (inter / np.maximum(union, 1)).min(initial=1) > 0.9
        if w.keypoints is not None:
            assert np.abs(g.keypoints[..., :2] - w.keypoints[..., :2]).max(initial=0) < 2.0


def _clear_of_all(d: Detections, conf: float, margin: float = 2e-3) -> Detections:
    """``d`` without the detections near the threshold, masks and keypoints included, sorted by class then x1."""
    keep = np.flatnonzero(d.scores > conf + margin)
    keep = keep[np.lexsort((d.boxes[keep, 0], d.classes[keep]))]
    return d.select(keep)
