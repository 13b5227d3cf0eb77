"""FakeTensorRT: a TEST DOUBLE of the documented TensorRT Python API surface yoloquant's backend uses.

It is not TensorRT and runs no GPU code. It exists so that ``backends/trt`` runs in CPU CI; real TensorRT
has never run in this project (docs/gpu.md). Each rule it enforces is one the TensorRT 10 / 11 Python API
documentation states:

* ``Builder.create_network(flags)``: ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` makes a
  strongly typed network; TensorRT 11 has no precision builder flags (``BuilderFlag.FP16`` / ``INT8`` / ...
  do not exist: AttributeError, as in the 11.x bindings), and its STRONGLY_TYPED flag is ignored.
* ``OnnxParser.parse_from_file``: input dims without a value are -1; Q/DQ types TensorRT cannot quantize
  to (uint8: "UINT8 cannot be used to represent quantized floating-point values") are parser errors.
* ``build_serialized_network``: returns None (and logs an ERROR) when an input has -1 dims and no
  optimization profile covers it ("users need to specify at least one optimization profile"), or when a
  precision flag is set on a strongly typed network (our reading of the Developer Guide's strong-typing
  section; the backend never does this, so the rule only guards the double's own tests).
* ``IBuilderConfig.add_optimization_profile``: -1 for an invalid profile (min <= opt <= max per dim,
  same rank, static dims equal).
* ``IRuntime.deserialize_cuda_engine``: None for a plan from another TensorRT version.
* ``ICudaEngine.get_tensor_shape``: -1 for dynamic dims; ``get_tensor_profile_shape(name, i)`` ->
  ``[min, opt, max]``.
* ``IExecutionContext.set_input_shape``: False outside profile 0's range or for a wrong rank / static
  dim; ``get_tensor_shape`` of an output has -1 dims until every input shape is set;
  ``execute_async_v3`` returns False while an input shape or a tensor address is missing.

"Execution" runs the ONNX model with ONNX Runtime (CPU) on the bytes at the bound input address and
writes the outputs to the bound output addresses, so outputs are deterministic and the real model's.
With ``memory=FakeCudart(...)`` addresses are host memory; with ``memory=CudaMemory(cuda.bindings.runtime)``
they are real device buffers (copied to the host after synchronizing the stream), so the engine's CUDA
side can run on a GPU machine with the double in place of TensorRT.

What it does NOT model: kernels, reduced precision arithmetic (an "fp16" or "int8" engine computes
what ONNX Runtime computes for the ONNX graph), layer fusion (the inspector reports one layer per ONNX
Conv / Concat / Sigmoid), asynchrony (execution completes inside ``execute_async_v3``), device memory
(addresses are host addresses from ``FakeCudart``), multiple profiles at run time, plugins, refit,
weight streaming, timing caches' content, and any API the backend does not call.
"""

from __future__ import annotations

import ctypes
import enum
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["CudaMemory", "FakeTensorRT"]

_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64}
_NP |= {"BOOL": np.bool_, "UINT8": np.uint8}
_QDQ_NAMES = {3: "Int8", 2: "UInt8", 17: "FP8", 22: "Int4", 23: "FP4", 21: "UInt4", 19: "FP8E5M2"}
_TRT_QDQ = {"Int8", "FP8", "Int4", "FP4"}


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, msg: str) -> None:
        self.messages.append((severity, msg))


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10
    E8M0 = 11

    @property
    def itemsize(self) -> float:
        return {4: 1, 5: 1, 6: 1, 2: 1, 1: 2, 7: 2, 0: 4, 3: 4, 8: 8, 9: 0.5, 10: 0.5, 11: 1}[int(self)]


