"""Each example extension passes gotstate-persist's conformance suite, by entry-point name."""

from __future__ import annotations

import msgspec
import pytest
from gotstate_persist_examples.scratch import Receipt, ReceiptV1

import gotstate_persist as gp
from gotstate_persist.testing import ExtensionTests

#: Fast enough for a test run; memory_bytes stays the default 1 GiB.
LIMITS = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0)


class TestThrottle(ExtensionTests):
    @pytest.fixture
    def extension_target(self) -> str:
        return "throttle"

    @pytest.fixture
    def extension_limits(self) -> gp.ResourceLimits | None:
        return LIMITS

    @pytest.fixture
    def sample_events(self) -> list[gp.EventView]:
        return [
            gp.EventView("start", metadata={"id": "evt-1"}),
            gp.EventView("start", metadata={"id": "evt-1"}),  # a repeated delivery
            gp.EventView("batch", metadata={"items": ["pay", "ship", ""]}),
            gp.EventView("cancel", priority=3),
        ]


class TestAudit(ExtensionTests):
    @pytest.fixture
    def extension_target(self) -> str:
        return "audit"

    @pytest.fixture
    def extension_limits(self) -> gp.ResourceLimits | None:
        return LIMITS

    @pytest.fixture
    def sample_states(self) -> list[gp.StateView]:
        return [
            gp.StateView("cart", {}, gp.EventView("checkout", 0, {"actor": "ada"})),
            gp.StateView("payment", {"visits": 2, "hold": True}, gp.EventView("pay")),
        ]


class TestScratch(ExtensionTests):
    @pytest.fixture
    def extension_target(self) -> str:
        return "scratch"

    @pytest.fixture
    def sample_records(self) -> list[msgspec.Struct]:
        return [Receipt("order-1", 1250, "CHF"), ReceiptV1("order-2", 990)]


class TestSiteDefaults(ExtensionTests):
    @pytest.fixture
    def extension_target(self) -> str:
        return "site-defaults"

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, object]]:
        return [{"name": "payments"}, {"name": "shipping", "environment": "staging"}, {}]

    @pytest.fixture
    def sample_candidates(self) -> list[dict[str, object]]:
        return [{"endpoint": "https://pay.example.com", "timeout_s": 2.0}, {"timeout_s": -1}]
