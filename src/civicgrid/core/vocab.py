"""Vocabulary shared by several capabilities (PRODUCT.md's table of words)."""

from __future__ import annotations

import enum


class Platform(enum.StrEnum):
    """The four platforms of township governance (基层治理四平台)."""

    safety = "safety"  # 综治工作
    market = "market"  # 市场监管
    enforcement = "enforcement"  # 综合执法
    service = "service"  # 便民服务


PLATFORM_LABELS = {
    Platform.safety: "Comprehensive governance",
    Platform.market: "Market supervision",
    Platform.enforcement: "Comprehensive law enforcement",
    Platform.service: "Convenience services",
}
