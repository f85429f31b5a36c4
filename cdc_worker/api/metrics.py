"""Every Prometheus metric of the read API, defined once, prefix ``cdc_api_``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ApiMetrics:
    """The API's metrics on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cdc_api_requests_total", "HTTP requests", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "cdc_api_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_SECONDS_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "cdc_api_redis_errors_total", "Redis errors seen by the API", registry=r
        )
