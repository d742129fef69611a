"""Group commit: items that arrive together share one call; an answer per item; a failing
batch is retried one item at a time so a bad item fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from civicgrid.core.groupcommit import GroupCommit


def test_items_arriving_together_share_a_batch_and_get_their_own_answers():
    calls: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int | Exception]:
        calls.append(list(items))
        return [i * 10 if i != 3 else ValueError("three") for i in items]

    gc: GroupCommit[int, int] = GroupCommit(run)

    async def main() -> list[object]:
        return await asyncio.gather(*(gc.submit(i) for i in range(6)), return_exceptions=True)

    answers = asyncio.run(main())
    assert answers[:3] == [0, 10, 20] and answers[4:] == [40, 50]
    assert isinstance(answers[3], ValueError)
    assert calls == [[0, 1, 2, 3, 4, 5]]  # submitted in one turn of the loop: one batch


def test_a_batch_that_fails_whole_is_retried_item_by_item():
    calls: list[list[str]] = []

    def run(items: Sequence[str]) -> list[str | Exception]:
        calls.append(list(items))
        if "poison" in items:
            raise RuntimeError("the transaction failed")
        return [s.upper() for s in items]

    gc: GroupCommit[str, str] = GroupCommit(run)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(gc.submit(s) for s in ("a", "b", "poison", "c")), return_exceptions=True
        )

    answers = asyncio.run(main())
    assert answers[:2] == ["A", "B"] and answers[3] == "C"
    assert isinstance(answers[2], RuntimeError)
    assert calls == [["a", "b", "poison", "c"], ["a"], ["b"], ["poison"], ["c"]]


def test_batches_are_bounded():
    sizes: list[int] = []

    def run(items: Sequence[int]) -> list[int | Exception]:
        sizes.append(len(items))
        return list(items)

    gc: GroupCommit[int, int] = GroupCommit(run, max_batch=4)

    async def main() -> list[int]:
        return await asyncio.gather(*(gc.submit(i) for i in range(11)))

    assert asyncio.run(main()) == list(range(11))
    assert max(sizes) <= 4 and sum(sizes) == 11
