"""The TensorRT backend (builder, engine, audit) run against the test doubles FakeTensorRT + FakeCudart.

Real TensorRT has never run in this project (docs/gpu.md); these tests check the backend follows the
documented API rules the doubles enforce (tests/doubles: what they model and what they do not). The
references are independent of the backend: a 1x1 convolution computed with numpy, hand-built ONNX graphs
whose Q/DQ types are known, and TensorRT's documented shape rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from doubles import FakeCudart, FakeTensorRT, fake_gpu
from yoloquant.errors import ConfigError, EngineBuildError, InferenceError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto  # noqa: E402

from doubles.tiny import model, reference  # noqa: E402
from yoloquant.backends.trt import TrtBuildConfig, TrtEngine, TrtEngineBuilder, TrtEngineFile  # noqa: E402
from yoloquant.backends.trt.inspect import tensor_precision  # noqa: E402
from yoloquant.backends.trt.network import scan_onnx  # noqa: E402

RNG = np.random.default_rng(1)


@pytest.fixture
def gpu() -> Iterator[tuple[FakeTensorRT, FakeCudart]]:
    with fake_gpu() as doubles:
        yield doubles


def batch(n: int) -> np.ndarray:
    return RNG.random((n, 3, 32, 32), dtype=np.float32)


# --- static and dynamic shapes ---------------------------------------------------------------------


def test_static_engine_adds_no_profile_and_runs_its_batch(gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = gpu
    built = TrtEngineBuilder(out_dir=tmp_path).build_file(model(tmp_path / "tiny.onnx"))
    assert trt.builds[-1]["profiles"] == []  # static: TensorRT makes the default profile
    assert trt.builds[-1]["tf32"] is True and built.metadata["profile"] == {}
    with TrtEngine.load(built.path) as engine:
        x = batch(2)
        (out,) = engine.infer(x)
        np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-5)
        with pytest.raises(InferenceError, match=r"static engine takes \[2, 3, 32, 32\].*dynamic-batch ONNX"):
            engine.infer(batch(1))
    assert cudart.live() == {"device": 0, "pinned": 0, "streams": 0, "events": 0}
    engine.close()  # idempotent


def test_dynamic_batch_uses_the_profile_max_and_checks_every_shape(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path
) -> None:
    trt, _ = gpu
    cfg = TrtBuildConfig(min_batch=1, opt_batch=2, max_batch=4, tf32=False)
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(model(tmp_path / "tiny.onnx", batch="batch")) as engine:
        assert trt.builds[-1]["profiles"] == [{"images": [[1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32]]}]
        assert trt.builds[-1]["tf32"] is False
        assert engine.file.metadata["profile"] == trt.builds[-1]["profiles"][0]
        assert tuple(engine.engine.get_tensor_shape("images")) == (-1, 3, 32, 32)  # -1: never a buffer size
        assert engine.max_shape == (4, 3, 32, 32) and engine.max_batch == 4
        for n in (1, 3, 4):
            x = batch(n)
            (out,) = engine.infer(x)
            np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-5)
        with pytest.raises(InferenceError, match=r"\(5, 3, 32, 32\).*profile 0 allows \[1..4, 3, 32, 32\]"):
            engine.infer(batch(5))


def test_a_false_set_input_shape_is_an_error_naming_shape_and_profile(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path
) -> None:
    cfg = TrtBuildConfig(max_batch=4)
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(model(tmp_path / "tiny.onnx", batch="batch")) as engine:
        # TensorRT itself refuses batch 3 from now on (set_input_shape returns False): never run stale shapes
        engine.engine.plan["profiles"][0]["images"][2] = [2, 3, 32, 32]
        with pytest.raises(
            InferenceError, match=r"TensorRT rejected input shape \(3, 3, 32, 32\).*\[1..4, 3, 32, 32\]"
        ):
            engine.infer(batch(3))


def test_any_dynamic_dim_gets_a_profile_not_only_the_batch(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path
) -> None:
    trt, _ = gpu
    with TrtEngineBuilder(out_dir=tmp_path).build(model(tmp_path / "tiny.onnx", batch=1, hw="size")) as engine:
        assert trt.builds[-1]["profiles"] == [{"images": [[1, 3, 32, 32]] * 3}]  # H, W from the model's imgsz
        x = batch(1)
        np.testing.assert_allclose(engine.infer(x)[0], reference(x), rtol=1e-5, atol=1e-5)


# --- precision labels from the network -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({}, "fp32"),
        ({"fp16": True}, "fp16"),
        ({"qdq": TensorProto.INT8}, "int8"),
        ({"qdq": TensorProto.FLOAT8E4M3FN}, "fp8"),
        ({"qdq": TensorProto.INT4}, "int4"),
        ({"qdq": TensorProto.FLOAT4E2M1}, "fp4"),
    ],
)
def test_label_and_file_name_come_from_the_network(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path, kwargs: dict[str, Any], label: str
) -> None:
    trt, _ = gpu
    built = TrtEngineBuilder(out_dir=tmp_path).build_file(model(tmp_path / "tiny.onnx", **kwargs))
    assert built.path.name == f"tiny-{label}.engine"
    assert built.metadata["precision"] == label and built.metadata["strongly_typed"] is True
    assert trt.builds[-1]["strongly_typed"] is True and trt.builds[-1]["flags"] == []


def test_int8_model_is_never_labelled_fp16(gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path) -> None:
    qdq = model(tmp_path / "tiny.onnx", qdq=TensorProto.INT8)
    with pytest.raises(ConfigError, match=r"precision='fp16' but .* int8 Q/DQ"):
        TrtEngineBuilder(TrtBuildConfig(precision="fp16"), out_dir=tmp_path).build_file(qdq)
    assert TrtEngineBuilder(TrtBuildConfig(precision="int8")).plan(qdq).label == "int8"


def test_uint8_qdq_is_refused_with_the_fix(gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path) -> None:
    qdq = model(tmp_path / "tiny.onnx", qdq=TensorProto.UINT8)
    assert scan_onnx(qdq.path).quantized == ("uint8",)
    with pytest.raises(ConfigError, match=r"uint8 Q/DQ.*ModelOptQuantizer"):
        TrtEngineBuilder(out_dir=tmp_path).build_file(qdq)


def test_fp16_of_an_fp32_graph_is_weakly_typed_on_trt10_and_refused_strongly_typed(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path
) -> None:
    trt, _ = gpu
    fp32 = model(tmp_path / "tiny.onnx")
    built = TrtEngineBuilder(TrtBuildConfig(precision="fp16"), out_dir=tmp_path).build_file(fp32)
    assert built.path.name == "tiny-fp16.engine" and built.metadata["strongly_typed"] is False
    assert trt.builds[-1]["flags"] == ["FP16"] and trt.builds[-1]["strongly_typed"] is False
    with pytest.raises(ConfigError, match=r"strongly typed network runs the graph's types"):
        TrtEngineBuilder(TrtBuildConfig(precision="fp16", strongly_typed=True)).plan(fp32)
    with pytest.raises(ConfigError, match="need a Q/DQ model"):
        TrtEngineBuilder(TrtBuildConfig(precision="int8")).plan(fp32)


def test_trt11_is_strongly_typed_without_precision_flags(tmp_path: Path) -> None:
    with fake_gpu("11.1.0") as (trt, _):
        assert not hasattr(trt.BuilderFlag, "FP16")  # removed in 11 (migration guide)
        fp32 = model(tmp_path / "tiny.onnx")
        with pytest.raises(ConfigError, match="strongly typed networks only"):
            TrtEngineBuilder(TrtBuildConfig(precision="fp16")).plan(fp32)
        built = TrtEngineBuilder(out_dir=tmp_path).build_file(model(tmp_path / "q.onnx", qdq=TensorProto.INT8))
        assert built.metadata["precision"] == "int8" and trt.builds[-1]["strongly_typed"] is True
        with TrtEngine.load(built.path) as engine:
            assert engine.audit().counts() == {"int8": 1}  # TensorRT 11 inspector schema


# --- precision audit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "precision"),
    [
        ("Row major linear Int8 format", "int8"),
        ("Row major linear UInt8 format", "uint8"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Row major linear BFloat16 format", "bf16"),
        ("Row major linear FP8 format", "fp8"),
        ("Row major linear FP4 format", "fp4"),
        ("Row major linear Int4 format", "int4"),
        ("Row major linear FP32 format", "fp32"),
        ("Row major linear Float format", "fp32"),
        ("Row major linear Int2 format", "unknown (Row major linear Int2 format)"),
        ("", "unknown"),
    ],
)
def test_audit_tells_int8_from_uint8_and_knows_fp8_fp4_int4(text: str, precision: str) -> None:
    assert tensor_precision(text) == precision
    assert tensor_precision({"DataType": text.removeprefix("Row major linear ").removesuffix(" format")}) == (
        precision if not precision.startswith("unknown (") else "unknown (Int2)"
    )


def test_audit_of_a_built_int8_engine(gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path) -> None:
    with TrtEngineBuilder(out_dir=tmp_path).build(model(tmp_path / "tiny.onnx", qdq=TensorProto.INT8)) as engine:
        assert engine.audit().counts() == {"int8": 1}


# --- streams ---------------------------------------------------------------------------------------


def test_two_streams_get_two_contexts_and_their_own_buffers(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path
) -> None:
    _, cudart = gpu
    s1, s2 = (cudart.cudaStreamCreateWithFlags(1)[1] for _ in range(2))
    cfg = TrtBuildConfig(max_batch=4)
    with TrtEngineBuilder(cfg, out_dir=tmp_path).build(model(tmp_path / "tiny.onnx", batch="batch")) as engine:
        a, b = batch(3), batch(1)
        pa, pb = engine.infer_async(a, s1), engine.infer_async(b, s2)
        np.testing.assert_allclose(pb.wait()[0], reference(b), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pa.wait()[0], reference(a), rtol=1e-5, atol=1e-5)
        engine.infer_async(batch(2), s1).wait()
        assert engine.contexts == 3  # the engine's own stream + s1 + s2
        trt_contexts = engine.engine.contexts
        assert [sorted(set(c.streams)) for c in trt_contexts] == [[], [s1], [s2]]
        addresses = [set(c.addresses.values()) for c in trt_contexts]
        assert all(not (x & y) for i, x in enumerate(addresses) for y in addresses[i + 1 :])
    assert cudart.live()["device"] == 0 and cudart.live()["pinned"] == 0
    for s in (s1, s2):
        cudart.cudaStreamDestroy(s)


# --- engine files: reuse and refusal ---------------------------------------------------------------


def test_build_reuses_a_matching_engine_and_rebuilds_a_stale_one(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path
) -> None:
    trt, _ = gpu
    fp32 = model(tmp_path / "tiny.onnx", batch="batch")
    first = TrtEngineBuilder(TrtBuildConfig(max_batch=2), out_dir=tmp_path).build_file(fp32)
    again = TrtEngineBuilder(TrtBuildConfig(max_batch=2), out_dir=tmp_path).build_file(fp32)
    assert len(trt.builds) == 1 and again.metadata == first.metadata
    TrtEngineBuilder(TrtBuildConfig(max_batch=4), out_dir=tmp_path).build_file(fp32)
    assert len(trt.builds) == 2  # another profile: rebuilt
    TrtEngineBuilder(TrtBuildConfig(max_batch=4), out_dir=tmp_path, reuse=False).build_file(fp32)
    assert len(trt.builds) == 3


def test_loading_refuses_another_tensorrt_or_gpu(tmp_path: Path) -> None:
    with fake_gpu("10.16.1", gpu_name="NVIDIA H200"):
        built = TrtEngineBuilder(out_dir=tmp_path).build_file(model(tmp_path / "tiny.onnx"))
    assert TrtEngineFile.load(built.path).metadata["gpu"] == "NVIDIA H200"
    with fake_gpu("10.0.1", gpu_name="NVIDIA H200"), pytest.raises(EngineBuildError, match=r"10\.16\.1 but 10\.0\.1"):
        TrtEngine.load(built.path)
    with fake_gpu("10.16.1", gpu_name="NVIDIA L4"), pytest.raises(EngineBuildError, match="built on a NVIDIA H200"):
        TrtEngine.load(built.path)
    with fake_gpu("10.0.1", gpu_name="NVIDIA H200") as (trt, _):
        TrtEngineBuilder(out_dir=tmp_path).build_file(model(tmp_path / "tiny.onnx"))
        assert len(trt.builds) == 1  # the old-version engine was rebuilt, not reused
        TrtEngine.load(built.path).close()
    built.path.write_bytes(b"truncated")
    with pytest.raises(EngineBuildError, match="modified or truncated"):
        TrtEngineFile.load(built.path)


def test_the_registry_builds_tensorrt_engines(gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path) -> None:
    from yoloquant.backends.registry import runtime_for
    from yoloquant.config import Backend

    runtime = runtime_for(Backend.TENSORRT)
    runtime.check()
    with runtime.build(model(tmp_path / "tiny.onnx", qdq=TensorProto.INT8), None) as engine:
        assert engine.precision == "int8" and engine.providers == ["TensorRT 10.16.1"]


def test_a_refused_tensor_address_frees_what_was_allocated(
    gpu: tuple[FakeTensorRT, FakeCudart], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doubles.fake_tensorrt import IExecutionContext

    _, cudart = gpu
    built = TrtEngineBuilder(out_dir=tmp_path).build_file(model(tmp_path / "tiny.onnx"))
    monkeypatch.setattr(IExecutionContext, "set_tensor_address", lambda self, name, memory: False)
    with pytest.raises(EngineBuildError, match="refused the device address"):
        TrtEngine.load(built.path)
    assert cudart.live() == {"device": 0, "pinned": 0, "streams": 0, "events": 0}