def nptype(trt_type: DataType) -> type:
    """numpy type of a DataType; TypeError where numpy has none (BF16, FP8, INT4, FP4, E8M0), like the API."""
    name = DataType(trt_type).name
    if name not in _NP:
        msg = f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {name}"
        raise TypeError(msg)
    return _NP[name]


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class ProfilingVerbosity(enum.IntEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class LayerInformationFormat(enum.IntEnum):
    ONELINE = 0
    JSON = 1


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition:
    def __init__(self, trt: FakeTensorRT, flags: int) -> None:
        self.trt = trt
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.onnx_path: str | None = None
        self.layers: list[dict[str, Any]] = []

    @property
    def strongly_typed(self) -> bool:
        return self.trt.major >= 11 or bool(
            self.flags & (1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        )

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


def _value_info(value: Any) -> tuple[str, tuple[int, ...], DataType]:
    t = value.type.tensor_type
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
    return value.name, dims, DataType[_ONNX_TO_TRT.get(int(t.elem_type), "FLOAT")]


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.logger = network, logger
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]

    def parse_from_file(self, path: str) -> bool:
        import onnx

        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as exc:  # the real parser reports any unreadable file as a parse error
            self.errors.append(f"ModelImporter: failed to parse {path}: {exc}")
            return False
        graph = model.graph
        inits = {i.name: i for i in graph.initializer}
        self.network.inputs = [ITensor(*_value_info(v)) for v in graph.input if v.name not in inits]
        self.network.outputs = [ITensor(*_value_info(v)) for v in graph.output]
        self.network.onnx_path = path
        qdq_of: dict[str, str] = {}  # DQ output -> its quantized type
        for node in graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                kind = _qdq_onnx_type(node, inits)
                name = _QDQ_NAMES.get(kind, f"onnx type {kind}") if kind is not None else None
                if name is not None and name not in _TRT_QDQ:
                    self.errors.append(f"{node.name} ({node.op_type}): unsupported quantization type {name}")
                if node.op_type == "DequantizeLinear" and name is not None:
                    qdq_of[node.output[0]] = name
        for node in graph.node:
            if node.op_type in ("Conv", "Concat", "Sigmoid", "Mul", "Add"):
                weight = inits.get(node.input[1]) if len(node.input) > 1 else None
                qtype = qdq_of.get(node.input[0])
                float_type = "Half" if weight is not None and weight.data_type == 10 else "Float"
                self.network.layers.append({"name": node.name, "type": node.op_type, "qdq": qtype, "float": float_type})
        for inp in self.network.inputs:
            if inp.dtype not in (DataType.FLOAT, DataType.HALF, DataType.UINT8):
                self.errors.append(f"input {inp.name}: unsupported type {inp.dtype.name}")
        return not self.errors


def _qdq_onnx_type(node: Any, inits: dict[str, Any]) -> int | None:
    for attr in node.attribute:
        if attr.name == "output_dtype" and attr.i:
            return int(attr.i)
    if len(node.input) > 2 and node.input[2] in inits:
        return int(inits[node.input[2]].data_type)
    if node.op_type == "DequantizeLinear" and node.input[0] in inits:
        return int(inits[node.input[0]].data_type)
    return 2 if node.op_type == "QuantizeLinear" else None


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self.shapes[input] = [tuple(int(d) for d in s) for s in (min, opt, max)]

    def get_shape(self, input: str) -> list[tuple[int, ...]]:
        return self.shapes[input]


class ITimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob or b"fake-timing-cache"

    def serialize(self) -> bytes:
        return self.blob


class IBuilderConfig:
    def __init__(self) -> None:
        self.pools: dict[MemoryPoolType, int] = {}
        self.builder_optimization_level = 3
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.flags: set[Any] = set()
        self.profiles: list[IOptimizationProfile] = []
        self.timing_cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pools[pool] = int(size)

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: Any) -> None:
        self.flags.discard(flag)

    def get_flag(self, flag: Any) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        for low, opt, high in profile.shapes.values():
            if not len(low) == len(opt) == len(high) or any(
                not 0 <= a <= b <= c for a, b, c in zip(low, opt, high, strict=True)
            ):
                return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> ITimingCache:
        return ITimingCache(bytes(blob))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        del ignore_mismatch
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache


