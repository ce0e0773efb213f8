"""Render helm/disconnect-worker with Helm's own engine and validate the result.

helm-python-sdk embeds Helm's Go library (libhelm_c), so these tests exercise
the same template engine and values-schema validation as `helm install`,
without a helm binary or a cluster.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import promql_parser as promql
import yaml

REPO_DIR = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_DIR / "helm" / "disconnect-worker"
RELEASE = "dw"
NAMESPACE = "payments"

# The oldest Kubernetes the chart claims to support (Chart.yaml kubeVersion)
# and the newest one whose schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", "1.37.0")

# Custom resources: the Kubernetes OpenAPI schemas do not describe them, so
# kubernetes-validate has nothing to check them against. Their shape is
# asserted by dedicated tests instead.
CRD_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication", "PrometheusRule"}

# Distinctive fake credentials: finding these strings anywhere but in a
# Secret means the chart leaked a credential.
DB_PASSWORD = "s3cr3t-db"
AMQP_PASSWORD = "s3cr3t-mq"
DATABASE_URL = f"postgres://u:{DB_PASSWORD}@db/x"
AMQP_URL = f"amqps://u:{AMQP_PASSWORD}@mq:5671/%2f"
CREDENTIALS = {"secret": {"databaseUrl": DATABASE_URL, "amqpUrl": AMQP_URL}}
# A distinctive fake WEBHOOK_SECRET_KEY: 32 bytes in base64, as openssl rand -base64 32 prints.
WEBHOOK_KEY = "czNjcjN0LXdlYmhvb2sta2V5LTAxMjM0NTY3ODlhYmM="
WEBHOOKS = {"webhooks": {"enabled": True, "secretKey": {"value": WEBHOOK_KEY}}}
WEBHOOKS_EXISTING_SECRET = {"webhooks": {"enabled": True, "secretKey": {
    "existingSecret": "dw-webhook-key", "key": "sealing-key"}}}

EXISTING_SECRET = {
    "existingSecret": "dw-credentials",
    "existingSecretKeys": {"databaseUrl": "pg-url", "amqpUrl": "rabbit-url"},
}

# The standard OpenTelemetry variables the worker honours. The OpenTelemetry
# SDK reads them itself, not clap, so no `env = ...` attribute names them:
# they are listed here, exactly these and no other OTEL_* name. The chart sets
# each only when its otel.* value is set (OTEL_RESOURCE_ATTRIBUTES in the
# container env, the others in the ConfigMap).
OTEL_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
}


def command_env(command: str) -> set[str]:
    """Every environment variable one command of the program reads, taken
    from its source so the chart cannot drift from it: the `env = ...` of
    each command-line setting (a literal, or a constant of the same files) of
    the command's variant in src/cli.rs, of the structs it flattens in,
    recursively (src/cli.rs and src/config/), and of the global options;
    RUST_LOG, which tracing's filter reads, and OTEL_ENV, which the
    OpenTelemetry SDK reads, whatever the command."""
    sources = [REPO_DIR / "src" / "cli.rs", *sorted((REPO_DIR / "src" / "config").glob("*.rs"))]
    text = "\n".join(path.read_text() for path in sources)
    constants = dict(re.findall(r'pub const ([A-Z_]+): &str =\s*"([A-Z_]+)";', text))
    # Struct bodies end at the first closing brace in column 0; the command
    # variants (`Run { ... },` in `enum Command`) at the first one indented four.
    bodies = dict(re.findall(r"\bpub struct (\w+) \{\n(.*?)\n\}", text, re.S))
    (commands,) = re.findall(r"\bpub enum Command \{\n(.*?)\n\}", text, re.S)
    variants = dict(re.findall(r"^    (\w+) \{\n(.*?)\n    \},?$", commands, re.S | re.M))

    def env_of(body: str) -> set[str]:
        names = set()
        for literal, constant in re.findall(r'\benv = (?:"([A-Z_]+)"|([A-Z_]+)\b)', body):
            names.add(literal or constants[constant])
        for flattened in re.findall(r"#\[command\(flatten\)\]\s*(?:pub )?\w+: (\w+),", body):
            names |= env_of(bodies[flattened])
        return names

    return {"RUST_LOG", *OTEL_ENV} | env_of(bodies["Cli"]) | env_of(variants[command])


# Every environment variable the worker (`disconnect-worker run`) reads.
RUN_ENV = command_env("Run")
# Every environment variable the webhook dispatcher (`disconnect-worker deliver`) reads.
DELIVER_ENV = command_env("Deliver")
assert {"DATABASE_URL", "PREFETCH", "RUN_MIGRATIONS", "LOG_FORMAT"} <= RUN_ENV
assert {"DATABASE_URL", "WEBHOOK_SECRET_KEY", "WEBHOOK_QUEUE", "LOG_FORMAT"} <= DELIVER_ENV
assert not {"RUN_MIGRATIONS", "PREFETCH"} & DELIVER_ENV
SECRET_ENV = {"DATABASE_URL", "AMQP_URL"}
# The dispatcher's own credential, from a Secret of its own (or the user's).
WEBHOOK_SECRET_ENV = {"WEBHOOK_SECRET_KEY"}
# Broker settings deliver parses (it shares the worker's BrokerArgs) but never
# reads: the request and dead-letter topology is the worker's. Its ConfigMap
# leaves them out; test_render.py checks deliver's source still ignores them.
DELIVER_UNUSED_ENV = {
    "REQUEST_EXCHANGE", "REQUEST_QUEUE", "REQUEST_ROUTING_KEY", "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE", "DELIVERY_LIMIT",
}


# Every metric the worker exposes at /metrics (docs/operations.md, "Health and metrics"):
# alerts and dashboard panels may use these and nothing else. A test of the
# worker checks the same names, read from the rule template and the dashboard,
# against a real scrape.
COUNTERS = {
    "disconnect_worker_requests_total",
    "disconnect_worker_dead_letters_total",
    "disconnect_worker_tokens_revoked_total",
    "disconnect_worker_entities_disconnected_total",
    "disconnect_worker_retries_total",
    "disconnect_worker_broker_reconnects_total",
    "disconnect_worker_events_published_total",
    "disconnect_worker_fanout_connections_total",
    "disconnect_worker_fanouts_finished_total",
    "disconnect_worker_retention_deleted_rows_total",
    "disconnect_worker_timeouts_total",
    "disconnect_worker_dead_letter_failures_total",
    "disconnect_worker_events_set_aside_total",
    "process_cpu_seconds_total",
}
GAUGES = {
    "disconnect_worker_outbox_pending_events",
    "disconnect_worker_outbox_oldest_pending_age_seconds",
    "disconnect_worker_outbox_set_aside_events",
    "disconnect_worker_in_flight_requests",
    "disconnect_worker_build_info",
    "disconnect_worker_database_pool_size",
    "disconnect_worker_database_pool_in_use",
    "disconnect_worker_database_pool_waiting",
    "disconnect_worker_database_pool_max_size",
    "disconnect_worker_database_replication",
    "disconnect_worker_database_standbys",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
}
HISTOGRAMS = {"disconnect_worker_processing_seconds", "disconnect_worker_publish_to_event_seconds"}
# The series names a query can select: a histogram only through its parts.
SERIES = COUNTERS | GAUGES | {
    name + part for name in HISTOGRAMS for part in ("_bucket", "_sum", "_count")}
# How the worker's test finds metric names in a file.
METRIC_NAME = re.compile(r"\b(?:disconnect_worker|process)_[a-z0-9_]+")

# The webhook dispatcher's own metrics (`deliver` only; docs/webhooks.md,
# "Metrics and alerts"): its alerts (webhooks-prometheusrule.yaml) and the
# dashboard's Webhooks row (dashboards/webhooks.json) may use these, the
# metrics it shares with the worker and Prometheus's `up`. The worker's test
# scrapes `run`, which has none of them, so test_observability.py checks these
# names against the source (src/observability/metrics/webhooks.rs) instead.
WEBHOOK_COUNTERS = {
    "disconnect_worker_webhook_events_total",
    "disconnect_worker_webhook_attempts_total",
    "disconnect_worker_webhook_deliveries_total",
    "disconnect_worker_webhook_endpoints_disabled_total",
}
WEBHOOK_GAUGES = {
    "disconnect_worker_webhook_backlog_deliveries",
    "disconnect_worker_webhook_oldest_due_seconds",
    "disconnect_worker_webhook_endpoints_disabled",
    "disconnect_worker_webhook_in_flight_attempts",
}
WEBHOOK_HISTOGRAMS = {
    "disconnect_worker_webhook_attempt_seconds",
    "disconnect_worker_webhook_delivery_seconds",
}
# What both commands export: the build, the pool and the process.
COMMON_SERIES = {
    "disconnect_worker_build_info", "disconnect_worker_database_pool_size",
    "disconnect_worker_database_pool_in_use", "disconnect_worker_database_pool_waiting",
    "disconnect_worker_database_pool_max_size", "process_cpu_seconds_total",
    "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
    "process_max_fds", "process_start_time_seconds", "process_threads",
}
assert COMMON_SERIES <= SERIES
# Prometheus's own series for each scrape target.
SCRAPE_SERIES = {"up"}
# The series a query about the dispatcher can select.
DELIVER_SERIES = WEBHOOK_COUNTERS | WEBHOOK_GAUGES | COMMON_SERIES | SCRAPE_SERIES | {
    name + part for name in WEBHOOK_HISTOGRAMS for part in ("_bucket", "_sum", "_count")}


def selectors(expr: str) -> list[promql.VectorSelector]:
    """Every vector selector of a PromQL expression (which must parse)."""
    found: list[promql.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            found.append(node)

    promql.walk(promql.parse(expr), visit)
    return found


def label_matchers(selector: promql.VectorSelector) -> dict[str, str]:
    """The selector's label matchers, all of which must be equality matchers."""
    matchers = selector.matchers.matchers
    assert all(m.op == promql.MatchOp.Equal for m in matchers), selector
    return {m.name: m.value for m in matchers}


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value layers, later ones winning (as repeated -f files do)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# Every OpenTelemetry value set.
OTEL = {"otel": {
    "endpoint": "http://otel-collector.observability:4318",
    "protocol": "http/protobuf",
    "serviceName": "disconnect-worker-payments",
    "tracesSampler": "parentbased_traceidratio",
    "tracesSamplerArg": "0.1",
    "resourceAttributes": {"service.namespace": "payments",
                           "deployment.environment.name": "production"},
}}

