"""yoloquant: Ultralytics YOLO -> fast quantized inference engines with a measured accuracy cost."""

from __future__ import annotations

__version__ = "0.1.0"
