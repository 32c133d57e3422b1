"""Training batches gathered ahead of the optimiser, without changing which batches a run sees.

On a GPU the optimiser step takes milliseconds, and gathering a batch of image windows on the
same thread would leave the device waiting. :class:`BatchPrefetcher` gathers the next
``depth`` batches on a background thread (numpy's gathers and the float32 conversion release
the GIL), into pinned memory when the device is CUDA so the copy to the device is asynchronous.

The window ids are still drawn from the run's numpy generator in step order, and the state a
checkpoint saves (:meth:`BatchPrefetcher.rng_state`) is the one *before* the first batch not yet
used: a run resumed from it draws the same batches as one that never stopped, whatever
``depth``. ``depth`` 0 gathers on the caller's thread.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from policy_runtime.data import SequenceSampler
from policy_runtime.training.data import to_torch


class BatchPrefetcher:
    def __init__(
        self,
        sampler: SequenceSampler,
        rng: np.random.Generator,
        batch_size: int,
        device: torch.device,
        depth: int = 2,
    ) -> None:
        self.sampler = sampler
        self.rng = rng
        self.batch_size = batch_size
        self.device = device
        self.depth = depth
        self._pin = device.type == "cuda"
        self._pool: ThreadPoolExecutor | None = None
        #: (generator state before the draw, the gathered batch) per batch drawn, oldest first.
        self._pending: deque[tuple[dict[str, Any], Future[dict[str, torch.Tensor]]]] = deque()

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch on the device: images uint8, everything else float32."""
        if self.depth > 0 and self._pool is None:
            # Pinning on a thread whose current device is GPU 0 would open a context there
            # for every rank (torch's DataLoader sets the device on its pin thread too).
            self._pool = ThreadPoolExecutor(1, "batch-prefetch", initializer=self._on_thread)
        while len(self._pending) < self.depth + 1:
            state = dict(self.rng.bit_generator.state)
            ids = self.rng.integers(len(self.sampler), size=self.batch_size)
            if self._pool is None:
                done: Future[dict[str, torch.Tensor]] = Future()
                done.set_result(self._gather(ids))
                self._pending.append((state, done))
            else:
                self._pending.append((state, self._pool.submit(self._gather, ids)))
        _, future = self._pending.popleft()
        return {k: v.to(self.device, non_blocking=self._pin) for k, v in future.result().items()}

    def rng_state(self) -> dict[str, Any]:
        """The generator's state before the first batch not yet returned by :meth:`next`."""
        if self._pending:
            return self._pending[0][0]
        return dict(self.rng.bit_generator.state)

    def close(self) -> None:
        """Stop the thread; batches drawn ahead are dropped and the generator goes back to
        :meth:`rng_state` (a later :meth:`next` draws them again)."""
        state = self.rng_state()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self.rng.bit_generator.state = state

    def _on_thread(self) -> None:
        if self._pin:
            torch.cuda.set_device(self.device)

    def _gather(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        tensors = to_torch(self.sampler.sample_batch(ids), torch.device("cpu"))
        return {k: v.pin_memory() for k, v in tensors.items()} if self._pin else tensors
