"""The budget search on an executor: candidates measured ahead of the search, which still asks the same ks in the
same order and chooses the same k as in one process, whatever the answers (mAP is not monotone in k)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from yoloquant.decide.budget_search import Candidates, ahead, next_question, tries

T = TypeVar("T")
R = TypeVar("R")


def _asked_in_one_process(n: int, answer: Callable[[int], bool]) -> list[int]:
    asked: list[int] = []

    def passes(k: int) -> bool:
        asked.append(k)
        return answer(k)

    tries(n, passes)
    return asked


@dataclass(frozen=True)
class _Model:
    path: Path


@dataclass(frozen=True)
class _Result:
    primary: float


class _SharedDouble:
    """Test double of SharedCalibration: a candidate "model" is its path; nothing is quantized."""

    model = _Model(Path("fp32.onnx"))

    def build(self, nodes: Iterable[str], dst: Path, *, metadata: bool, float_mode: str) -> _Model:
        del nodes, metadata, float_mode
        return _Model(dst)

    def in_folder(self, folder: Path) -> _SharedDouble:
        del folder
        return self

    def _full_int8(self) -> None:
        pass


class _ReversingExecutor:
    """Test double of an Executor with room for ``parallelism`` tasks: runs a batch here, last item first (as a pool
    may finish them), and records each batch."""

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self.batches: list[list[Any]] = []

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]:
        batch = list(items)
        self.batches.append(batch)
        for item in reversed(batch):
            yield item, fn(item)


def _search(n: int, answer: Callable[[int], bool], executor: _ReversingExecutor | None) -> tuple[list[int], Candidates]:
    """The search as search_budget drives it, on ``Candidates``: a candidate at k scores 1.0 when it passes."""

    def evaluate(model: _Model) -> _Result:
        if model.path.name == "fp32.onnx":
            return _Result(1.0)
        k = int(model.path.stem.removeprefix("float-"))
        return _Result(1.0 if answer(k) else 0.9)

    candidates = Candidates(
        _SharedDouble(),  # type: ignore[arg-type]
        evaluate,  # type: ignore[arg-type]
        max_map_drop=0.5,
        float_mode="dequantize",
        work=Path("work"),
        executor=executor,
    )
    candidates.baseline_and_int8()
    asked: list[int] = []
    passed: dict[int, bool] = {}

    def passes(k: int) -> bool:
        asked.append(k)
        if k not in passed:
            passed[k] = candidates.passes(candidates.result(k, lambda j: [f"node-{i}" for i in range(j)], n, passed))
        return passed[k]

    tries(n, passes)
    return asked, candidates


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_measured_ahead_the_search_asks_and_chooses_as_in_one_process(width: int) -> None:
    rng = random.Random(width)
    for _ in range(60):
        n = rng.randint(1, 40)
        table = [rng.random() < 0.4 for _ in range(n + 1)]  # not monotone: a pass may follow a failure and precede one
        answer = table.__getitem__
        executor = _ReversingExecutor(width)
        asked, candidates = _search(n, answer, executor)
        assert asked == _asked_in_one_process(n, answer)  # the same ks in the same order: the same chosen k
        measured = [k for batch in candidates.batches[1:] for k in batch]
        assert sorted(set(asked)) == sorted(set(measured) - set(candidates.unasked))
        assert len(measured) == len(set(measured))  # nothing measured twice
        assert [j.k for j in executor.batches[0]] == [None, 0]  # FP32 and full INT8 together, first
        assert all(len(b) <= width for b in executor.batches[1:])
        if width == 1:
            assert candidates.unasked == [] and len(candidates.batches) - 1 == len(set(asked))


def test_two_tasks_at_once_take_fewer_rounds_than_one_process_asks() -> None:
    def answer(k: int) -> bool:
        return k >= 5

    asked, candidates = _search(23, answer, _ReversingExecutor(2))
    assert asked == [1, 2, 4, 8, 8, 6, 5]  # 1, 2, 4 fail, 8 passes (read twice); bisecting 4..8: 6, 5 pass
    assert candidates.batches[1:] == [[1, 2], [4, 8], [6, 7], [5]]  # 4 rounds for 6 questions; 7 measured unasked
    assert candidates.unasked == [7]


def test_without_an_executor_each_asked_k_is_measured_here_once() -> None:
    asked, candidates = _search(9, lambda k: k >= 3, None)
    assert asked == _asked_in_one_process(9, lambda k: k >= 3) and candidates.batches == []


def test_the_next_questions_follow_the_search_tree() -> None:
    assert next_question(8, {}) == 1
    assert next_question(8, {1: True}) is None  # k = 1 passes: the smallest possible
    assert next_question(8, {1: False, 2: False, 4: True}) == 3  # bisect between 2 and 4
    assert ahead(8, {}, width=3) == [1, 2, 4]  # a failed step first: 2 after 1 fails (a pass at 1 ends it)
    assert ahead(8, {1: False, 2: False}, width=2) == [4, 8]
    assert ahead(1, {1: True}, width=4) == []
