"""Typed artifacts that pipeline stages hand to each other.

``OnnxModel`` (export) -> ``QdqModel`` (quantize) -> an :class:`~yoloquant.protocols.Engine` (build);
``CalibrationSet`` feeds the quantizer. They are frozen: a stage never mutates its input.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoloquant._optional import require
from yoloquant.config import HeadType, Precision
from yoloquant.errors import ConfigError

__all__ = ["CalibrationSet", "ModelInfo", "OnnxModel", "QdqModel", "file_sha256"]

META_PREFIX = "yoloquant."


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What a runtime needs to know about a YOLO model, kept in the ONNX metadata.

    ``task`` is yoloquant's ``yoloquant.task`` key where the export wrote one, else Ultralytics' ``task``,
    else ``"detect"`` (files exported before either key existed).

    Attributes:
        names: Class index -> class name.
        imgsz: Input (height, width).
        stride: Largest stride of the model (letterbox padding multiple).
        task: The :mod:`yoloquant.tasks` task, which picks the decoder and the metrics: ``"detect"``.
        source_task: The task the model's outputs are laid out for (Ultralytics' ``task``); it differs from
            ``task`` when a segmentation or pose model runs as ``detect`` (its extra output channels are ignored).
        head: Output head type, which decides how outputs are decoded.
        kpt_shape: A pose model's ``(keypoints, values per keypoint)`` (Ultralytics' ``kpt_shape`` metadata,
            ``(17, 3)`` for COCO: x, y, visibility); None for other tasks.
        input_name: Name of the image input tensor.
        dynamic_batch: Whether the batch dimension is symbolic.
    """

    names: dict[int, str] = field(repr=False)
    imgsz: tuple[int, int] = (640, 640)
    stride: int = 32
    task: str = "detect"
    source_task: str = "detect"
    head: HeadType = HeadType.DFL
    kpt_shape: tuple[int, int] | None = None
    input_name: str = "images"
    dynamic_batch: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (an engine's sidecar): names keyed by str, tuples as lists, the head by value."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, HeadType):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = {str(k): v for k, v in value.items()} if f.name == "names" else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        """The inverse of :meth:`to_dict`; other keys are ignored, missing ones take their defaults.

        ``source_task`` defaults to ``task`` (sidecars written before it existed).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        values["names"] = {int(k): str(v) for k, v in data["names"].items()}
        values.setdefault("source_task", values.get("task", "detect"))
        if "head" in values:
            values["head"] = HeadType(values["head"])
        return cls(**values)

    @classmethod
    def from_onnx(cls, path: Path) -> ModelInfo:
        """Read the model info from an ONNX file's metadata and graph."""
        onnx = require("onnx")
        model = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        if "names" not in meta:
            msg = (
                f"{path} has no 'names' metadata, so it was not exported by Ultralytics or yoloquant; "
                "export it with QuantPipeline.from_ultralytics() or `yolo export format=onnx`"
            )
            raise ConfigError(msg)
        names = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        imgsz = tuple(int(v) for v in ast.literal_eval(meta.get("imgsz", "[640, 640]")))
        head_value = meta.get(f"{META_PREFIX}head") or ("end2end" if meta.get("end2end") == "True" else "dfl")
        kpt = ast.literal_eval(meta["kpt_shape"]) if meta.get("kpt_shape") else None
        inp = model.graph.input[0]
        batch_dim = inp.type.tensor_type.shape.dim[0]
        return cls(
            names=names,
            imgsz=(imgsz[0], imgsz[1]),
            stride=int(meta.get("stride", 32)),
            task=meta.get(f"{META_PREFIX}task") or meta.get("task", "detect"),
            source_task=meta.get("task") or meta.get(f"{META_PREFIX}task", "detect"),
            head=HeadType(head_value),
            kpt_shape=(int(kpt[0]), int(kpt[1])) if kpt else None,
            input_name=inp.name,
            dynamic_batch=not batch_dim.HasField("dim_value"),
        )


@dataclass(frozen=True, kw_only=True)
class OnnxModel:
    """An ONNX detector on disk plus what we know about it.

    Attributes:
        checkpoint: The Ultralytics ``.pt`` it was exported from, when known (quantizers that work on the
            PyTorch model, such as Brevitas, need it).
    """

    path: Path
    info: ModelInfo
    precision: Precision = Precision.FP32
    checkpoint: Path | None = None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def sha256(self) -> str:
        return file_sha256(self.path)

    @classmethod
    def load(cls, path: Path | str) -> OnnxModel:
        """Wrap an existing ONNX file exported by Ultralytics or yoloquant."""
        path = Path(path)
        if not path.is_file():
            msg = f"ONNX model {path} does not exist; pass the path of an exported .onnx file"
            raise ConfigError(msg)
        return cls(path=path, info=ModelInfo.from_onnx(path))


@dataclass(frozen=True, kw_only=True)
class QdqModel(OnnxModel):
    """A quantized ONNX model (Q/DQ layout) and how it was made.

    Attributes:
        source: The float model it was quantized from.
        quantizer: Name of the quantizer strategy.
        backend: The backend the model was made for (``ort-cpu``, ``openvino``, ``tensorrt``); None: any.
        format: The graph format: ``qdq`` (Q/DQ pairs), ``qcdq`` (Brevitas: Q, Clip, DQ) or ``fp16``.
        config: The quantizer config as a dict, for the report.
        quantized_nodes / float_nodes: Node names by op type: what was quantized, what stayed float.
        seconds: Wall time of calibration + quantization.
    """

    source: OnnxModel
    quantizer: str
    backend: str | None = None
    format: str = "qdq"
    config: dict[str, Any] = field(default_factory=dict)
    quantized_nodes: dict[str, list[str]] = field(default_factory=dict)
    float_nodes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True, eq=False)
class CalibrationSet:
    """Preprocessed calibration images, stored as letterboxed uint8 NCHW RGB.

    Attributes:
        images: uint8 array ``[N, 3, H, W]`` (RGB, letterboxed like Ultralytics).
        files: Source image paths, in order.
        digest: Content hash of the source images and preprocessing (cache key).
    """

    images: np.ndarray
    files: tuple[Path, ...]
    digest: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int = 1) -> list[np.ndarray]:
        """float32 ``[B, 3, H, W]`` batches scaled to [0, 1], as the model expects."""
        from yoloquant.data.letterbox import normalize_pixels  # yoloquant.data imports this module

        return [normalize_pixels(self.images[i : i + batch_size]) for i in range(0, len(self), batch_size)]
