"""yoloquant.stream with a fake engine: order, fixed batch shapes, skipped frames, several streams, backpressure."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from yoloquant.artifacts import ModelInfo
from yoloquant.detections import Detections
from yoloquant.errors import ConfigError, DataError
from yoloquant.stream import ArraySource, StreamRunner, TileConfig, VideoSource, merge_tiles, tile_grid
from yoloquant.testing import CallbackEngine

pytest.importorskip("cv2")
ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT / "assets" / "video" / "one-by-one-person.mp4"


def _engine(calls: list[tuple[int, ...]], *, dynamic: bool = True) -> CallbackEngine:
    """One 20x20 box per image, centred at x = 100 + (the image's top-left pixel value): it encodes the frame."""

    def fn(x: np.ndarray) -> list[np.ndarray]:
        calls.append(x.shape)
        out = np.zeros((x.shape[0], 5, 8), np.float32)
        out[:, 0, 0] = 100 + np.round(x[:, 0, 0, 0] * 255)  # cx in input pixels
        out[:, 1, 0], out[:, 2, 0], out[:, 3, 0], out[:, 4, 0] = 320, 20, 20, 0.9
        return [out]

    return CallbackEngine(fn, ModelInfo(names={0: "person"}, dynamic_batch=dynamic))


def _frame(value: int, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def _decoded(dets: Detections | None) -> int:
    """The frame value a detection encodes (the 64 px frame is scaled x10 to the 640 input)."""
    assert dets is not None and len(dets) == 1
    return round(float(dets.boxes[0, 0] + dets.boxes[0, 2]) / 2 * 10 - 100)


def test_results_come_in_order_with_fixed_batch_shapes() -> None:
    calls: list[tuple[int, ...]] = []
    runner = StreamRunner(_engine(calls), ArraySource([_frame(v) for v in range(11)]), batch_size=4)
    results = list(runner)
    assert [r.index for r in results] == list(range(11))
    assert [_decoded(r.detections) for r in results] == list(range(11))
    assert {c for c in calls} == {(4, 3, 640, 640)}  # a partial batch is padded to the fixed size
    assert runner.stats.frames == 11 and runner.stats.skipped == 0
    assert set(runner.stats.mean_ms()) >= {"read", "wait", "preprocess", "infer", "postprocess"}


def test_unpadded_partial_batch_runs_as_it_is() -> None:
    calls: list[tuple[int, ...]] = []
    list(StreamRunner(_engine(calls), ArraySource([_frame(v) for v in range(5)]), batch_size=4, pad_batch=False))
    assert sum(c[0] for c in calls) == 5


def test_a_failed_frame_and_a_frame_of_another_size_are_skipped_not_fatal() -> None:
    frames = [_frame(1), None, _frame(3), _frame(4, size=32), _frame(5)]
    results = list(StreamRunner(_engine([]), ArraySource(frames), batch_size=2))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert "decode failed" in (results[1].error or "")
    assert "32x32" in (results[3].error or "") and "64x64" in (results[3].error or "")
    assert results[1].detections is None and _decoded(results[4].detections) == 5


def test_several_streams_through_one_engine_keep_each_streams_order() -> None:
    a = ArraySource([_frame(v) for v in range(10)], name="a")
    b = ArraySource([_frame(50 + v) for v in range(7)], name="b")
    results = list(StreamRunner(_engine([]), [a, b], batch_size=3))
    for stream, first, n in ((0, 0, 10), (1, 50, 7)):
        mine = [r for r in results if r.stream == stream]
        assert [r.index for r in mine] == list(range(n))
        assert [_decoded(r.detections) for r in mine] == [first + i for i in range(n)]


def test_queues_are_bounded_a_slow_consumer_stalls_the_reader() -> None:
    pulled = 0

    def frames() -> Iterator[np.ndarray]:
        nonlocal pulled
        for v in range(200):
            pulled += 1
            yield _frame(v % 200)

    runner = StreamRunner(_engine([]), ArraySource(frames()), batch_size=2, queue_size=3)
    it = iter(runner)
    for _ in range(5):
        next(it)
        time.sleep(0.05)
    time.sleep(0.3)
    ahead = pulled - 5
    it.close()  # the generator's cleanup stops every thread
    # frame queue (3) + one batch in the engine thread (2) + result queue (3) + one each in hand
    assert ahead <= 3 + 2 + 3 + 2, ahead
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("yoloquant-"))


def test_stop_from_a_callback_ends_the_run_cleanly() -> None:
    runner = StreamRunner(_engine([]), ArraySource(_frame(1) for _ in range(10_000)))
    seen: list[int] = []

    def on_result(r: object) -> None:
        seen.append(1)
        if len(seen) == 3:
            runner.stop()

    stats = runner.run(on_result)
    assert 3 <= stats.frames < 100


def test_batch_above_one_needs_a_dynamic_batch_engine() -> None:
    with pytest.raises(ConfigError, match="dynamic"):
        StreamRunner(_engine([], dynamic=False), ArraySource([]), batch_size=2)


def test_an_unopenable_url_or_missing_file_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="cannot open"):
        StreamRunner(_engine([]), "rtsp://127.0.0.1:9/nothing-here")
    with pytest.raises(DataError, match="does not exist"):
        StreamRunner(_engine([]), "no/such/video.mp4")


