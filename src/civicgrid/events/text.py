"""Chinese text for duplicate detection and search: jieba tokens without stop words."""

from __future__ import annotations

import logging
from functools import lru_cache

import jieba

jieba.setLogLevel(logging.WARNING)

# Words too common in reports to tell two reports apart.
_STOP_WORDS = """
的 了 在 是 有 和 与 及 或 我 你 他 她 我们 这里 那里 这个 那个 一个 没有 已经 还是 就是
反映 举报 投诉 问题 情况 附近 发现 存在 现在 目前 请 请求 希望 麻烦 处理 解决 一下 一直
很 非常 多 有人
"""
STOP = frozenset(_STOP_WORDS.split())


@lru_cache(maxsize=4096)
def tokens(text: str) -> frozenset[str]:
    words = (w.strip().lower() for w in jieba.lcut(text or ""))
    return frozenset(w for w in words if w and w not in STOP and not all(not ch.isalnum() for ch in w))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two token sets (0 when either is empty)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def warm_up() -> None:
    """Load jieba's dictionary (about a second of CPU) before the first report needs it: the
    duplicate check tokenises only when a candidate lies near, so otherwise some report long
    after start-up would pay for it."""
    jieba.initialize()
