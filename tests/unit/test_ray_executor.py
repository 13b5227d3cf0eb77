"""RayExecutor on a local Ray instance (loopback, 2 CPUs, shared by the session): results, retries after a
killed worker, errors, cancellation, and where the timing phase runs."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import pytest

from doubles.sweep_work import die_first_time, double, lines, sleep_then_mark
from yoloquant._optional import install_hint
from yoloquant.decide.ray_executor import RayExecutor  # imports no Ray: it loads on first use
from yoloquant.errors import ConfigError, ExecutorError

pytest.importorskip("ray")


def test_the_extra_that_installs_ray_is_named() -> None:
    assert install_hint("ray") == 'pip install "yoloquant[ray]"'


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"address": "auto", "num_cpus": 2}, "drop num_cpus or address"),
        ({"task_cpus": 0}, "task_cpus must be positive"),
        ({"max_retries": -1}, "max_retries must be 0 or more"),
        ({"timing_resources": {"GPU": 0}}, "positive amount"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        RayExecutor(**kwargs)  # type: ignore[arg-type]


def test_every_item_comes_back_once_with_its_result_or_its_own_error(ray_cluster: str) -> None:
    executor = RayExecutor()  # joins the session's Ray
    assert executor.parallelism == 2
    got = dict(executor.map(double, [1, 2, 3]))
    assert got == {1: 2, 2: 4, 3: 6}
    outcomes = dict(RayExecutor().map(partial(divmod, 1), [1, 0]))
    assert outcomes[1] == (1, 0)
    err = outcomes[0]
    assert type(err) is ZeroDivisionError  # the task's own exception, not Ray's wrapper
    assert any("raised in a Ray task" in n for n in err.__notes__)


def test_a_worker_killed_mid_task_is_retried_in_another_process(ray_cluster: str, tmp_path: Path) -> None:
    got = dict(RayExecutor(max_retries=2).map(partial(die_first_time, tmp_path), [1, 2, 3]))
    assert {x: r[0] for x, r in got.items()} == {1: 1, 2: 2, 3: 3}  # each item once, from its retry
    for x, (_, pid) in got.items():
        killed = lines(tmp_path / f"tried-{x}")
        assert len(killed) == 1 and int(killed[0]) != pid  # the retry ran in a new worker process


def test_a_worker_that_dies_on_every_try_is_an_executor_error(ray_cluster: str, tmp_path: Path) -> None:
    ((item, outcome),) = RayExecutor(max_retries=0).map(partial(die_first_time, tmp_path), [7])
    assert item == 7 and isinstance(outcome, ExecutorError)
    assert "did not finish in 1 try" in str(outcome) and "max_retries" in str(outcome)


def test_stopping_the_iteration_cancels_the_tasks_still_out(ray_cluster: str, tmp_path: Path) -> None:
    results = RayExecutor().map(partial(sleep_then_mark, tmp_path), [0, 1, 2])
    assert next(results) == (0, 0)  # 0 returns at once; 1 and 2 sleep 30 s
    deadline = time.monotonic() + 20
    while len(lines(tmp_path / "started")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = [int(p) for p in lines(tmp_path / "pids")[1:]]
    results.close()  # what Ctrl-C in the sweep's loop does
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running and not any(_alive(p) for p in running)  # the running tasks' workers were stopped
    assert lines(tmp_path / "finished") == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_timing_phase_runs_on_a_node_with_the_timing_resource(ray_cluster: str) -> None:
    assert RayExecutor().run_timing(os.getpid) == os.getpid()  # no resource named: in the driver
    assert RayExecutor(timing_resources={"timing-node": 1}).run_timing(os.getpid) != os.getpid()
    with pytest.raises(ConfigError, match=r"no node .* timing resource \{'h100': 1\}"):
        RayExecutor(timing_resources={"h100": 1}).run_timing(os.getpid)
