"""YOLO26 end-to-end pose decode (CPU and torch) against Ultralytics' own predict of the same ONNX.

There is no real YOLO26 pose checkpoint here, so the model is Ultralytics' ``yolo26n-pose.yaml`` (the ``Pose26``
head: one-to-one branch only, ``[B, 300, 6 + 17 * 3]``) with the real YOLO26n-seg's weights transplanted into
every layer they fit (backbone, neck, box and class branches, 80 COCO classes: real boxes and scores) and the
keypoint branch left at its seeded random init. Keypoints are then arbitrary but deterministic, which is all a
decode comparison needs. As tests/integration/test_seg_dfl_vs_ultralytics.py: 320 px, a few bundled images.
Uses ``../shared/data`` (YOLO26n-seg).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import OnnxModel
from yoloquant.backends.ort.engine import OrtEngineBuilder
from yoloquant.config import ExportConfig
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import normalize_pixels, preprocess, scale_boxes, scale_keypoints
from yoloquant.export import UltralyticsExporter
from yoloquant.postprocess.predict import predict

SEG26_PT = Path(__file__).resolve().parents[3] / "shared" / "data" / "weights" / "yolo26n-seg_coco_from_int8ir"
IMGSZ = 320
pytestmark = pytest.mark.skipif(not (SEG26_PT / "yolo26n-seg.pt").exists(), reason="needs ../shared/data (seg)")
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pose26_onnx(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    from ultralytics import YOLO

    torch.manual_seed(0)
    pose = YOLO("yolo26n-pose.yaml")
    pose.model.end2end = True  # built from a yaml the head has both branches: fuse() keeps the one-to-one one
    pose.model.fuse()  # the seg checkpoint is fused (BN folded, one-to-many branch gone): so the keys line up
    seg = YOLO(str(SEG26_PT / "yolo26n-seg.pt"))
    target, source = pose.model.state_dict(), seg.model.state_dict()
    fits = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    assert len(fits) > 0.8 * len(target) and any(".one2one_cv3." in k for k in fits)  # the class branch too
    pose.model.load_state_dict({**target, **fits})
    pose.model.names = seg.names
    out = tmp_path_factory.mktemp("pose26")
    pose.save(out / "yolo26n-pose-transplant.pt")
    return UltralyticsExporter(ExportConfig(imgsz=IMGSZ)).export(out / "yolo26n-pose-transplant.pt", out)


def test_end_to_end_pose_boxes_and_keypoints_agree_with_ultralytics_predict(
    pose26_onnx: OnnxModel, coco64_images: Path
) -> None:
    from ultralytics import YOLO

    from yoloquant.postprocess.gpu import decode_pose_torch

    info = pose26_onnx.info
    assert info.task == "pose" and info.head.value == "end2end" and info.kpt_shape == (17, 3)
    reference = YOLO(str(pose26_onnx.path), task="pose")
    total = 0
    with OrtEngineBuilder().build(pose26_onnx) as engine:
        assert engine.infer(np.zeros((1, 3, IMGSZ, IMGSZ), np.float32))[0].shape == (1, 300, 6 + 51)
        for file in sorted(coco64_images.glob("*.jpg"))[:6]:
            (theirs,) = reference.predict(str(file), imgsz=IMGSZ, conf=0.25, verbose=False)
            boxes, classes = theirs.boxes.xyxy.numpy(), theirs.boxes.cls.numpy().astype(int).tolist()
            points = theirs.keypoints.data.numpy()
            (ours,) = predict(engine, file)
            x, meta = preprocess(read_image(file), IMGSZ, mode="predict")
            raw = [torch.from_numpy(o) for o in engine.infer(normalize_pixels(x[None]))]
            (on_torch,) = decode_pose_torch(raw, info, conf=0.25, multi_label=False)
            assert on_torch.keypoints is not None
            total += len(theirs.boxes)
            mapped = [
                (ours.classes, ours.boxes, ours.keypoints),  # letterbox undone by predict()
                (on_torch.classes, scale_boxes(on_torch.boxes, meta), scale_keypoints(on_torch.keypoints, meta)),
            ]
            for got_classes, got_boxes, got_points in mapped:
                assert got_classes.tolist() == classes, file  # model order: both keep rows above conf as they come
                assert got_points is not None and got_points.shape == points.shape, file
                np.testing.assert_allclose(got_boxes, boxes, atol=1.0)
                np.testing.assert_allclose(got_points[..., :2], points[..., :2], atol=1.0)
                np.testing.assert_allclose(got_points[..., 2], points[..., 2], atol=1e-4)  # visibility
    assert total >= 8  # real boxes from the transplanted detector: a comparison with something in it
