"""Fault injection on a run's inputs: bad labels, bad datasets, plans that cannot work, bad images for predict.

Every case asserts the error type, that the message names the input (``file:line`` for a label line) and the
fix, and that nothing was written: a plan that fails a check fails in ``run()``'s validation, in well under
2 s on the bundled assets, before export, calibration or quantization, and leaves no file in its out folder.
The CLI cases run ``sys.executable -m yoloquant`` and expect exit 2 with one line on stderr and no traceback.

Bad datasets are built in ``tmp_path`` from 3 images of assets/coco64 with rewritten labels. The only
expensive fixture is the session's one ONNX export (tests/conftest.py), for the ONNX and predict cases.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from yoloquant import ConfigError, DataError, ExportError, MissingDependencyError, QuantPipeline
from yoloquant.artifacts import ModelInfo
from yoloquant.data.datasets import load_dataset
from yoloquant.detections import Detections
from yoloquant.testing import CallbackEngine

ROOT = Path(__file__).resolve().parents[2]
COCO64 = ROOT / "assets" / "coco64"
PT = ROOT / "assets" / "weights" / "yolov8n.pt"
NAMES80 = {i: f"class{i}" for i in range(80)}
FAST_S = 2.0  # a failing check takes less than this on the bundled assets


def make_set(root: Path, labels: dict[int, str] | None = None, *, n: int = 3, with_labels: bool = True) -> Path:
    """``root/images`` with the first ``n`` coco64 images and ``root/labels`` (the originals, or ``labels[i]``)."""
    images = sorted((COCO64 / "images").glob("*.jpg"))[:n]
    (root / "images").mkdir(parents=True)
    if with_labels:
        (root / "labels").mkdir()
    for i, image in enumerate(images):
        shutil.copyfile(image, root / "images" / image.name)
        if with_labels:
            text = (labels or {}).get(i)
            source = COCO64 / "labels" / f"{image.stem}.txt"
            (root / "labels" / f"{image.stem}.txt").write_text(source.read_text() if text is None else text)
    return root / "images"


def label_file(images: Path, index: int) -> Path:
    return images.parent / "labels" / f"{sorted(images.glob('*.jpg'))[index].stem}.txt"


def write_yaml(root: Path, images: Path, names: int = 80) -> Path:
    yaml = root / "data.yaml"
    lines = [f"val: {images}", "names:", *(f"  {i}: c{i}" for i in range(names))]
    yaml.write_text("\n".join(lines) + "\n")
    return yaml


def assert_fails_fast(plan: QuantPipeline, out: Path, error: type[Exception], *needles: str) -> str:
    """``plan.run(out)`` raises ``error`` in < FAST_S with every needle in the message, and writes nothing."""
    start = time.perf_counter()
    with pytest.raises(error) as info:
        plan.run(out)
    seconds = time.perf_counter() - start
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert seconds < FAST_S, f"the check took {seconds:.2f} s"
    assert not out.exists() or not any(out.rglob("*")), f"left {list(out.rglob('*'))}"
    return message


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
    cmd = [sys.executable, "-m", "yoloquant", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def assert_cli_error(proc: subprocess.CompletedProcess[str], out: Path, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("yoloquant: error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert not out.exists() or not any(out.rglob("*"))


def fp32_eval(model: Path, source: Path) -> QuantPipeline:
    """The cheapest plan that evaluates: FP32 only, no benchmark."""
    return QuantPipeline.from_ultralytics(model).evaluate(source)


# --- part 2: label checks that cannot be skipped -----------------------------------------------------------


def test_class_80_in_a_plain_folder_is_refused_before_work(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {1: "80 0.5 0.5 0.2 0.2\n"})
    where = f"{label_file(images, 1)}:1"
    assert_fails_fast(fp32_eval(PT, images), tmp_path / "out", DataError, where, "out of range for 80", "fix the label")


def test_class_80_in_a_plain_folder_through_the_cli(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "0 0.5 0.5 0.2 0.2\n80 0.5 0.5 0.2 0.2\n"})
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--model", str(PT), "--eval", str(images), "--out", str(out), "--precision", "fp32", "--no-bench"
    )
    assert_cli_error(proc, out, f"{label_file(images, 0)}:2", "class id 80", "valid: 0-79")


def test_class_out_of_the_yaml_names_is_refused(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "0 0.5 0.5 0.2 0.2\n", 1: "2 0.5 0.5 0.2 0.2\n", 2: "3 0.5 0.5 0.2 0.2\n"})
    yaml = write_yaml(tmp_path, images, names=3)
    with pytest.raises(DataError, match=r"out of range for 3 class names") as info:
        load_dataset(yaml)
    assert f"{label_file(images, 2)}:1" in str(info.value)


def test_coordinate_above_one_is_refused_with_file_line(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.2 0.2\n"})
    message = assert_fails_fast(
        fp32_eval(PT, images), tmp_path / "out", DataError, f"{label_file(images, 0)}:2", "1.2", "outside [0, 1]"
    )
    assert "divide" in message and "width" in message  # the fix


def test_negative_coordinate_is_refused(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {1: "5 -0.05 0.5 0.2 0.2\n"})
    with pytest.raises(DataError, match=r"coordinate -0.05 .* outside \[0, 1\]") as info:
        load_dataset(images, names=NAMES80)
    assert f"{label_file(images, 1)}:1" in str(info.value)


def test_pixel_coordinates_through_a_yaml_are_refused(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "0 320 240 100 80\n"})
    yaml = write_yaml(tmp_path, images)
    with pytest.raises(DataError, match=r"pixel coordinates\? divide them by the image's width and height"):
        load_dataset(yaml)


def test_polygon_point_outside_the_image_is_refused(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {2: "0 0.1 0.1 0.5 0.1 1.5 0.9\n"})
    with pytest.raises(DataError, match=r"coordinate 1.5") as info:
        load_dataset(images, names=NAMES80)
    assert f"{label_file(images, 2)}:1" in str(info.value)


def test_coordinate_within_tolerance_is_clipped_not_refused(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "0 0.9 0.5 0.2 0.2\n"}, n=1)
    label_file(images, 0).write_text("0 1.0005 0.5 0.0 1.0004\n")
    gt = load_dataset(images, names=NAMES80).labels[0]  # type: ignore[index]
    h, w = gt.shape
    assert gt.boxes[0].tolist() == pytest.approx([w, -0.0, w, h])  # cx, h clipped to 1: the box stays in the image


def test_non_number_and_short_lines_keep_naming_file_and_line(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "0 0.5 0.5 0.2 0.2\nperson 0.5 0.5 0.2 0.2\n", 1: "0 0.5 0.5 0.2\n"})
    with pytest.raises(DataError, match=r"non-number") as info:
        load_dataset(images, names=NAMES80)
    assert f"{label_file(images, 0)}:2" in str(info.value)
    label_file(images, 0).write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"expected 5 values") as info:
        load_dataset(images, names=NAMES80)
    assert f"{label_file(images, 1)}:1" in str(info.value)


def test_all_empty_labels_refuse_an_map_before_work(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "", 1: "\n", 2: ""})
    assert_fails_fast(
        fp32_eval(PT, images), tmp_path / "out", DataError, "all 3 selected images have no boxes", "mAP would be 0"
    )


def test_all_empty_labels_through_the_cli(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "", 1: "", 2: ""})
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--model", str(PT), "--eval", str(images), "--out", str(out), "--precision", "fp32", "--no-bench"
    )
    assert_cli_error(proc, out, str(images), "3 label files empty", "check that the labels/ folder")


def test_labels_folder_without_matching_files_is_refused(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds")
    for f in (images.parent / "labels").iterdir():
        f.rename(f.with_name("other-" + f.name))  # a labels/ folder whose names do not match the images
    assert_fails_fast(fp32_eval(PT, images), tmp_path / "out", DataError, "0 label files empty, 3 missing")


def test_some_empty_labels_are_background_images(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", {0: "", 2: ""})
    data = load_dataset(images, names=NAMES80)
    assert data.require_boxes(NAMES80) is data
    assert [len(gt) for gt in data.labels or ()] == [0, len(data.labels[1]), 0]  # type: ignore[index]
    assert len(data.labels[1]) > 0  # type: ignore[index]


def test_eval_folder_without_labels_fails_before_work(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", with_labels=False)
    assert_fails_fast(
        fp32_eval(PT, images), tmp_path / "out", DataError, str(images), "has no labels", "labels/ folder"
    )


def test_eval_folder_without_labels_through_the_cli(tmp_path: Path) -> None:
    images = make_set(tmp_path / "ds", with_labels=False)
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--model", str(PT), "--calib", str(images), "--calib-images", "2", "--eval", str(images),
        "--out", str(out), "--no-bench",
    )  # fmt: skip
    assert_cli_error(proc, out, str(images), "has no labels")


def test_evaluate_api_checks_classes_against_the_engine_names(tmp_path: Path) -> None:
    from yoloquant.eval import evaluate

    images = make_set(tmp_path / "ds", {1: "80 0.5 0.5 0.2 0.2\n"})
    data = load_dataset(images)  # no names: the folder alone cannot know the range
    engine = CallbackEngine(lambda x: [np.zeros((x.shape[0], 84, 8400), np.float32)], ModelInfo(names=NAMES80))
    with pytest.raises(DataError, match=r"class id 80 .* out of range for the model's 80 classes") as info:
        evaluate(engine, data, progress=False)
    assert str(label_file(images, 1)) in str(info.value) and "names=model.info.names" in str(info.value)
    assert engine.calls == 0  # refused before any inference


def test_evaluate_api_refuses_a_set_without_boxes(tmp_path: Path) -> None:
    from yoloquant.eval import evaluate

    data = load_dataset(make_set(tmp_path / "ds", {0: "", 1: "", 2: ""}))
    engine = CallbackEngine(lambda x: [np.zeros((x.shape[0], 84, 8400), np.float32)], ModelInfo(names=NAMES80))
    with pytest.raises(DataError, match=r"no boxes .* mAP would be 0"):
        evaluate(engine, data, progress=False)
    assert engine.calls == 0


def _coco(tmp_path: Path, edit: dict[str, object], *, overflow: bool = False) -> Path:
    """A copy of the coco64 json with one annotation edited (``overflow``: its box past the image's right edge)."""
    source = json.loads((COCO64 / "annotations" / "instances_coco64.json").read_text())
    ann = next(a for a in source["annotations"] if not a.get("iscrowd"))
    width = next(im["width"] for im in source["images"] if im["id"] == ann["image_id"])
    ann.update(edit, **({"bbox": [width - 10, 10, 100, 20]} if overflow else {}))
    path = tmp_path / "annotations" / "instances_coco64.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(source))
    (tmp_path / "images").symlink_to(COCO64 / "images")
    return path


def test_coco_json_box_outside_its_image_is_refused(tmp_path: Path) -> None:
    path = _coco(tmp_path, {"id": 991}, overflow=True)
    with pytest.raises(DataError, match=r"annotation id 991 .* outside the image") as info:
        load_dataset(path)
    assert str(path) in str(info.value) and "not normalized, not x1 y1 x2 y2" in str(info.value)


def test_coco_json_unknown_category_is_refused(tmp_path: Path) -> None:
    path = _coco(tmp_path, {"id": 992, "category_id": 999})
    with pytest.raises(DataError, match=r"annotation id 992 .* category_id 999, which is not in the json's categories"):
        load_dataset(path)


# --- part 3: the whole plan checked before any work ----------------------------------------------------------


def test_missing_openvino_fails_before_work(tmp_path: Path, coco64_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # the openvino backend is OpenVINO's own runtime
    plan = fp32_eval(PT, coco64_yaml).quantize("fp32", backend="openvino")
    assert_fails_fast(
        plan, tmp_path / "out", MissingDependencyError, "OpenVINO is not installed", "yoloquant[openvino]"
    )


def test_missing_cuda_provider_fails_before_work_through_the_cli(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    plan = QuantPipeline.from_ultralytics(PT).quantize("fp16", backend="ort-cuda")
    assert_fails_fast(plan, tmp_path / "api", MissingDependencyError, "CUDAExecutionProvider", "yoloquant[gpu]")
    out = tmp_path / "out"
    proc = run_cli("run", "--model", str(PT), "--precision", "fp32,fp16", "--backend", "ort-cuda", "--out", str(out))
    assert_cli_error(proc, out, "CUDAExecutionProvider")


def test_batch_8_on_a_fixed_batch_onnx_fails_before_work(tmp_path: Path, yolov8n_onnx: Path) -> None:
    plan = QuantPipeline.from_onnx(yolov8n_onnx).benchmark(batch_sizes=(1, 8))
    message = assert_fails_fast(plan, tmp_path / "out", ConfigError, "fixed batch of 1", "cannot run batch 8")
    assert "--batch-sizes 1" in message and "dynamic=True" in message and "--model yolov8n.pt" in message
    out = tmp_path / "cli"
    proc = run_cli(
        "run", "--model", str(yolov8n_onnx), "--precision", "fp32", "--batch-sizes", "1,8", "--iterations", "5",
        "--out", str(out),
    )  # fmt: skip
    assert_cli_error(proc, out, "fixed batch of 1", "--batch-sizes 1")


def test_brevitas_from_an_onnx_fails_before_work(tmp_path: Path, yolov8n_onnx: Path, coco64_images: Path) -> None:
    pytest.importorskip("brevitas")
    plan = QuantPipeline.from_onnx(yolov8n_onnx).calibrate(coco64_images, num_images=2).quantize("w4a16")
    assert_fails_fast(plan, tmp_path / "out", ConfigError, "Brevitas", "PyTorch model", "--model yolov8n.pt")
    out = tmp_path / "cli"
    proc = run_cli(
        "run", "--model", str(yolov8n_onnx), "--precision", "fp32,w4a16", "--calib", str(coco64_images),
        "--calib-images", "2", "--no-bench", "--out", str(out),
    )  # fmt: skip
    assert_cli_error(proc, out, "Brevitas", ".pt")


def _tiny_onnx(path: Path, *, names: bool = True, task: str = "detect") -> Path:
    """A valid ONNX graph that is not a YOLO head: an Identity from images to output0."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 640, 640])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "not-yolo", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"imgsz": "[640, 640]", "task": task, "stride": "32"} | ({"names": "{0: 'a', 1: 'b'}"} if names else {})
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_non_yolo_graph_fails_before_work(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "identity.onnx")
    plan = QuantPipeline.from_onnx(model)
    assert_fails_fast(
        plan, tmp_path / "out", ExportError, "not a YOLO detection graph", "[1, 3, 640, 640]", "yolo export"
    )


def test_onnx_without_ultralytics_metadata_fails_before_work(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "plain.onnx", names=False)
    out = tmp_path / "out"
    assert_fails_fast(QuantPipeline.from_onnx(model), out, ConfigError, "no 'names' metadata", "yolo export")
    proc = run_cli("run", "--model", str(model), "--precision", "fp32", "--out", str(out))
    assert_cli_error(proc, out, "no 'names' metadata")


def test_an_unsupported_task_onnx_fails_before_work(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "obb.onnx", task="obb")  # segment and pose are supported since #20
    assert_fails_fast(QuantPipeline.from_onnx(model), tmp_path / "out", ExportError, "'obb' model", "detection")


def test_checkpoint_names_are_read_without_torch() -> None:
    from yoloquant.config import ExportConfig
    from yoloquant.preflight import model_facts

    facts = model_facts(PT, ExportConfig())
    names = load_dataset(ROOT / "assets" / "coco64.yaml").names  # Ultralytics' COCO names, independently listed
    assert facts.names == names and facts.task == "detect" and facts.batch == 1
    assert model_facts(PT, ExportConfig(dynamic=True)).batch is None


# --- part 5: predict() and Detections -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(yolov8n_onnx: Path):  # type: ignore[no-untyped-def]
    from yoloquant.artifacts import OnnxModel
    from yoloquant.backends.ort.engine import OrtEngineBuilder

    with OrtEngineBuilder().build(OnnxModel.load(yolov8n_onnx)) as e:
        yield e


@pytest.fixture(scope="module")
def bgr() -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(COCO64 / "images" / "000000000009.jpg"))
    assert image is not None
    return np.asarray(image)


def test_predict_refuses_none_with_the_imread_hint(engine, bgr: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess import predict

    with pytest.raises(DataError, match=r"the image is None.*cv2.imread returns None.*check the path"):
        predict(engine, None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"image 1 is None"):
        predict(engine, [bgr, None])  # type: ignore[list-item]


def test_predict_reads_a_path_string(engine, bgr: np.ndarray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess import predict

    path = COCO64 / "images" / "000000000009.jpg"
    from_path, from_array = predict(engine, str(path))[0], predict(engine, bgr)[0]
    assert len(from_path) == len(from_array) > 0
    np.testing.assert_array_equal(from_path.boxes, from_array.boxes)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match=r"nope.jpg.*check that the file exists"):
        predict(engine, [str(missing)])


def test_predict_converts_grayscale(engine, bgr: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    cv2 = pytest.importorskip("cv2")
    from yoloquant.postprocess import predict

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    reference = predict(engine, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))[0]  # OpenCV's own conversion
    got = predict(engine, gray)[0]
    assert len(got) == len(reference) > 0
    np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-4)


def test_predict_refuses_an_empty_image_and_other_layouts(engine) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess import predict

    with pytest.raises(DataError, match=r"empty \(shape \(0, 0, 3\)\).*at least 1x1"):
        predict(engine, np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(DataError, match=r"shape \(3, 480, 640\).*not CHW"):
        predict(engine, np.zeros((3, 480, 640), np.uint8))


def test_predict_scales_a_float_image_in_0_1(engine, bgr: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess import predict

    reference = predict(engine, bgr)[0]
    got = predict(engine, bgr.astype(np.float32) / 255.0)[0]
    assert len(got) == len(reference) > 0  # not 0 detections
    np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-3)
    with pytest.raises(DataError, match=r"float32 with values 0..1000.*np.clip"):
        predict(engine, bgr.astype(np.float32) * (1000 / 255))
    with pytest.raises(ConfigError, match=r"conf=1.5"):
        predict(engine, bgr, conf=1.5)


def test_detections_carry_the_model_class_names(engine, bgr: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess import predict

    dets = predict(engine, bgr)[0]
    coco = load_dataset(ROOT / "assets" / "coco64.yaml").names or {}
    assert dets.labels == [coco[int(c)] for c in dets.classes]
    assert "bowl" in dets.labels  # image 9 is a lunch box of bowls and broccoli
    text = repr(engine)
    for part in (
        "backend=ort-cpu",
        "CPUExecutionProvider",
        Path(engine.model_path).name,
        "imgsz=640x640",
        "batch=1",
    ):
        assert part in text


def test_draw_puts_boxes_and_labels_on_a_copy() -> None:
    from yoloquant.detections import _PALETTE

    image = np.full((120, 160, 3), 40, np.uint8)
    dets = Detections(
        np.array([[20, 40, 100, 110]], np.float32), np.array([0.87], np.float32), np.array([2]), names={2: "car"}
    )
    out = dets.draw(image, thickness=2)
    assert out is not image and (image == 40).all()  # the input is untouched
    assert tuple(out[75, 20]) == _PALETTE[2] and tuple(out[110, 60]) == _PALETTE[2]  # left and bottom edges
    assert (out[75, 60] == 40).all() and (out[5, 150] == 40).all()  # inside the box and far away: unchanged
    label_band = out[20:40, 20:100]
    tag = (label_band == _PALETTE[2]).all(axis=2)
    ink = ~tag & (label_band != 40).any(axis=2)
    assert tag.mean() > 0.3 and ink.sum() > 20  # text drawn on a filled tag above the box
    with pytest.raises(DataError, match=r"is None"):
        dets.draw(None)  # type: ignore[arg-type]


# --- part 6: newcomer friction ------------------------------------------------------------------------------


def test_cli_console_turns_warnings_into_one_line(caplog: pytest.LogCaptureFixture) -> None:
    from yoloquant._console import console

    with caplog.at_level(logging.WARNING, logger="yoloquant"), console():
        warnings.warn("something to know\nsecond line", UserWarning, stacklevel=1)
        warnings.warn("latency of 'fp32' at batch 1 is noisy (IQR/median 34%)", UserWarning, stacklevel=1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something to know"]  # no source location, no code line; the table shows noisy latency


def test_library_chatter_goes_to_the_debug_log(capsys: pytest.CaptureFixture[str]) -> None:
    from yoloquant.export.ultralytics import _info_hidden
    from yoloquant.quantize.ort_static import prints_to_log

    with prints_to_log():
        print("Collecting tensor data and making histogram ...")
    logger = logging.getLogger("ultralytics")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with _info_hidden():
            logger.info("Ultralytics 8.4 🚀 ... yolo predict model=/tmp/.export-x/yolov8n.onnx")
            logger.warning("a real warning")
        logger.info("after the export")
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().out == ""
    shown = [r.getMessage() for r in records]  # Ultralytics' own filter prefixes "WARNING ⚠️" to warnings
    assert len(shown) == 2 and shown[0].endswith("a real warning") and shown[1] == "after the export"