class Builder:
    def __init__(self, trt: FakeTensorRT, logger: ILogger) -> None:
        self.trt, self.logger = trt, logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(self.trt, int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        config = IBuilderConfig()
        config.flags.add(self.trt.BuilderFlag.TF32)  # on by default (BuilderFlag.TF32)
        return config

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _error(self, msg: str) -> None:
        self.logger.log(Severity.ERROR, msg)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        precision_flags = {f for f in config.flags if f.name in ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4")}
        if network.strongly_typed and precision_flags:
            self._error(
                f"BuilderFlag {sorted(f.name for f in precision_flags)} cannot be used with a strongly typed network"
            )
            return None
        profiles: list[dict[str, list[list[int]]]] = []
        dynamic = [t for t in network.inputs if -1 in t.shape]
        if dynamic and not config.profiles:
            self._error("Network has dynamic or shape inputs, but no optimization profile has been defined.")
            return None
        for profile in config.profiles:
            for t in dynamic:
                if t.name not in profile.shapes:
                    self._error(f"optimization profile is missing values for dynamic input {t.name}")
                    return None
                for s in profile.shapes[t.name]:
                    if len(s) != len(t.shape) or any(d not in (-1, v) for d, v in zip(t.shape, s, strict=True)):
                        self._error(f"profile shape {s} of {t.name} does not match its dims {t.shape}")
                        return None
            profiles.append({k: [list(s) for s in v] for k, v in profile.shapes.items()})
        weak_fp16 = any(f.name == "FP16" for f in config.flags)
        layers = []
        for layer in network.layers:
            dtype = layer["qdq"] or ("Half" if weak_fp16 else layer["float"])
            layers.append({"name": layer["name"], "type": layer["type"], "dtype": dtype})
        plan = {
            "fake_tensorrt_plan": 1,
            "version": self.trt.__version__,
            "onnx": network.onnx_path,
            "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network.inputs],
            "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network.outputs],
            "profiles": profiles,
            "strongly_typed": network.strongly_typed,
            "flags": sorted(f.name for f in config.flags if f.name != "TF32"),
            "tf32": any(f.name == "TF32" for f in config.flags),
            "layers": layers,
            "verbosity": ProfilingVerbosity(config.profiling_verbosity).name,
        }
        self.trt.builds.append(plan)
        return json.dumps(plan).encode()


class Runtime:
    def __init__(self, trt: FakeTensorRT, logger: ILogger) -> None:
        self.trt, self.logger = trt, logger

    def deserialize_cuda_engine(self, blob: bytes) -> ICudaEngine | None:
        try:
            plan = json.loads(bytes(blob))
        except (ValueError, UnicodeDecodeError):
            self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: the plan is not a TensorRT engine")
            return None
        if plan.get("version") != self.trt.__version__:
            self.logger.log(
                Severity.ERROR,
                f"The engine plan file is not compatible with this version of TensorRT, expecting library version "
                f"{self.trt.__version__} got {plan.get('version')}",
            )
            return None
        return ICudaEngine(self.trt, plan)


class ICudaEngine:
    def __init__(self, trt: FakeTensorRT, plan: dict[str, Any]) -> None:
        self.trt, self.plan = trt, plan
        self.io = {n: (TensorIOMode.INPUT, tuple(s), DataType[d]) for n, s, d in plan["inputs"]}
        self.io |= {n: (TensorIOMode.OUTPUT, tuple(s), DataType[d]) for n, s, d in plan["outputs"]}
        self.names = list(self.io)
        self.contexts: list[IExecutionContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self.plan["profiles"]))

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.io[name][0] if name in self.io else TensorIOMode.NONE

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io[name][1]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.io[name][2]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if self.get_tensor_mode(name) != TensorIOMode.INPUT:
            msg = f"{name} is not an input tensor"
            raise ValueError(msg)
        if not self.plan["profiles"]:  # the default profile of a static engine: its own shape
            return [self.io[name][1]] * 3
        return [tuple(s) for s in self.plan["profiles"][profile_index][name]]

    def create_execution_context(self) -> IExecutionContext:
        context = IExecutionContext(self)
        self.contexts.append(context)
        return context

    def create_engine_inspector(self) -> IEngineInspector:
        return IEngineInspector(self)

    def serialize(self) -> bytes:
        return json.dumps(self.plan).encode()


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.streams: list[int] = []  # the stream of every execute_async_v3, in order

    def _error(self, msg: str) -> None:
        self.engine.trt.log(Severity.ERROR, msg)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        engine = self.engine
        dims = tuple(int(d) for d in shape)
        if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            self._error(f"setInputShape: {name} is not an input tensor")
            return False
        static = engine.get_tensor_shape(name)
        low, _opt, high = engine.get_tensor_profile_shape(name, 0)
        if len(dims) != len(static) or any(s not in (-1, d) for s, d in zip(static, dims, strict=True)):
            self._error(f"setInputShape: {dims} does not match the dims {static} of {name}")
            return False
        if any(not a <= d <= b for d, a, b in zip(dims, low, high, strict=True)):
            self._error(f"setInputShape: {dims} is outside profile 0 [{low}, {high}] of {name}")
            return False
        self.shapes[name] = dims
        return True

    def _inputs_set(self) -> bool:
        engine = self.engine
        return all(
            -1 not in engine.get_tensor_shape(n) or n in self.shapes
            for n in engine.names
            if engine.get_tensor_mode(n) == TensorIOMode.INPUT
        )

    def _input_shapes(self) -> dict[str, tuple[int, ...]]:
        engine = self.engine
        names = [n for n in engine.names if engine.get_tensor_mode(n) == TensorIOMode.INPUT]
        return {n: self.shapes.get(n, engine.get_tensor_shape(n)) for n in names}

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        engine = self.engine
        if engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self.shapes.get(name, engine.get_tensor_shape(name))
        static = engine.get_tensor_shape(name)
        if -1 not in static:
            return static
        if not self._inputs_set():
            return static  # -1 until every dynamic input shape is specified
        return self.engine.trt.output_shapes(engine.plan["onnx"], self._input_shapes())[name]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine.io or not int(memory):
            self._error(f"setTensorAddress: bad tensor {name!r} or null address")
            return False
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        engine, trt = self.engine, self.engine.trt
        if not self._inputs_set():
            self._error("enqueueV3: not all input shapes are specified")
            return False
        missing = [n for n in engine.names if n not in self.addresses]
        if missing:
            self._error(f"enqueueV3: no address set for {missing}")
            return False
        feeds = {}
        for name, shape in self._input_shapes().items():
            dtype = np.dtype(nptype(engine.get_tensor_dtype(name)))
            feeds[name] = trt.read(self.addresses[name], shape, dtype, int(stream_handle)).copy()
        outputs = trt.run_onnx(engine.plan["onnx"], feeds)
        for name, value in outputs.items():
            dtype = np.dtype(nptype(engine.get_tensor_dtype(name)))
            if not trt.write(self.addresses[name], np.ascontiguousarray(value, dtype)):
                self._error(f"enqueueV3: output {name} does not fit the memory bound to it")
                return False
        self.streams.append(int(stream_handle))
        return True


class IEngineInspector:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.execution_context: IExecutionContext | None = None

    def get_engine_information(self, format: LayerInformationFormat) -> str:
        del format
        plan, v11 = self.engine.plan, self.engine.trt.major >= 11
        if plan["verbosity"] != "DETAILED":
            return json.dumps({"Layers": [la["name"] for la in plan["layers"]]})
        layers = []
        for la in plan["layers"]:
            tensor = {"Name": f"{la['name']}_in"}
            if v11:  # TensorRT 11 schema: DataType and Format apart
                tensor |= {"DataType": la["dtype"], "Format": "Row major linear"}
            else:
                tensor["Format/Datatype"] = f"Row major linear {la['dtype']} format"
            layers.append({"Name": la["name"], "LayerType": la["type"], "Inputs": [tensor], "Outputs": []})
        return json.dumps({"Layers": layers})


class CudaMemory:
    """Real device memory for the double's "execution" on a GPU machine (``cuda.bindings.runtime``).

    ``read`` first waits for the stream the work was queued on (so the engine's async upload has
    landed), then copies device -> host; ``write`` copies host -> device synchronously, before the
    engine's download is queued behind it on the same stream.
    """

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def _ok(self, result: Any) -> None:
        err = result[0] if isinstance(result, tuple) else result
        if err != self.rt.cudaError_t.cudaSuccess:
            msg = f"CUDA error {err}"
            raise RuntimeError(msg)

    def read(self, ptr: int, nbytes: int, stream: int) -> np.ndarray:
        self._ok(self.rt.cudaStreamSynchronize(stream))
        out = np.empty(nbytes, np.uint8)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpy(out.ctypes.data, ptr, nbytes, kind))
        return out

    def write(self, ptr: int, value: np.ndarray) -> bool:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpy(ptr, value.ctypes.data, value.nbytes, kind))
        return True


