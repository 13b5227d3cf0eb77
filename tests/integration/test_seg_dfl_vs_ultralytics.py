"""DFL (YOLOv8 / YOLO11) segmentation decode against Ultralytics' own predict of the same ONNX.

There is no real DFL seg checkpoint here, so the model is ``yolov8n-seg.yaml`` with the bundled YOLOv8n's
(fused) weights transplanted into every layer they fit (backbone, neck, box and class branches: real boxes)
and the mask-coefficient branch and prototypes left at their seeded random init. Masks are then arbitrary
but deterministic, which is all a decode comparison needs. Small (320 px, a few bundled images) to stay cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import OnnxModel
from yoloquant.backends.ort.engine import OrtEngineBuilder
from yoloquant.config import ExportConfig
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import normalize_pixels, preprocess
from yoloquant.export import UltralyticsExporter
from yoloquant.postprocess.decode import decode
from yoloquant.postprocess.predict import predict

IMGSZ = 320
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def seg8_onnx(tmp_path_factory: pytest.TempPathFactory, yolov8n_pt: Path) -> OnnxModel:
    from ultralytics import YOLO

    torch.manual_seed(0)
    seg = YOLO("yolov8n-seg.yaml")
    seg.model.fuse()  # the bundled yolov8n.pt is fused (BN folded): fuse so the conv keys and shapes line up
    target = seg.model.state_dict()
    source = YOLO(str(yolov8n_pt)).model.state_dict()
    fits = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    assert len(fits) > 0.8 * len(source)
    seg.model.load_state_dict({**target, **fits})
    out = tmp_path_factory.mktemp("seg8")
    seg.save(out / "yolov8n-seg-transplant.pt")
    return UltralyticsExporter(ExportConfig(imgsz=IMGSZ)).export(out / "yolov8n-seg-transplant.pt", out)


def test_dfl_seg_boxes_and_masks_agree_with_ultralytics_predict(seg8_onnx: OnnxModel, coco64_images: Path) -> None:
    from ultralytics import YOLO

    assert seg8_onnx.info.task == "segment" and seg8_onnx.info.head.value == "dfl"
    files = sorted(coco64_images.glob("*.jpg"))[:4]
    reference = YOLO(str(seg8_onnx.path), task="segment")
    total = 0
    with OrtEngineBuilder().build(seg8_onnx) as engine:
        for file in files:
            (theirs,) = reference.predict(str(file), imgsz=IMGSZ, conf=0.25, verbose=False)
            (ours,) = predict(engine, file)
            n = len(theirs.boxes)
            assert len(ours) == n, file
            if not n:
                continue
            total += n
            order = np.argsort(-theirs.boxes.conf.numpy(), kind="stable")
            np.testing.assert_allclose(ours.boxes, theirs.boxes.xyxy.numpy()[order], atol=1.0)
            assert ours.classes.tolist() == theirs.boxes.cls.numpy()[order].astype(int).tolist()
            # masks over the letterboxed input, where Ultralytics' predict keeps them (retina_masks=False)
            x, _ = preprocess(read_image(file), IMGSZ, mode="predict")
            (raw,) = decode(engine.infer(normalize_pixels(x[None])), engine.info, conf=0.25, multi_label=False)
            assert raw.masks is not None and raw.masks.shape == (n, IMGSZ, IMGSZ)
            agree = (raw.masks == theirs.masks.data.numpy().astype(bool)[order]).mean()
            assert agree > 0.999, (file, agree)  # cv2 and torch bilinear differ only in rounding at logit 0
            assert ours.masks is not None and ours.masks.shape == (n, *theirs.orig_shape)
    assert total >= 5  # real boxes from the transplanted detector: a comparison with something in it
