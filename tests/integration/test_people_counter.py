"""The streaming runner and the people counter on the real model and the bundled video (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from doubles.signals import children_take_ctrl_c

ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT / "assets" / "video" / "one-by-one-person.mp4"
VIDEO_DATA = ROOT.parent / "shared" / "data" / "video"
sys.path.insert(0, str(ROOT / "examples" / "people_counter"))
cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def engine(yolov8n_onnx: Path):  # type: ignore[no-untyped-def]
    from yoloquant.artifacts import OnnxModel
    from yoloquant.backends import build_engine
    from yoloquant.config import Backend

    with build_engine(OnnxModel.load(yolov8n_onnx), Backend.ORT_CPU) as e:
        yield e


def _frames(n: int, start: int = 100) -> list[np.ndarray]:
    """Frames from 100 on: a person is in view there (the video starts empty)."""
    cap = cv2.VideoCapture(str(VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = [cap.read()[1] for _ in range(n)]
    cap.release()
    return out


def test_stream_detections_equal_predict_frame_by_frame(engine) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess.predict import predict
    from yoloquant.stream import StreamRunner, VideoSource

    results = list(StreamRunner(engine, VideoSource(VIDEO, max_frames=6, start=100), conf=0.25))
    expected = predict(engine, _frames(6), conf=0.25)
    assert [r.index for r in results] == list(range(100, 106))
    for r, e in zip(results, expected, strict=True):
        assert r.detections is not None and len(r.detections) == len(e) > 0
        np.testing.assert_allclose(r.detections.boxes, e.boxes, atol=1e-3)
        np.testing.assert_array_equal(r.detections.classes, e.classes)


def test_tiles_find_what_predict_finds_on_the_same_crops(engine) -> None:  # type: ignore[no-untyped-def]
    from yoloquant.postprocess.predict import predict
    from yoloquant.stream import ArraySource, StreamRunner, TileConfig, tile_grid

    frame = _frames(1)[0]
    config = TileConfig(size=432, overlap=0.25)
    (result,) = list(StreamRunner(engine, ArraySource([frame]), tiles=config, conf=0.4, classes=(0,)))
    grid = tile_grid(*frame.shape[:2], config)
    assert len(grid) == 3  # 768 px in 432 px tiles with >= 25% overlap
    per_tile = predict(engine, [frame[y1:y2, x1:x2] for y1, x1, y2, x2 in grid], conf=0.4)
    shifted = [
        d.boxes[d.classes == 0] + np.array([x1, y1, x1, y1]) for d, (y1, x1, _, _) in zip(per_tile, grid, strict=True)
    ]
    found = result.detections
    assert found is not None and len(found) > 0
    for box in found.boxes:  # every merged box is one a tile found, in frame pixels
        assert min(np.abs(np.concatenate(shifted) - box).max(axis=1)) < 1e-3


def test_counter_cli_writes_frames_summary_video_and_tracks(yolov8n_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("trackers")
    from count_people import main

    out = tmp_path
    args = [
        str(VIDEO), "--model", str(yolov8n_onnx), "--start", "100", "--max-frames", "40",
        "--line", "x=384", "--line", "y=216",
        "--zone", "0,0;384,0;384,432;0,432", "--rule", "reference", "--jsonl", str(out / "f.jsonl"),
        "--summary", str(out / "s.json"), "--video", str(out / "a.mp4"), "--mot", str(out / "t.txt"), "--quiet",
    ]  # fmt: skip
    summary = main(args)
    records = [json.loads(line) for line in (out / "f.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(100, 140)) and summary["frames"] == 40
    assert json.loads((out / "s.json").read_text())["counts"] == summary["counts"] == records[-1]["counts"]
    assert summary["tracks"] >= 1 and any(r["tracks"] for r in records)
    cap = cv2.VideoCapture(str(out / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 768
    cap.release()
    reference = VIDEO_DATA / "count_crossings.py"
    if reference.exists():  # the reference implementation of the rule, on the tracks the counter wrote
        proc = subprocess.run(
            [sys.executable, str(reference), str(out / "t.txt"), "768", "432"],
            capture_output=True,
            text=True,
            check=True,
        )
        counts = json.loads(proc.stdout)["counts"]
        assert counts["x384"] == summary["counts"]["x=384"] and counts["y216"] == summary["counts"]["y=216"]


@pytest.mark.slow
@pytest.mark.skipif(not VIDEO_DATA.is_dir(), reason="the MOTChallenge sequences live in ../shared/data/video only")
def test_fp32_counts_on_tud_campus_are_within_two_of_ground_truth(engine) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("trackers")
    from counter import count_video
    from counting import parse_counter

    result = count_video(engine, VIDEO_DATA / "TUD-Campus.mp4", [parse_counter("x=320"), parse_counter("y=240")])
    assert result.mot_rows == []  # rows are kept only when asked (keep_tracks=True: --mot, the benchmark)
    truth = json.loads((VIDEO_DATA / "TUD-Campus.counts.json").read_text())["counts"]
    assert result.frames == 71
    for line, dirs in truth.items():
        for d, n in dirs.items():
            assert abs(result.counts[f"{line[0]}={line[1:]}"][d] - n) <= 2, (line, d, result.counts)


def test_ctrl_c_stops_a_looped_counter_cleanly_and_writes_the_summary(yolov8n_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("trackers")
    import os
    import signal
    import time

    frames = tmp_path / "f.jsonl"
    cmd = [
        sys.executable, str(ROOT / "examples" / "people_counter" / "count_people.py"), str(VIDEO), "--model",
        str(yolov8n_onnx), "--loop", "--line", "x=384", "--jsonl", str(frames), "--summary", str(tmp_path / "s.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "YOLO_OFFLINE": "1"}
    with children_take_ctrl_c():
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not frames.exists() or frames.stat().st_size < 2000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted"] is True and summary["frames"] >= 1
    assert json.loads(out)["frames"] == summary["frames"]


def test_count_videos_gives_each_stream_the_counts_of_counting_it_alone(engine) -> None:  # type: ignore[no-untyped-def]
    """Several streams through one engine (their frames interleaved in its batches): each has its own tracker
    and counters, so each counts and tracks exactly as if it ran alone."""
    pytest.importorskip("trackers")
    from counter import count_video, count_videos
    from counting import parse_counter

    from yoloquant.stream import VideoSource

    def lines() -> list:  # type: ignore[type-arg]
        return [parse_counter("x=384"), parse_counter("y=216")]

    alone = count_video(engine, VideoSource(VIDEO, max_frames=50, start=100), lines(), keep_tracks=True)
    both = count_videos(engine, [VideoSource(VIDEO, max_frames=50, start=100) for _ in range(2)], lines(),
                        batch_size=1, keep_tracks=True)  # fmt: skip
    assert len(both) == 2 and alone.frames == 50 and len(alone.mot_rows) > 20
    for r in both:
        assert r.frames == 50 and r.counts == alone.counts
        assert [row[:2] for row in r.mot_rows] == [row[:2] for row in alone.mot_rows]
        np.testing.assert_allclose([row[2:6] for row in r.mot_rows], [row[2:6] for row in alone.mot_rows], atol=1e-3)
