"""Tracing settings, the PrometheusRule and the Grafana dashboard."""

from __future__ import annotations

import json
import re

import pytest

from chart import (
    CHART_DIR, CREDENTIALS, EXISTING_SECRET, METRIC_NAME, NAMESPACE, OTEL, OTEL_ENV, PROGRAM_ENV,
    SECRET_ENV, SERIES, env, kinds, label_matchers, merge, one, render, render_error, selectors,
)

# The downward-API variables OTEL_RESOURCE_ATTRIBUTES is built from.
POD_FIELDS = {
    "K8S_POD_NAME": "metadata.name",
    "K8S_NAMESPACE_NAME": "metadata.namespace",
    "K8S_NODE_NAME": "spec.nodeName",
}
POD_ATTRIBUTES = ("k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME),"
                  "k8s.node.name=$(K8S_NODE_NAME)")

OTEL_TO_ENV = {
    "endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "protocol": "OTEL_EXPORTER_OTLP_PROTOCOL",
    "serviceName": "OTEL_SERVICE_NAME",
    "tracesSampler": "OTEL_TRACES_SAMPLER",
    "tracesSamplerArg": "OTEL_TRACES_SAMPLER_ARG",
}


def test_tracing_is_off_by_default_and_no_otel_variable_is_set():
    objects = render(CREDENTIALS)
    assert not OTEL_ENV & one(objects, "ConfigMap")["data"].keys()
    for kind in ("Deployment", "Job"):
        names = env(one(objects, kind)).keys()
        assert not (OTEL_ENV | POD_FIELDS.keys()) & names, kind


def test_each_otel_value_maps_to_its_variable_in_the_configmap():
    data = one(render(merge(CREDENTIALS, OTEL)), "ConfigMap")["data"]
    for key, variable in OTEL_TO_ENV.items():
        assert data[variable] == OTEL["otel"][key], key
    assert set(data) <= PROGRAM_ENV - SECRET_ENV
    # Resource attributes name the pod: they live in the container env only.
    assert "OTEL_RESOURCE_ATTRIBUTES" not in data
    # The table above covers every otel value but resourceAttributes.
    assert set(OTEL["otel"]) == set(OTEL_TO_ENV) | {"resourceAttributes"}
    assert OTEL_ENV == set(OTEL_TO_ENV.values()) | {"OTEL_RESOURCE_ATTRIBUTES"}


def test_only_the_otel_values_that_are_set_reach_the_configmap():
    values = merge(CREDENTIALS, {"otel": {"endpoint": "http://collector:4318"}})
    data = one(render(values), "ConfigMap")["data"]
    assert OTEL_ENV & data.keys() == {"OTEL_EXPORTER_OTLP_ENDPOINT"}


def test_resource_attributes_name_the_pod_then_the_given_attributes_sorted():
    deployment = one(render(merge(CREDENTIALS, OTEL)), "Deployment")
    variables = env(deployment)
    for name, field in POD_FIELDS.items():
        assert variables[name]["valueFrom"] == {"fieldRef": {"fieldPath": field}}
    assert variables["OTEL_RESOURCE_ATTRIBUTES"]["value"] == (
        POD_ATTRIBUTES
        + ",deployment.environment.name=production,service.namespace=payments")
    # $(VAR) is expanded only from variables defined earlier in the list.
    order = [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert max(order.index(name) for name in POD_FIELDS) < order.index("OTEL_RESOURCE_ATTRIBUTES")


def test_resource_attributes_without_given_ones_end_with_the_node():
    values = merge(CREDENTIALS, {"otel": {"endpoint": "http://collector:4318"}})
    variables = env(one(render(values), "Deployment"))
    assert variables["OTEL_RESOURCE_ATTRIBUTES"]["value"] == POD_ATTRIBUTES


def test_resource_attributes_need_an_endpoint():
    values = merge(CREDENTIALS, {"otel": {"resourceAttributes": {"team": "payments"}}})
    objects = render(values)
    for kind in ("Deployment", "Job"):
        assert not (OTEL_ENV | POD_FIELDS.keys()) & env(one(objects, kind)).keys(), kind


def test_extra_env_can_still_override_the_resource_attributes():
    values = merge(CREDENTIALS, OTEL, {"extraEnv": [
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "a=b"}]})
    names = [e["name"] for e in one(render(values), "Deployment")
             ["spec"]["template"]["spec"]["containers"][0]["env"]]
    # Kubernetes keeps the last of two variables of the same name.
    assert names[-1] == "OTEL_RESOURCE_ATTRIBUTES"


