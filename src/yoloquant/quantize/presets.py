"""YOLO precision presets: which nodes of a detector to keep in float, whatever the quantizer.

The node names are derived from the graph's structure with :mod:`yoloquant.quantize.graph`, never
hard-coded, so a preset works on YOLOv8, YOLO11 and YOLO26 of any size:

- ``none``: keep nothing float on purpose; the quantizer quantizes every op it knows.
- ``head``: keep the head's box / class output convs and the whole decode path (DFL softmax and
  projection conv, anchor arithmetic, class sigmoid, end-to-end top-k) float. This is what NNCF
  and Ultralytics' own INT8 exports do: the decode mixes box pixels (0-640) with class scores (0-1).
- ``head+first``: ``head`` plus the stem conv that reads the image.

Example:
    >>> resolve_keep(onnx.load("yolov8n.onnx"), "head")[:1]  # doctest: +SKIP
    ('/model.22/cv2.0/cv2.0.2/Conv',)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from yoloquant.config import parse_enum
from yoloquant.quantize import graph

__all__ = ["KeepPreset", "resolve_keep"]


class KeepPreset(StrEnum):
    """Which parts of a YOLO detector stay in float (high precision) when it is quantized."""

    NONE = "none"
    HEAD = "head"
    HEAD_AND_FIRST = "head+first"


def resolve_keep(model: Any, preset: KeepPreset | str) -> tuple[str, ...]:
    """Names of the nodes ``preset`` keeps float in ``model``, in graph order, without duplicates.

    Args:
        model: An ``onnx.ModelProto`` of a float YOLO detector.
        preset: A :class:`KeepPreset` or its value (``"none"``, ``"head"``, ``"head+first"``).

    Returns:
        Node names; empty for ``none``.

    Raises:
        ConfigError: ``preset`` is not a known preset.
    """
    preset = parse_enum(KeepPreset, preset, option="keep preset")
    if preset is KeepPreset.NONE:
        return ()
    wanted = set(graph.find_head(model).all)
    if preset is KeepPreset.HEAD_AND_FIRST:
        wanted.update(graph.first_convs(model))
    return tuple(n.name for n in model.graph.node if n.name in wanted)
