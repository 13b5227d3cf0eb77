"""GPU backends' CPU-side parts, which run without a GPU or TensorRT: configs, sidecars, inspector JSON, graph edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloquant import ConfigError, EngineBuildError, Precision
from yoloquant._io import atomic_write_bytes
from yoloquant.artifacts import file_sha256
from yoloquant.backends.trt import TrtBuildConfig, TrtEngineFile, audit_engine_json
from yoloquant.backends.trt.builder import ENGINE_FORMAT
from yoloquant.backends.trt.inspect import tensor_precision

TRT10_JSON = {
    "Layers": [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /model.0/conv/Conv",
            "LayerType": "Reformat",
            "Inputs": [{"Name": "images", "Format/Datatype": "Row major linear FP32"}],
            "Outputs": [{"Name": "x", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
        },
        {
            "Name": "/model.0/conv/Conv + /model.0/act/Mul",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "x", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
            "Outputs": [{"Name": "y", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
        },
        {
            "Name": "/model.22/dfl/Softmax",
            "LayerType": "SoftMax",
            "Inputs": [{"Name": "z", "Format/Datatype": "Row major linear FP32"}],
            "Outputs": [{"Name": "w", "Format/Datatype": "Row major linear FP32"}],
        },
        {
            "Name": "/model.2/cv1/conv/Conv",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "a", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
            "Outputs": [{"Name": "b", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
        },
    ],
    "Bindings": ["images", "output0"],
}

TRT11_JSON = {
    "Layers": [
        {
            "Name": "conv",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "x", "DataType": "FP8", "Format": "kLINEAR"}],
            "Outputs": [{"Name": "y", "DataType": "Half", "Format": "kHWC8"}],
        }
    ],
    "I/O Tensors": [{"Name": "images", "IOMode": "Input", "DataType": "Float"}],
}


def test_audit_reads_tensorrt_10_and_11_inspector_json() -> None:
    audit = audit_engine_json(json.dumps(TRT10_JSON))
    assert audit.counts() == {"int8": 1, "fp32": 1, "fp16": 1}
    assert len(audit.reformats) == 1
    assert audit.by_precision("int8") == ["/model.0/conv/Conv + /model.0/act/Mul"]
    assert "| reformat | 1 |" in audit.table()
    assert audit_engine_json(json.dumps(TRT11_JSON)).counts() == {"fp8": 1}
    assert tensor_precision("Row major linear BFloat16") == "bf16"


def test_layer_names_only_engines_audit_as_unknown() -> None:
    audit = audit_engine_json(json.dumps({"Layers": ["conv1", "Reformatting CopyNode for conv1"]}))
    assert audit.counts() == {"unknown": 1}
    assert len(audit.reformats) == 1


def test_build_config_validates_and_round_trips() -> None:
    cfg = TrtBuildConfig(precision="int8", min_batch=1, opt_batch=8, max_batch=16, timing_cache="t.cache")
    assert cfg.precision is Precision.INT8
    assert TrtBuildConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="min_batch <= opt_batch <= max_batch"):
        TrtBuildConfig(opt_batch=8, max_batch=4)
    with pytest.raises(ConfigError, match="unknown precision"):
        TrtBuildConfig(precision="int3")


def test_engine_file_sidecar_is_checked(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    atomic_write_bytes(engine, b"serialized engine bytes")
    with pytest.raises(EngineBuildError, match="missing"):
        TrtEngineFile.load(engine)
    sidecar = tmp_path / "m.engine.json"
    atomic_write_bytes(sidecar, json.dumps({"format": ENGINE_FORMAT, "engine_sha256": file_sha256(engine)}).encode())
    assert TrtEngineFile.load(engine).metadata["format"] == ENGINE_FORMAT
    atomic_write_bytes(engine, b"truncated")
    with pytest.raises(EngineBuildError, match="modified or truncated"):
        TrtEngineFile.load(engine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]  # no temp files left


def test_cuda_builder_options_and_validation() -> None:
    from yoloquant.backends.ort.cuda import CudaEngineBuilder, stream_handle

    builder = CudaEngineBuilder(cuda_graph=True, tf32=True, prefer_nhwc=True)
    opts = builder.provider_options(1234)
    assert opts["user_compute_stream"] == "1234"
    assert (opts["enable_cuda_graph"], opts["use_tf32"], opts["prefer_nhwc"]) == ("1", "1", "1")
    assert builder.to_dict()["cuda_graph"] is True
    with pytest.raises(ConfigError, match="depth must be >= 1"):
        CudaEngineBuilder(depth=0)
    with pytest.raises(ConfigError, match="conv_algo_search"):
        CudaEngineBuilder(conv_algo_search="FAST")

    class TorchLike:
        cuda_stream = 77

    assert stream_handle(TorchLike()) == 77
    assert stream_handle(5) == 5
    with pytest.raises(ConfigError, match="cannot get a CUDA stream handle"):
        stream_handle("default")


def test_cuda_builder_without_gpu_build_says_the_fix(yolov8n_onnx: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    from yoloquant import OnnxModel
    from yoloquant.backends.ort.cuda import CudaEngineBuilder

    with pytest.raises(EngineBuildError, match="onnxruntime-gpu"):
        CudaEngineBuilder().build(OnnxModel.load(yolov8n_onnx))


def test_uint8_input_graph_matches_float_input_on_cpu(yolov8n_onnx: Path) -> None:
    import numpy as np

    ort = pytest.importorskip("onnxruntime")
    from yoloquant.backends.ort.cuda import with_uint8_input

    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 640, 640), dtype=np.uint8)
    (a,) = ort.InferenceSession(str(yolov8n_onnx)).run(None, {"images": pixels.astype(np.float32) / 255.0})
    (b,) = ort.InferenceSession(with_uint8_input(yolov8n_onnx)).run(None, {"images": pixels})
    np.testing.assert_array_equal(a, b)