class FakeTensorRT(ModuleType):
    """Stands in for the ``tensorrt`` module through ``yoloquant._optional.substitute``.

    Args:
        version: ``__version__``; 11.x drops the precision builder flags.
        memory: The ``FakeCudart`` whose allocations hold the tensors (addresses are read and written
            only inside its live allocations), or a :class:`CudaMemory` to run on real device memory.
    """

    def __init__(self, version: str = "10.16.1", *, memory: Any = None) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.major = int(version.split(".", maxsplit=1)[0])
        self.memory = memory
        self.builds: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._sessions: dict[str, Any] = {}
        self._shapes: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}
        self.ILogger, self.Logger, self.DataType, self.TensorIOMode = ILogger, Logger, DataType, TensorIOMode
        self.MemoryPoolType, self.ProfilingVerbosity = MemoryPoolType, ProfilingVerbosity
        self.LayerInformationFormat, self.nptype = LayerInformationFormat, nptype
        self.IOptimizationProfile, self.ICudaEngine, self.IExecutionContext = (
            IOptimizationProfile,
            ICudaEngine,
            IExecutionContext,
        )
        flags = ["TF32", "REFIT", "SPARSE_WEIGHTS", "STRIP_PLAN"]
        if self.major < 11:  # removed in 11.x (migration guide, "Removed Python APIs")
            flags += ["FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS"]
            self.NetworkDefinitionCreationFlag = enum.IntEnum(
                "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
            )
        else:
            self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
        self.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
        self.OnnxParser = OnnxParser
        self.Builder: Callable[[ILogger], Builder] = lambda logger: Builder(self, logger)
        self.Runtime: Callable[[ILogger], Runtime] = lambda logger: Runtime(self, logger)

    def log(self, severity: Severity, msg: str) -> None:
        self.errors.append(msg)

    # --- memory: FakeCudart's host allocations, or real device memory (CudaMemory) -----------------
    def read(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype[Any], stream: int = 0) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if isinstance(self.memory, CudaMemory):
            return self.memory.read(ptr, nbytes, stream).view(dtype).reshape(shape)
        if self.memory is not None and not self.memory.inside(ptr, nbytes):
            msg = f"fake TensorRT read {nbytes} bytes at {ptr:#x}, outside every live allocation"
            raise MemoryError(msg)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype).reshape(shape)

    def write(self, ptr: int, value: np.ndarray) -> bool:
        if isinstance(self.memory, CudaMemory):
            return self.memory.write(ptr, value)
        if self.memory is not None and not self.memory.inside(ptr, value.nbytes):
            return False
        ctypes.memmove(ptr, value.ctypes.data, value.nbytes)
        return True

    # --- the model ------------------------------------------------------------------------------
    def session(self, onnx_path: str) -> Any:
        if onnx_path not in self._sessions:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._sessions[onnx_path] = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        return self._sessions[onnx_path]

    def run_onnx(self, onnx_path: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session(onnx_path)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    def output_shapes(self, onnx_path: str, inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Output shapes for these input shapes (TensorRT's shape inference, here: one ORT run, cached)."""
        key = (onnx_path, json.dumps(sorted(inputs.items())))
        if key not in self._shapes:
            session = self.session(onnx_path)
            dtypes = {i.name: np.float16 if "float16" in i.type else np.float32 for i in session.get_inputs()}
            feeds = {n: np.zeros(s, dtypes.get(n, np.float32)) for n, s in inputs.items()}
            self._shapes[key] = {k: tuple(v.shape) for k, v in self.run_onnx(onnx_path, feeds).items()}
        return self._shapes[key]