@pytest.mark.parametrize("base", [CREDENTIALS, EXISTING_SECRET])
def test_the_migration_job_is_traced_with_the_worker_settings(base):
    objects = render(merge(base, OTEL))
    data = one(objects, "ConfigMap")["data"]
    job = env(one(objects, "Job"))
    for variable in OTEL_TO_ENV.values():
        assert job[variable]["value"] == data[variable], variable
    worker = env(one(objects, "Deployment"))
    for name in [*POD_FIELDS, "OTEL_RESOURCE_ATTRIBUTES"]:
        assert job[name] == worker[name], name


@pytest.mark.parametrize("sampler", ["", "always_on", "parentbased_always_on"])
def test_a_sampler_argument_without_a_ratio_sampler_is_refused(sampler):
    message = render_error(merge(CREDENTIALS, {"otel": {
        "tracesSampler": sampler, "tracesSamplerArg": "0.5"}}))
    assert "otel.tracesSamplerArg is read only by the traceidratio samplers" in message


@pytest.mark.parametrize("attribute", ["k8s.pod.name", "k8s.namespace.name", "k8s.node.name"])
def test_resource_attributes_the_chart_sets_from_the_pod_are_refused(attribute):
    message = render_error(merge(CREDENTIALS, {"otel": {"resourceAttributes": {attribute: "x"}}}))
    assert f"otel.resourceAttributes sets {attribute}, which the chart takes from the pod" in message


RULE = merge(CREDENTIALS, {"prometheusRule": {"enabled": True}})
FULLNAME = "dw-disconnect-worker"
THIS_RELEASE = f'job="{FULLNAME}", namespace="{NAMESPACE}"'

# Each alert with its expression, duration and severity at the default values.
ALERTS = {
    "DisconnectWorkerDeadLetters": (
        f"sum by (namespace, job, code) (increase(disconnect_worker_dead_letters_total"
        f"{{{THIS_RELEASE}}}[15m])) > 0", "0s", "warning"),
    "DisconnectWorkerRequestsFailing": (
        f'sum by (namespace, job) (rate(disconnect_worker_requests_total{{outcome="retried", '
        f"{THIS_RELEASE}}}[10m])) > 0", "10m", "warning"),
    "DisconnectWorkerSlowProcessing": (
        f"histogram_quantile(0.99, sum by (namespace, job, le) (rate("
        f"disconnect_worker_processing_seconds_bucket{{{THIS_RELEASE}}}[5m]))) > 1",
        "10m", "warning"),
    "DisconnectWorkerSustainedRetries": (
        f"sum by (namespace, job, operation) (rate(disconnect_worker_retries_total"
        f"{{{THIS_RELEASE}}}[5m])) > 0", "10m", "critical"),
    "DisconnectWorkerBrokerReconnects": (
        f"increase(disconnect_worker_broker_reconnects_total{{{THIS_RELEASE}}}[15m]) > 3",
        "0s", "warning"),
    "DisconnectWorkerEventsLate": (
        f'sum by (namespace, job) (rate(disconnect_worker_events_published_total{{path="relay", '
        f"{THIS_RELEASE}}}[15m])) > 0", "15m", "warning"),
    "DisconnectWorkerOutboxStuck": (
        f"max by (namespace, job) (disconnect_worker_outbox_oldest_pending_age_seconds"
        f"{{{THIS_RELEASE}}}) > 60", "5m", "critical"),
    "DisconnectWorkerEventsSetAside": (
        f"max by (namespace, job) (disconnect_worker_outbox_set_aside_events"
        f"{{{THIS_RELEASE}}}) > 0", "0s", "critical"),
    "DisconnectWorkerDeadLettersUnroutable": (
        f"sum by (namespace, job) (increase(disconnect_worker_dead_letter_failures_total"
        f'{{reason="unroutable", {THIS_RELEASE}}}[15m])) > 0', "0s", "critical"),
    "DisconnectWorkerSaturated": (
        f"max by (namespace, job) (disconnect_worker_in_flight_requests{{{THIS_RELEASE}}}) >= 256",
        "10m", "warning"),
    "DisconnectWorkerDatabasePoolExhausted": (
        f"max by (namespace, job) (disconnect_worker_database_pool_waiting{{{THIS_RELEASE}}}) > 0",
        "5m", "warning"),
    "DisconnectWorkerDatabaseReplicationAsynchronous": (
        f"max by (namespace, job) (disconnect_worker_database_replication"
        f'{{mode="asynchronous", {THIS_RELEASE}}}) > 0', "15m", "warning"),
    "DisconnectWorkerSlowEndToEnd": (
        f"histogram_quantile(0.99, sum by (namespace, job, le) (rate("
        f"disconnect_worker_publish_to_event_seconds_bucket{{{THIS_RELEASE}}}[5m]))) > 30",
        "10m", "warning"),
}


