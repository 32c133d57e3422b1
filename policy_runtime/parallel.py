"""Per-seed work (an episode to generate or to evaluate) spread over local processes or Ray
actors, with the results handed back strictly in seed order.

Seed order is what makes a dataset or an evaluation log the same whatever the number of
workers. A worker is built once per process (or actor) from its class and config, since building
one (an env, a policy) costs far more than an episode's set-up.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

Result = TypeVar("Result")
Config = TypeVar("Config")
Result_co = TypeVar("Result_co", covariant=True)


class SeedWorker(Protocol[Result_co]):
    def run(self, seed: int) -> Result_co: ...


def ordered_results(
    worker_class: Callable[[Config], SeedWorker[Result]],
    config: Config,
    seeds: Iterator[int],
    workers: int,
    ray_address: str | None,
    local: SeedWorker[Result],
) -> Generator[Result, None, None]:
    """``worker.run(seed)`` for each seed, in seed order: on Ray actors when ``ray_address`` is
    given ('local' starts a local Ray), else on ``workers`` spawned processes, else on ``local``
    in this process. At most two seeds per worker are in flight; closing the generator early
    cancels the rest."""
    if ray_address is not None:
        yield from _ray_results(worker_class, config, seeds, workers, ray_address)
        return
    if workers == 1:
        for seed in seeds:
            yield local.run(seed)
        return
    context = multiprocessing.get_context("spawn")  # EGL contexts do not survive a fork
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_process_init,
        initargs=(worker_class, config, os.getpid()),
    ) as pool:
        yield from _windowed(seeds, lambda seed: pool.submit(_process_run, seed), 2 * workers)


_PROCESS_WORKER: Any = None
#: How often a worker process checks that the process that started it is still alive.
PARENT_POLL_S = 0.5


def _process_init(worker_class: Callable[[Any], Any], config: Any, parent_pid: int) -> None:
    global _PROCESS_WORKER
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    _PROCESS_WORKER = worker_class(config)


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker once its parent is gone. A killed parent (SIGKILL, OOM) never tells its
    pool, and a worker blocked on the pool's queue or deep in an episode would otherwise run on
    holding its CPU, GPU context and memory."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _process_run(seed: int) -> Any:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.run(seed)


def _windowed(
    seeds: Iterator[int], submit: Callable[[int], Future[Result]], window: int
) -> Iterator[Result]:
    pending: list[Future[Result]] = []
    try:
        for seed in seeds:
            pending.append(submit(seed))
            if len(pending) >= window:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    finally:  # stopped early: do not compute results nobody will collect
        for future in pending:
            future.cancel()


def _ray_results(
    worker_class: Callable[[Config], SeedWorker[Result]],
    config: Config,
    seeds: Iterator[int],
    workers: int,
    address: str,
) -> Iterator[Result]:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(
            "--ray-address needs Ray: pip install 'policy_runtime[distributed]'"
        ) from exc
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
        )
    actor_class: Any = ray.remote(worker_class)
    actors: list[Any] = [actor_class.remote(config) for _ in range(workers)]
    pending: list[Any] = []
    try:
        for i, seed in enumerate(seeds):
            pending.append(actors[i % len(actors)].run.remote(seed))
            if len(pending) >= 2 * len(actors):
                yield ray.get(pending.pop(0))
        while pending:
            yield ray.get(pending.pop(0))
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