def test_a_truncated_video_ends_with_a_clear_error(tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(VIDEO.read_bytes()[:400_000])  # moov atom first: it opens, then the data stops
    source = VideoSource(cut)
    try:
        results = list(StreamRunner(_engine([]), source))
    except DataError as exc:  # a container OpenCV refuses at open is also a clear answer
        assert "cannot open" in str(exc)
        return
    assert 0 < len(results) < 1394
    assert results[-1].error is not None and "truncated" in results[-1].error
    assert all(r.ok or "could not be decoded" in (r.error or "") for r in results[:-1])
    assert sum(r.ok for r in results) > 0.9 * (len(results) - 1)


def test_video_source_reads_a_file_in_order_and_loops() -> None:
    src = VideoSource(VIDEO, max_frames=5).open()
    assert src.size == (768, 432) and src.fps == pytest.approx(10.0)
    assert [f.index for f in src.frames(0)] == [0, 1, 2, 3, 4]
    src.close()


def test_tile_grid_covers_the_frame_with_the_asked_overlap() -> None:
    tiles = tile_grid(576, 768, TileConfig(size=320, overlap=0.2))
    covered = np.zeros((576, 768), bool)
    for y1, x1, y2, x2 in tiles:
        assert y2 - y1 == 320 and x2 - x1 == 320
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    xs = sorted({x1 for _, x1, _, _ in tiles})
    assert all(320 - (b - a) >= 0.2 * 320 - 1 for a, b in itertools.pairwise(xs))
    assert tile_grid(100, 100, TileConfig(size=320)) == [(0, 0, 100, 100)]
    assert tile_grid(100, 700, TileConfig(size=320, full_frame=True))[-1] == (0, 0, 100, 700)


def test_merge_tiles_shifts_boxes_and_merges_duplicates_per_class() -> None:
    one = Detections(np.array([[10, 10, 30, 30]], np.float32), np.array([0.9], np.float32), np.array([0]))
    same = Detections(np.array([[0, 10, 20, 30]], np.float32), np.array([0.8], np.float32), np.array([0]))
    other = Detections(np.array([[0, 10, 20, 30]], np.float32), np.array([0.7], np.float32), np.array([1]))
    merged = merge_tiles([one, same, other], [(0, 0, 50, 50), (0, 10, 50, 60), (0, 10, 50, 60)], iou=0.5)
    # the second tile's box is the first's, shifted by its origin x = 10: merged; class 1 is kept apart
    assert merged.boxes.tolist() == [[10, 10, 30, 30], [10, 10, 30, 30]]
    assert merged.classes.tolist() == [0, 1] and merged.scores.tolist() == pytest.approx([0.9, 0.7])


def test_tiled_frames_run_every_tile_and_map_boxes_back() -> None:
    calls: list[tuple[int, ...]] = []
    frame = np.full((128, 256, 3), 7, np.uint8)
    runner = StreamRunner(_engine(calls), ArraySource([frame]), batch_size=4, tiles=TileConfig(size=128, overlap=0))
    (result,) = list(runner)
    assert calls == [(4, 3, 640, 640)]  # two tiles, padded to the batch of 4
    assert result.detections is not None and len(result.detections) == 2
    assert sorted(float(b[0]) for b in result.detections.boxes) == pytest.approx([(107 - 10) / 5, 128 + (107 - 10) / 5])


def test_an_engine_failure_reaches_the_consumer_and_stops_the_threads() -> None:
    from yoloquant.errors import InferenceError

    def fail(x: np.ndarray) -> list[np.ndarray]:
        msg = "engine broke"
        raise InferenceError(msg)

    runner = StreamRunner(CallbackEngine(fail, ModelInfo(names={0: "person"})), ArraySource([_frame(1)] * 50))
    with pytest.raises(InferenceError, match="engine broke"):
        list(runner)
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("yoloquant-"))


def test_an_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        StreamRunner(_engine([]), ArraySource([]), batchsize=2)