def alerts(values):
    """Alert name -> rule, from the one PrometheusRule these values render."""
    (group,) = one(render(values), "PrometheusRule")["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_prometheus_rule_is_off_by_default():
    assert "PrometheusRule" not in kinds(render(CREDENTIALS))


def test_prometheus_rule_carries_the_labels_prometheus_selects_rules_by():
    values = merge(RULE, {"prometheusRule": {"labels": {"release": "prometheus"}}})
    rule = one(render(values), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "dw"
    (group,) = rule["spec"]["groups"]
    assert group["name"] == FULLNAME
    assert set(group) == {"name", "rules"}


def test_each_alert_has_its_expression_duration_and_severity():
    rules = alerts(RULE)
    assert set(rules) == set(ALERTS)
    for name, (expr, duration, severity) in ALERTS.items():
        assert rules[name]["expr"] == expr, name
        assert rules[name]["for"] == duration, name
        assert rules[name]["labels"] == {"severity": severity}, name


def test_each_alert_says_what_happened_and_what_to_look_at():
    for name, rule in alerts(RULE).items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        assert rule["annotations"]["summary"].endswith("."), name
        assert "look at" in rule["annotations"]["description"].lower(), name


def test_every_alert_expression_parses_and_selects_only_this_release():
    for name, rule in alerts(RULE).items():
        found = selectors(rule["expr"])
        assert found, name
        for selector in found:
            assert selector.name in SERIES, f"{name}: {selector.name}"
            matchers = label_matchers(selector)
            assert matchers["job"] == FULLNAME, name
            assert matchers["namespace"] == NAMESPACE, name


def test_alerts_follow_the_service_name_and_the_release_namespace():
    values = merge(RULE, {"fullnameOverride": "revoker"})
    objects = render(values)
    assert one(objects, "Service")["metadata"]["name"] == "revoker"
    for name, rule in alerts(values).items():
        for selector in selectors(rule["expr"]):
            assert label_matchers(selector)["job"] == "revoker", name


def test_the_rule_template_names_only_metrics_the_worker_exposes():
    # The worker's own test reads the names from the file as it is written.
    text = (CHART_DIR / "templates" / "prometheusrule.yaml").read_text()
    names = set(METRIC_NAME.findall(text))
    assert names <= SERIES
    assert len(names) == 13


def test_thresholds_durations_and_severities_are_values():
    values = merge(RULE, {"prometheusRule": {
        "thresholds": {"slowProcessing": 0.25, "brokerReconnects": 10, "outboxStuck": 1000000},
        "for": {"slowProcessing": "30m", "deadLetters": "5m"},
        "severity": {"outboxStuck": "page"},
        "alertLabels": {"team": "payments"},
    }})
    rules = alerts(values)
    assert rules["DisconnectWorkerSlowProcessing"]["expr"].endswith(") > 0.25")
    assert rules["DisconnectWorkerSlowProcessing"]["for"] == "30m"
    assert rules["DisconnectWorkerBrokerReconnects"]["expr"].endswith(" > 10")
    # Helm reads numbers as floats: a large one must not print as 1e+06.
    assert rules["DisconnectWorkerOutboxStuck"]["expr"].endswith(" > 1000000")
    assert rules["DisconnectWorkerDeadLetters"]["for"] == "5m"
    assert rules["DisconnectWorkerOutboxStuck"]["labels"] == {"severity": "page", "team": "payments"}
    assert rules["DisconnectWorkerSaturated"]["labels"] == {"severity": "warning", "team": "payments"}


def test_saturation_is_the_prefetch_unless_a_threshold_is_given():
    rules = alerts(merge(RULE, {"config": {"prefetch": 64}}))
    assert rules["DisconnectWorkerSaturated"]["expr"].endswith(" >= 64")
    assert "(PREFETCH is 64)" in rules["DisconnectWorkerSaturated"]["annotations"]["description"]
    rules = alerts(merge(RULE, {"config": {"prefetch": 64},
                                "prometheusRule": {"thresholds": {"saturated": 60}}}))
    assert rules["DisconnectWorkerSaturated"]["expr"].endswith(" >= 60")


def test_alert_texts_are_prometheus_templates_left_for_prometheus():
    rules = alerts(RULE)
    description = rules["DisconnectWorkerDeadLetters"]["annotations"]["description"]
    assert description.startswith("{{ $value | humanize }} requests with code {{ $labels.code }}")
    assert "disconnect.requests.dead" in description  # config.deadLetterQueue


DASHBOARD_FILE = CHART_DIR / "dashboards" / "disconnect-worker.json"
DASHBOARD = merge(CREDENTIALS, {"grafanaDashboard": {"enabled": True}})
# Grafana's variables, replaced as Grafana would before the query is sent.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": NAMESPACE, "$job": FULLNAME}
# What the panels must show, by the series they read.
DASHBOARD_SERIES = {
    "disconnect_worker_requests_total", "disconnect_worker_dead_letters_total",
    "disconnect_worker_processing_seconds_bucket",
    "disconnect_worker_publish_to_event_seconds_bucket", "disconnect_worker_retries_total",
    "disconnect_worker_broker_reconnects_total", "disconnect_worker_events_published_total",
    "disconnect_worker_outbox_pending_events",
    "disconnect_worker_outbox_oldest_pending_age_seconds", "disconnect_worker_in_flight_requests",
    "disconnect_worker_database_pool_size", "disconnect_worker_database_pool_in_use",
    "disconnect_worker_database_pool_waiting", "disconnect_worker_database_pool_max_size",
    "process_cpu_seconds_total", "process_resident_memory_bytes",
    "disconnect_worker_tokens_revoked_total", "disconnect_worker_database_replication",
    "disconnect_worker_database_standbys",
}


def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def as_sent(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def panel_targets(board: dict):
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_dashboard_is_json_with_a_datasource_namespace_and_job_variable():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "job"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert board["uid"] == "disconnect-worker"
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def test_every_dashboard_query_reads_the_chosen_release_from_the_chosen_datasource():
    for panel, target in panel_targets(dashboard()):
        assert panel["datasource"] == target["datasource"] == {
            "type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert '{job="$job", namespace="$namespace"' in target["expr"], panel["title"]
        found = selectors(as_sent(target["expr"]))
        assert found, panel["title"]
        for selector in found:
            assert selector.name in SERIES, f"{panel['title']}: {selector.name}"
            assert label_matchers(selector) == {"job": FULLNAME, "namespace": NAMESPACE}


def test_dashboard_variables_list_the_releases_that_expose_metrics():
    for variable in dashboard()["templating"]["list"][1:]:
        query = variable["query"]["query"]
        assert query == variable["definition"]
        inner = re.fullmatch(r"label_values\((.+), (namespace|job)\)", query)
        assert inner and inner[2] == variable["name"], query
        (selector,) = selectors(as_sent(inner[1]))
        assert selector.name in SERIES


def test_dashboard_shows_every_metric_it_promises():
    used = {s.name for _, target in panel_targets(dashboard())
            for s in selectors(as_sent(target["expr"]))}
    assert DASHBOARD_SERIES <= used


def test_the_dashboard_file_names_only_metrics_the_worker_exposes():
    # The worker's own test reads the names from the file as it is written.
    assert set(METRIC_NAME.findall(DASHBOARD_FILE.read_text())) <= SERIES


def test_dashboard_configmap_carries_the_sidecar_label_and_the_file():
    objects = render(DASHBOARD)
    (configmap,) = [o for o in objects
                    if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in configmap["metadata"]  # the release's
    assert json.loads(configmap["data"]["disconnect-worker.json"]) == dashboard()


def test_dashboard_labels_annotations_and_namespace_are_values():
    values = merge(DASHBOARD, {"grafanaDashboard": {
        "labels": {"grafana_dashboard": None, "dashboards": "payments"},
        "annotations": {"grafana_folder": "Payments"},
        "namespace": "monitoring",
    }})
    configmap = one(render(values), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["dashboards"] == "payments"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Payments"}


def test_dashboard_is_off_by_default():
    names = [o["metadata"]["name"] for o in render(CREDENTIALS) if o["kind"] == "ConfigMap"]
    assert names == [FULLNAME]
