"""Ray Serve's own metrics as PromQL: one place for the series names the Serve HA system
watches, read by the CloudWatch alarms and dashboard (OTel Container Insights) and by the
local drill (the demo's Prometheus).

Every Ray node exports Prometheus metrics on its metrics export port (KubeRay sets
`--metrics-export-port=8080` and a `metrics` container port on every Ray container; the
local stack passes the same flag). Ray prefixes its metrics with `ray_`, and the Prometheus
exposition adds `_total` to counters and `_bucket` to histograms. Names checked against Ray
2.60 (`ray/serve/_private/request_ingress_metrics.py`, `router.py`, `deployment_state.py`,
`application_state.py`) and a scrape of the local stack (tests/test_local_metrics.py). The
Amazon CloudWatch Observability add-on (≥ 8.0.0, OTel Container Insights) keeps these names
("One scrape covers ... Ray Serve metrics (ray_serve_*)": AWS CloudWatch docs, "Collecting
Ray metrics with OTel Container Insights", container-insights-eks-otel-ray).
"""

from __future__ import annotations

from dataclasses import dataclass

# HTTP requests the Serve proxies answered (labels route, method, application, status_code).
REQUESTS = "ray_serve_num_http_requests_total"
# The application's requests: the proxies' own health route (`/-/healthz`, 503 while a node
# drains) carries no application label and stays out of rates, errors and latency.
APPLICATION_REQUESTS = 'application!=""'
# Requests the proxies answered with an error (labels route, error_code, method, application).
ERROR_REQUESTS = "ray_serve_num_http_error_requests_total"
# Generating requests a worker's Serve proxy answered itself, 429 `queue_full` beyond its share
# of the replicas' bound (images/ray-serve/ray_serve_llm/proxy_gate.py, a counter per proxy).
# Serve's proxy counts do not see them: the gate runs in front of the proxy's own handling.
PROXY_SHED_REQUESTS = "ray_serve_llm_proxy_shed_requests_total"
# End-to-end latency at the proxy, a histogram in milliseconds.
LATENCY_BUCKETS = "ray_serve_http_request_latency_ms_bucket"
# Requests in flight at the replicas, as each handle counts them.
ONGOING_REQUESTS = "ray_serve_num_ongoing_requests_at_replicas"
# Requests a handle holds back because every replica is busy (Serve's queue in front of them:
# the backstop behind the replicas' own).
QUEUED_REQUESTS = "ray_serve_deployment_queued_queries"
# Requests waiting in the model replicas' own queues (images/ray-serve/ray_serve_llm/admission.py,
# a gauge per replica). Serve counts them among its ongoing requests too.
REPLICA_QUEUED_REQUESTS = "ray_serve_llm_queued_requests"
# 1 per healthy replica (labels deployment, replica, application).
HEALTHY_REPLICAS = "ray_serve_deployment_replica_healthy"
# The Serve controller's view of each application: 6 is RUNNING (0 UNKNOWN, 1 DEPLOY_FAILED,
# 2 UNHEALTHY, 3 NOT_STARTED, 4 DELETING, 5 DEPLOYING).
APPLICATION_STATUS = "ray_serve_application_status"
APPLICATION_RUNNING = 6
# Tokens the model server generated (images/ray-serve/ray_serve_llm/app.py).
GENERATED_TOKENS = "ray_serve_llm_generated_tokens_total"

# How far back a rate looks: four of the add-on's 30 s scrapes.
RATE_WINDOW = "2m"


def eks_selector(cluster_name: str, namespace: str) -> str:
    """The series of one cluster's namespace as CloudWatch's PromQL names them: OTel Container
    Insights enriches each series with OpenTelemetry semantic-convention resource attributes,
    which CloudWatch's PromQL reads as `@resource.`-prefixed labels (AWS CloudWatch docs,
    "Create an alarm using a PromQL query")."""
    return f'"@resource.k8s.cluster.name"="{cluster_name}", "@resource.k8s.namespace.name"="{namespace}"'


@dataclass(frozen=True)
class Panel:
    """One graph of a dashboard: its title, its PromQL and the unit of its values."""

    title: str
    query: str
    unit: str


