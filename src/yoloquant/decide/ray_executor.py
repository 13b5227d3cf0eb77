"""Run a sweep's variants as Ray tasks, on a local Ray instance or a cluster (``pip install "yoloquant[ray]"``).

:class:`RayExecutor` is an :class:`~yoloquant.decide.executor.Executor`: each item (a sweep's
:class:`~yoloquant.decide.executor.VariantJob`) becomes one Ray task, and results come back in completion
order. The driver (the process that calls ``Sweep.run``) still owns the out dir and writes every ledger line
itself, so what a worker does (dies halfway, is retried, finishes twice) never writes, tears or duplicates a
ledger entry. Models, calibration caches and reports travel through a **shared folder**: the sweep's out dir
must be the same path on every node (NFS or similar; on one machine any folder is). docs/ray.md starts a
cluster and runs a worked example.

Faults: a task whose worker process or node dies is retried by Ray (``max_retries``, on any node that has
room); a variant that raises is not retried unless ``retry_exceptions`` says so, since its error is usually
its own (a bad option, a quantizer failure) and would happen again. What still fails comes back as the
variant's own exception, or an :class:`~yoloquant.errors.ExecutorError` when its worker died on every try.
Stopping the iteration (the sweep's ``Ctrl-C``) cancels every task not yet back.

Latency: ``timing_resources`` names a Ray resource (``{"cpu-xeon-8480": 1}``, ``{"GPU": 1}``; give it to a
node with ``ray start --resources='{"cpu-xeon-8480": 1}'``): the sweep's interleaved timing phase then runs as
one task on one node that has it. Without it, timing runs in the driver's process.

Example:
    >>> executor = RayExecutor(address="auto", timing_resources={"cpu-xeon-8480": 1})  # doctest: +SKIP
    >>> Sweep(base, executor=executor).grid(calibration_method=["minmax", "entropy"]).run("/shared/runs/sweep")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from yoloquant._optional import require
from yoloquant.errors import ConfigError, ExecutorError

__all__ = ["RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")


def _call(fn: Callable[[T], R], item: T) -> R:
    """The Ray task: ``fn(item)`` on a worker."""
    return fn(item)


def _timing(fn: Callable[[], R]) -> R:
    """The Ray task of the timing phase: ``fn()`` on the node that holds the timing resource."""
    return fn()


@dataclass(frozen=True, kw_only=True)
class RayExecutor:
    """Each item as a Ray task; results in completion order.

    Args:
        address: The cluster to join: ``"auto"`` (the one ``ray start`` runs on this machine), ``"host:6379"``
            or ``"ray://host:10001"``. None: the Ray this process already started, else a new local instance.
        num_cpus: CPUs of a new local instance (``address=None`` only); default all of this machine's.
        task_cpus: CPUs Ray reserves for each variant (its parallelism is the cluster's CPUs / this).
        max_retries: Tries after the first when a task's worker process or node dies.
        retry_exceptions: Also retry a variant that raised: True for any exception, or a tuple of exception
            types (``(OSError,)`` for a flaky shared folder). Default: a raising variant fails at once.
        timing_resources: The Ray resource of the node that times every variant (module docstring); None: the
            driver times them.
        env: Environment variables of every task (``{"OMP_NUM_THREADS": "1"}``).

    Example:
        >>> RayExecutor(num_cpus=2).task_cpus
        1.0
    """

    address: str | None = None
    num_cpus: int | None = None
    task_cpus: float = 1.0
    max_retries: int = 2
    retry_exceptions: bool | tuple[type[Exception], ...] = False
    timing_resources: Mapping[str, float] | None = None
    env: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.address is not None and self.num_cpus is not None:
            msg = f"num_cpus={self.num_cpus} sizes a new local Ray instance; a cluster (address={self.address!r}) "
            msg += "has the CPUs its nodes were started with: drop num_cpus or address"
            raise ConfigError(msg)
        if self.num_cpus is not None and self.num_cpus < 1:
            msg = f"num_cpus must be at least 1, got {self.num_cpus}"
            raise ConfigError(msg)
        if not self.task_cpus > 0:
            msg = f"task_cpus must be positive, got {self.task_cpus}"
            raise ConfigError(msg)
        if self.max_retries < 0:
            msg = f"max_retries must be 0 or more, got {self.max_retries}"
            raise ConfigError(msg)
        if self.timing_resources is not None and (
            not self.timing_resources or any(v <= 0 for v in self.timing_resources.values())
        ):
            msg = "timing_resources names a Ray resource and a positive amount, e.g. {'GPU': 1}; got "
            msg += f"{dict(self.timing_resources)!r}"
            raise ConfigError(msg)
        object.__setattr__(self, "task_cpus", float(self.task_cpus))
        for name in ("timing_resources", "env"):  # plain dicts: the executor pickles with the sweep
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else dict(value))

    def connect(self) -> Any:
        """The ``ray`` module, connected: to ``address``, to this process's Ray, or to a new local instance."""
        ray = require("ray")
        if ray.is_initialized():
            return ray
        try:
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False)
            else:
                ray.init(address=self.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a new local Ray instance"
            msg = f"cannot start or reach {where}: {exc}; start one with `ray start --head` (docs/ray.md)"
            raise ExecutorError(msg) from exc
        return ray

    @property
    def parallelism(self) -> int:
        """How many items run at once: the cluster's CPUs over ``task_cpus`` (at least 1)."""
        cpus = float(self.connect().cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // self.task_cpus))

    def _options(self, **extra: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.task_cpus, "max_retries": self.max_retries}
        options.update(extra)
        retry = self.retry_exceptions
        options["retry_exceptions"] = list(retry) if isinstance(retry, tuple) else retry
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        return options

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]:
        """Submit every item as a task, then yield ``(item, result or exception)`` as each comes back.

        Closing the iterator early (the caller stops, or ``Ctrl-C``) cancels the tasks still out.
        """
        ray = self.connect()
        task = ray.remote(_call).options(**self._options())
        fn_ref = ray.put(fn)
        pending: dict[Any, T] = {task.remote(fn_ref, item): item for item in items}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ready[0])
                yield item, self._outcome(ray, ready[0], item)
        finally:
            for ref in pending:  # not back yet: stop them, so a stopped sweep leaves no work running
                ray.cancel(ref, force=True)

    def _outcome(self, ray: Any, ref: Any, item: object) -> Any:
        """The task's result; the variant's own exception; an ExecutorError when its worker kept dying."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            cause.add_note(f"raised in a Ray task: {exc}")  # its str holds the worker, pid and traceback
            return cause
        except ray.exceptions.RayError as exc:  # the worker or node died, or Ray lost the result
            name = getattr(item, "name", repr(item))
            tries = self.max_retries + 1
            msg = f"{name}: its Ray task did not finish in {tries} tr{'y' if tries == 1 else 'ies'} "
            msg += f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); "
            msg += "check the workers' memory and logs, or raise max_retries"
            err = ExecutorError(msg)
            err.__cause__ = exc
            return err

    def run_timing(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` (the timing phase) on one node that holds ``timing_resources``; here when there are none."""
        if self.timing_resources is None:
            return fn()
        ray = self.connect()
        have = ray.cluster_resources()
        missing = {k: v for k, v in self.timing_resources.items() if have.get(k, 0.0) < v}
        if missing:
            custom = sorted(k for k in have if not k.startswith(("node:", "memory", "object_store_memory")))
            msg = f"no node of the Ray cluster has the timing resource {missing}: it has {custom}; start the "
            msg += "node that serves with `ray start --resources='{\"<name>\": 1}'` (docs/ray.md)"
            raise ConfigError(msg)
        wanted = dict(self.timing_resources)  # Ray takes CPUs and GPUs as their own options, not as resources
        extra = {
            "num_cpus": wanted.pop("CPU", self.task_cpus),
            **({"num_gpus": wanted.pop("GPU")} if "GPU" in wanted else {}),
        }
        task = ray.remote(_timing).options(**self._options(resources=wanted, **extra))
        outcome = self._outcome(ray, task.remote(fn), "the timing phase")
        if isinstance(outcome, Exception):
            raise outcome
        result: R = outcome
        return result