# The value sets every generic test (lint, schemas, no leaked credential) runs on.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": CREDENTIALS,
    "existing-secret": EXISTING_SECRET,
    "keda": merge(CREDENTIALS, {"keda": {"enabled": True}}),
    "keda-existing-secret": merge(EXISTING_SECRET, {"keda": {"enabled": True}}),
    "keda-http-tls": merge(CREDENTIALS, {
        "secret": {"kedaManagementUrl": f"https://u:{AMQP_PASSWORD}@mq:15671/%2f"},
        "keda": {"enabled": True, "protocol": "http", "activationValue": 5,
                 "tls": {"enabled": True, "secretName": "mq-client-tls",
                         "keys": {"cert": "tls.crt", "key": "tls.key"}}},
    }),
    "keda-http-existing-secret": merge(EXISTING_SECRET, {
        "existingSecretKeys": {"kedaManagementUrl": "rabbit-management-url"},
        "keda": {"enabled": True, "protocol": "http"},
    }),
    "service-monitor": merge(CREDENTIALS, {"serviceMonitor": {"enabled": True}}),
    "network-policy": merge(CREDENTIALS, {"networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": {"enabled": True, "rules": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
             "ports": [{"port": 5432}, {"port": 5671}]},
        ]},
    }}),
    "hpa": merge(CREDENTIALS, {"autoscaling": {"enabled": True}}),
    "grafana-dashboard": merge(CREDENTIALS, {"grafanaDashboard": {
        "enabled": True, "annotations": {"grafana_folder": "Payments"}, "namespace": "monitoring"}}),
    "prometheus-rule": merge(CREDENTIALS, {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                           "alertLabels": {"team": "payments"}},
    }),
    "otel": merge(CREDENTIALS, OTEL),
    "otel-no-migrations": merge(EXISTING_SECRET, OTEL, {"migrations": {"enabled": False}}),
    "no-migrations": merge(CREDENTIALS, {"migrations": {"enabled": False}}),
    "no-optional-extras": merge(CREDENTIALS, {
        "serviceAccount": {"create": False},
        "podDisruptionBudget": {"enabled": False},
        "topologySpreadConstraints": [],
        "resources": {},
    }),
    "webhooks": merge(CREDENTIALS, WEBHOOKS),
    "webhooks-existing-secret": merge(EXISTING_SECRET, WEBHOOKS_EXISTING_SECRET),
    # Every optional object of the dispatcher: its ServiceMonitor, alerts,
    # NetworkPolicy with egress, PDB, traced.
    "webhooks-everything": merge(CREDENTIALS, WEBHOOKS, OTEL, {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                           "alertLabels": {"team": "payments"}},
        "grafanaDashboard": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "egress": {"enabled": True, "rules": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                 "ports": [{"port": 5432}, {"port": 5671}]},
            ]},
        },
        "webhooks": {"replicaCount": 3, "config": {"timeoutSecs": 2.5, "retryJitter": 0.1},
                     "podLabels": {"team": "payments"},
                     "nodeSelector": {"egress": "internet"}},
    }),
    "customised": merge(EXISTING_SECRET, {
        "image": {"repository": "registry.example/dw", "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "podLabels": {"team": "payments"},
        "podAnnotations": {"example.com/owner": "payments"},
        "priorityClassName": "high",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "workers",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "networkPolicy": {"enabled": True},
    }),
}


