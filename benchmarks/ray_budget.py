"""The accuracy budget search of YOLOv8n in one process and with its candidates and groups as Ray tasks: wall time
of each, and whether the two give the same steps, chosen groups and model bytes (#17, the budget's part).

Exports the bundled ``.pt``, calibrates on coco64 images 0..N-1 and searches on the labelled images from 32; the
ranking is computed (block groups, 2 proxy images) unless ``--given-ranking K`` hands the search the last K blocks,
head first (no proxy phase: the search's rounds alone). The Ray run starts its own instance of ``--ray-cpus``
CPUs (its start-up counts in its wall time). The one-process run goes first.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/ray_budget.py --calib-images 8 --eval-images 32 --max-map-drop 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

from yoloquant.artifacts import OnnxModel, file_sha256
from yoloquant.config import CalibMethod
from yoloquant.data.calibration import ImageCalibrator
from yoloquant.data.datasets import load_dataset
from yoloquant.decide import budget_search
from yoloquant.decide._ortcache import SharedCalibration
from yoloquant.decide.budget import search_budget
from yoloquant.decide.groups import Granularity, find_groups
from yoloquant.decide.ray_executor import RayExecutor
from yoloquant.decide.sensitivity import SensitivityReport
from yoloquant.export import UltralyticsExporter
from yoloquant.quantize.ort_static import OrtQuantConfig

ROOT = Path(__file__).resolve().parents[1]
QUANT = OrtQuantConfig(calibration_method=CalibMethod.MINMAX)


def _given(model: OnnxModel, calib: Any, work: Path, n: int) -> SensitivityReport:
    shared = SharedCalibration(model, calib, QUANT, work)
    blocks = find_groups(shared.proto, shared.quantizable, Granularity.BLOCK)[-n:][::-1]
    return SensitivityReport.from_order(model, blocks, QUANT.to_dict())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--eval-images", type=int, default=32)
    parser.add_argument("--max-map-drop", type=float, default=0.3)
    parser.add_argument("--given-ranking", type=int, help="search over the last K blocks, no proxy phase")
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args()
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="ray-budget-"))
    model = OnnxModel.load(UltralyticsExporter().export(ROOT / "assets/weights/yolov8n.pt", tmp / "export").path)
    images = ROOT / "assets/coco64/images"
    calibrator = ImageCalibrator(source=images, num_images=args.calib_images, cache_dir=tmp / "c", progress=False)
    calib = calibrator.calibrate(model.info)
    val = load_dataset(ROOT / "assets/coco64.yaml").select(args.eval_images, 32)
    ranking = _given(model, calib, tmp / "rank", args.given_ranking) if args.given_ranking else None
    options: dict[str, Any] = {"max_map_drop": args.max_map_drop, "quant": QUANT, "ranking": ranking}
    options |= {"granularity": "block", "proxy_images": 2}
    start = time.perf_counter()
    here = search_budget(model, calib, val, tmp / "here", **options)
    local_s = time.perf_counter() - start
    batches: list[list[int]] = []
    run = budget_search.Candidates._run

    def recording(self: budget_search.Candidates, jobs: list[Any]) -> Any:
        batches.append([j.k for j in jobs if j.k is not None])
        return run(self, jobs)

    budget_search.Candidates._run = recording  # type: ignore[method-assign]
    env = {"PYTHONPATH": str(ROOT / "src"), "YOLO_OFFLINE": "1"}
    start = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    there = search_budget(model, calib, val, tmp / "ray", executor=RayExecutor(), **options)
    ray_s = time.perf_counter() - start
    ray.shutdown()
    print(
        json.dumps(
            {
                "groups": here.groups_total,
                "steps": [k for k, _ in here.steps],
                "float_groups": len(here.float_groups),
                "local_s": round(local_s, 1),
                "ray_s": round(ray_s, 1),
                "ray_rounds": batches,
                "same_steps": here.steps == there.steps,
                "same_groups": here.float_groups == there.float_groups,
                "same_model_bytes": file_sha256(Path(here.model_path)) == file_sha256(Path(there.model_path)),
            }
        )
    )


if __name__ == "__main__":
    main()
