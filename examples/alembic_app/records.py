"""The application's record formats: an order, and its second version with a currency."""

from __future__ import annotations

from typing import Any

import msgspec

import gotstate_persist as gp


class OrderV1(msgspec.Struct, frozen=True):
    id: str
    total_cents: int


class OrderV2(msgspec.Struct, frozen=True):
    id: str
    total_cents: int
    currency: str


def _add_currency(old: dict[str, Any]) -> dict[str, Any]:
    return {**old, "currency": "EUR"}


def formats() -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(OrderV1, kind="order", version=1)
    registry.register(OrderV2, kind="order", version=2, upcast=_add_currency)
    return registry