@lru_cache(maxsize=1)
def _chart() -> helm.Chart:
    # Loaded once per test run; charts are immutable, so sharing is safe.
    return helm.Chart.load(CHART_DIR)


def default_values() -> dict[str, Any]:
    """values.yaml as Helm reads it."""
    return _chart().values


def render_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, exactly as `helm template` produces it."""
    return _chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for these values."""
    objects = []
    for path, text in render_files(values).items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render_error(values: dict[str, Any]) -> str:
    """The message Helm refuses these values with (the test fails if it accepts them)."""
    try:
        render_files(values)
    except (helm.HelmValuesError, helm.HelmRenderError) as error:
        return str(error)
    raise AssertionError(f"the chart accepted values it should refuse: {values}")


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The single object of this kind (whose name ends with name_suffix)."""
    found = [o for o in objects
             if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind}*{name_suffix}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def validate_strict(obj: dict[str, Any], kube_version: str) -> None:
    """Check an object against Kubernetes' schemas, unknown fields refused."""
    what = f"{obj['kind']}/{obj['metadata']['name']} on Kubernetes {kube_version}"
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        # The library's own message quotes the whole schema: keep the point.
        where = ".".join(str(part) for part in error.path)
        raise AssertionError(f"{what}: {where}: {error.message}") from None
    except kubernetes_validate.SchemaNotFoundError as error:
        raise AssertionError(f"{what}: {error.message}") from None


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def env(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Container env by name (the EnvVar objects)."""
    return {e["name"]: e for e in container(workload).get("env", [])}
