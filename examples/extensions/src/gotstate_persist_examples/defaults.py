"""A configuration extension: site defaults per environment, and a validator.

``load(request)`` provides values for one configuration: the defaults this
site uses for ``request["name"]`` in ``request["environment"]``
(``"production"`` unless the request says otherwise). ``validate(candidate)``
checks a candidate configuration (plain values: the host passes
``msgspec.to_builtins`` of it, secrets redacted) against the site's rules
and returns every problem as ``"$.path: reason"``, never the value itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

DEFAULT_ENVIRONMENT = "production"
MAX_TIMEOUT_S = 60.0


class SiteDefaults:
    name = "site-defaults"
    version = "1.0.0"
    category = "configuration"

    defaults: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {
        "payments": {
            "production": {"endpoint": "https://pay.example.com", "timeout_s": 2.0},
            "staging": {"endpoint": "https://pay.staging.example.com", "timeout_s": 10.0},
        },
        "shipping": {
            "production": {"carrier": "dhl", "max_parcels": 20},
            "staging": {"carrier": "sandbox", "max_parcels": 2},
        },
    }

    def load(self, request: dict[str, Any]) -> dict[str, Any]:
        by_environment = self.defaults.get(str(request.get("name", "")), {})
        environment = str(request.get("environment", DEFAULT_ENVIRONMENT))
        return dict(by_environment.get(environment, {}))

    def validate(self, candidate: dict[str, Any]) -> list[str]:
        problems = []
        endpoint = candidate.get("endpoint")
        if endpoint is not None and not (
            isinstance(endpoint, str) and endpoint.startswith("https://")
        ):
            problems.append("$.endpoint: must be an https:// URL")
        timeout = candidate.get("timeout_s")
        if timeout is not None and not (
            isinstance(timeout, int | float) and 0 < timeout <= MAX_TIMEOUT_S
        ):
            problems.append(f"$.timeout_s: must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
        return problems