@dataclass(frozen=True)
class ServeQueries:
    """PromQL over Serve's series, narrowed by `selector` (label matchers without braces,
    e.g. `"@resource.k8s.cluster.name"="ray-serve-ha"`; empty: every series the backend holds)."""

    selector: str = ""
    window: str = RATE_WINDOW

    def _series(self, name: str, extra: str = "") -> str:
        matchers = ", ".join(m for m in (self.selector, extra) if m)
        return f"{name}{{{matchers}}}" if matchers else name

    def _rate(self, name: str, extra: str = "") -> str:
        return f"rate({self._series(name, extra)}[{self.window}])"

    def _proxy_shed_rate(self) -> str:
        # Ray creates a counter's series at its first increment: none before the first shed.
        return f"(sum({self._rate(PROXY_SHED_REQUESTS)}) or vector(0))"

    def request_rate(self) -> str:
        """Requests per second, all answers (the proxies' own and their gates' 429s)."""
        return f"sum({self._rate(REQUESTS, APPLICATION_REQUESTS)}) + {self._proxy_shed_rate()}"

    def status_rate(self, status_class: str) -> str:
        """Answers per second with a status code of the class, `4` or `5`."""
        matcher = f'{APPLICATION_REQUESTS}, status_code=~"{status_class}.."'
        answered = f"sum({self._rate(REQUESTS, matcher)})"
        if status_class != "4":
            return answered
        # Either part may have no series yet (a counter's series comes at its first increment).
        return f"({answered} or vector(0)) + {self._proxy_shed_rate()}"

    def error_percent(self, status_class: str) -> str:
        """The share of answers with a status code of the class, percent (no traffic: no value)."""
        return f"100 * ({self.status_rate(status_class)}) / ({self.request_rate()})"

    def error_rate(self) -> str:
        """Errored answers per second as the proxies count them."""
        return f"sum({self._rate(ERROR_REQUESTS, APPLICATION_REQUESTS)})"

    def latency_ms(self, quantile: float) -> str:
        """A quantile of the end-to-end latency at the proxies, milliseconds."""
        return f"histogram_quantile({quantile}, sum by (le) ({self._rate(LATENCY_BUCKETS, APPLICATION_REQUESTS)}))"

    def ongoing_requests(self) -> str:
        return f"sum({self._series(ONGOING_REQUESTS)})"

    def queued_requests(self) -> str:
        """Requests waiting for a slot: in the replicas' own queues and in Serve's in front."""
        return f"sum({self._series(REPLICA_QUEUED_REQUESTS)}) + sum({self._series(QUEUED_REQUESTS)})"

    def healthy_replicas(self) -> str:
        return f"sum({self._series(HEALTHY_REPLICAS)})"

    def tokens_per_second(self) -> str:
        return f"sum({self._rate(GENERATED_TOKENS)})"

    def not_running(self) -> str:
        """A series while some Serve application is not RUNNING, or while no Serve controller
        reports at all (the head is gone, or the selector matches nothing): what KubeRay's
        RayService `Ready` condition follows."""
        status = self._series(APPLICATION_STATUS)
        return f"(min({status}) < {APPLICATION_RUNNING}) or absent({status})"

    def graphs(self) -> list[Panel]:
        """What a dashboard of the service graphs: each panel's title, query and unit."""
        return [
            Panel("Requests per second", self.request_rate(), "requests/s"),
            Panel("4xx per second", self.status_rate("4"), "answers/s"),
            Panel("5xx per second", self.status_rate("5"), "answers/s"),
            Panel("Latency p50 (ms)", self.latency_ms(0.5), "ms"),
            Panel("Latency p99 (ms)", self.latency_ms(0.99), "ms"),
            Panel("Ongoing requests", self.ongoing_requests(), "requests"),
            Panel("Queued requests", self.queued_requests(), "requests"),
            Panel("Healthy replicas", self.healthy_replicas(), "replicas"),
            Panel("Generated tokens per second", self.tokens_per_second(), "tokens/s"),
        ]

    def panels(self) -> dict[str, str]:
        """Each graph's query, by title."""
        return {panel.title: panel.query for panel in self.graphs()}

    def drill_series(self) -> dict[str, str]:
        """What a drill's timeline sets beside the client's view, by the key its report uses."""
        return {
            "requests_per_s": self.request_rate(),
            "errors_5xx_per_s": self.status_rate("5"),
            "p99_ms": self.latency_ms(0.99),
            "queued": self.queued_requests(),
        }
