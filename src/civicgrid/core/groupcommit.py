"""Group commit: requests that arrive while a write is in progress share the next transaction.

A route hands its item to `GroupCommit.submit` and awaits the answer. When no batch is
running, the item's request starts one at once (no waiting to fill a batch); items that
arrive meanwhile queue and go together in the next one. The batch function runs in the
thread pool with everything it needs to answer each item, and returns one answer (or an
error) per item; the answers are handed out only after the batch has committed, so every
answer still means "written and durable". A batch that fails as a whole is tried again one
item at a time, so one bad item cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Queue(Generic[T, R]):
    pending: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)
    # The batch being written (held: the loop keeps only a weak reference). It is done from the
    # moment its last look finds the queue empty, with no await between.
    task: asyncio.Task[None] | None = None


class GroupCommit(Generic[T, R]):
    def __init__(self, run: Callable[[Sequence[T]], Sequence[R | Exception]], max_batch: int = 64) -> None:
        self.run = run
        self.max_batch = max_batch
        # One queue per event loop (a test client runs its own loop beside the server's).
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue[T, R]] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        future: asyncio.Future[R] = loop.create_future()
        queue.pending.append((item, future))
        if queue.task is None or queue.task.done():
            queue.task = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _Queue[T, R]) -> None:
        while queue.pending:
            batch = queue.pending[: self.max_batch]
            del queue.pending[: self.max_batch]
            answers = await self._answers([item for item, _ in batch])
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # the client went away; the write stands
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _answers(self, items: list[T]) -> Sequence[R | Exception]:
        try:
            return await run_in_threadpool(self.run, items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning(
                "a group commit of %d items failed (%s); trying them one by one",
                len(items),
                type(exc).__name__,
            )
        answers: list[R | Exception] = []
        for item in items:
            try:
                answers.extend(await run_in_threadpool(self.run, [item]))
            except Exception as exc:
                answers.append(exc)
        return answers
