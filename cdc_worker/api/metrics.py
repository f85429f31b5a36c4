"""Every Prometheus metric of the read API, defined once, prefix ``cdc_api_``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cdc_worker.observability.metrics import add_process_collectors, build_version

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
# Probes and scrapes are not traffic: counting them would let a failing /readyz (the worker
# is down, the API is fine) trip the API's error-rate alert. An event stream lasts as long as
# its client stays: its duration is no request latency.
UNCOUNTED_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/tickets/events"})


class ApiMetrics:
    """The API's metrics on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        add_process_collectors(self.registry)
        r = self.registry
        self.build_info = Gauge(
            "cdc_api_build_info", "Always 1; the API's version as a label", ["version"], registry=r
        )
        self.build_info.labels(version=build_version()).set(1)
        self.requests = Counter(
            "cdc_api_requests_total",
            "HTTP requests (not /metrics, /healthz, /readyz), by route and status code",
            ["route", "code"],
            registry=r,
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
        self.heartbeat_age = Gauge(
            "cdc_api_worker_heartbeat_age_seconds",
            "Age of the worker's last heartbeat, as the API reads it (+Inf: never seen)",
            registry=r,
        )
        self.source_behind = Gauge(
            "cdc_api_source_behind_seconds",
            "How far the read model is behind the source, from the heartbeat and checkpoint",
            registry=r,
        )
        self.ready = Gauge("cdc_api_ready", "1 when /readyz would answer 200, else 0", registry=r)
        self.event_streams = Gauge(
            "cdc_api_event_streams", "Open /tickets/events streams (SSE clients)", registry=r
        )
        self.event_streams_max = Gauge(
            "cdc_api_event_streams_max",
            "The most open event streams allowed (CDC_API_MAX_STREAMS); more get a 503",
            registry=r,
        )
