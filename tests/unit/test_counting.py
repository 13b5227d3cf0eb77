"""The people counter's counting rules (examples/people_counter/counting.py) on hand-made tracks and on ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
VIDEO_DATA = ROOT.parent / "shared" / "data" / "video"
sys.path.insert(0, str(ROOT / "examples" / "people_counter"))

from counting import Line, LineCounter, Zone, ZoneCounter, parse_counter, replay  # noqa: E402

SEQUENCES = [
    ("pets09_s2l1_f001-300", ("x=384", "y=288")),
    ("TUD-Stadtmitte", ("x=320", "y=240")),
    ("TUD-Campus", ("x=320", "y=240")),
]


def _walk(counter: LineCounter | ZoneCounter, feet: list[tuple[float, float]], tid: int = 1) -> None:
    """One track whose bottom-centre point visits ``feet`` (boxes 20 px wide, 100 px tall)."""
    for x, y in feet:
        counter.update(np.array([[x - 10, y - 100, x + 10, y]], np.float64), np.array([tid]))


def test_reference_rule_counts_every_flip_and_skips_points_on_the_line() -> None:
    c = LineCounter(Line.parse("x=100"))
    _walk(c, [(90, 50), (100, 50), (110, 50), (105, 50), (95, 50)])  # on the line: no side, side remembered
    assert c.counts == {"left_to_right": 1, "right_to_left": 1}
    h = LineCounter(Line.parse("y=200"))
    _walk(h, [(50, 190), (50, 210)])
    assert h.counts == {"top_to_bottom": 1, "bottom_to_top": 0}


def test_debounced_rule_ignores_jitter_and_counts_a_real_crossing_once() -> None:
    c = LineCounter(Line.parse("y=240"), min_frames=3, margin=0.02)  # dead band: 2 px for 100 px boxes
    _walk(c, [(50, 230), (50, 243), (50, 237), (50, 243), (50, 241), (50, 236)])  # standing on the line
    assert c.counts == {"top_to_bottom": 0, "bottom_to_top": 0}
    _walk(c, [(50, 250), (50, 260), (50, 270), (50, 280)])
    assert c.counts == {"top_to_bottom": 1, "bottom_to_top": 0}


def test_a_two_point_line_and_a_zone() -> None:
    c = LineCounter(Line.parse("0,0,100,100"))  # the diagonal
    _walk(c, [(80, 20), (20, 80)])
    assert sum(c.counts.values()) == 1
    z = parse_counter("10,10;90,10;90,90;10,90")
    assert isinstance(z, ZoneCounter) and isinstance(z.zone, Zone)
    _walk(z, [(0, 50), (50, 50), (60, 50), (99, 50)])
    assert z.counts == {"in": 1, "out": 1}


@pytest.mark.skipif(not VIDEO_DATA.is_dir(), reason="the MOTChallenge sequences live in ../shared/data/video only")
@pytest.mark.parametrize(("stem", "lines"), SEQUENCES)
@pytest.mark.parametrize("rule", [{}, {"min_frames": 3, "margin": 0.02}], ids=["reference", "debounced"])
def test_both_rules_give_the_reference_counts_on_the_ground_truth_tracks(
    stem: str, lines: tuple[str, ...], rule: dict[str, float]
) -> None:
    rows = []
    for line in (VIDEO_DATA / f"{stem}.gt.txt").read_text().splitlines():
        p = line.split(",")
        rows.append((int(p[0]), int(p[1]), *(float(v) for v in p[2:7])))
    truth = json.loads((VIDEO_DATA / f"{stem}.counts.json").read_text())["counts"]  # count_crossings.py's output
    for text in lines:
        c = LineCounter(Line.parse(text), **rule)  # type: ignore[arg-type]
        replay(rows, c)
        assert c.counts == truth[text.replace("=", "")], text


def test_the_counter_tracks_through_a_skipped_frame_and_counts_a_walker() -> None:
    """A fake engine sees one person walking left to right; a frame in the middle fails to decode."""
    pytest.importorskip("trackers")
    from counter import count_video

    from yoloquant.artifacts import ModelInfo
    from yoloquant.stream import ArraySource
    from yoloquant.testing import CallbackEngine

    def fn(x: np.ndarray) -> list[np.ndarray]:
        out = np.zeros((x.shape[0], 5, 8), np.float32)
        out[:, 0, 0] = np.round(x[:, 0, 0, 0] * 255) * 10  # cx from the frame's pixel value (64 px frame -> 640)
        out[:, 1, 0], out[:, 2, 0], out[:, 3, 0], out[:, 4, 0] = 320, 60, 300, 0.9
        return [out]

    frames: list[np.ndarray | None] = [np.full((64, 64, 3), 10 + 2 * i, np.uint8) for i in range(20)]
    frames[7] = None
    engine = CallbackEngine(fn, ModelInfo(names={0: "person"}))
    records: list[dict[str, object]] = []
    result = count_video(engine, ArraySource(frames, fps=10.0), [parse_counter("x=32")], on_frame=records.append)
    assert result.frames == 20 and result.skipped == 1 and records[7]["error"]
    assert result.counts == {"x=32": {"left_to_right": 1, "right_to_left": 0}}
    assert result.tracks == 1


def test_per_track_state_of_gone_tracks_is_dropped() -> None:
    c = LineCounter(Line.parse("x=100"))
    _walk(c, [(90, 50)], tid=1)
    for _ in range(2100):  # another person in view for 2100 frames
        _walk(c, [(150, 50)], tid=2)
    assert set(c._last) == {2}  # track 1's side is forgotten: memory does not grow with every person ever seen
