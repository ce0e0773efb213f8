"""Tracing settings, the PrometheusRule and the Grafana dashboard."""

from __future__ import annotations

import json
import re

import pytest

from chart import (
    CHART_DIR, COMMON_SERIES, CREDENTIALS, DELIVER_SERIES, EXISTING_SECRET, METRIC_NAME, NAMESPACE,
    OTEL, OTEL_ENV, REPO_DIR, RUN_ENV, SECRET_ENV, SERIES, WEBHOOK_COUNTERS, WEBHOOK_GAUGES,
    WEBHOOK_HISTOGRAMS, WEBHOOKS, env, kinds, label_matchers, merge, one, render, render_error,
    selectors,
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
    assert set(data) <= RUN_ENV - SECRET_ENV
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
    """Alert name -> rule, from the worker's PrometheusRule these values render
    (the one that is not the dispatcher's, -webhooks)."""
    (rule,) = [o for o in render(values) if o["kind"] == "PrometheusRule"
               and not o["metadata"]["name"].endswith("-webhooks")]
    (group,) = rule["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_prometheus_rule_is_off_by_default():
    assert "PrometheusRule" not in kinds(render(CREDENTIALS))
    assert "PrometheusRule" not in kinds(render(merge(CREDENTIALS, WEBHOOKS)))


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


WEBHOOK_RULE = merge(RULE, WEBHOOKS)
WEBHOOKS_JOB = f"{FULLNAME}-webhooks"
THIS_DISPATCHER = f'job="{WEBHOOKS_JOB}", namespace="{NAMESPACE}"'
WEBHOOKS_RULE_FILE = CHART_DIR / "templates" / "webhooks-prometheusrule.yaml"

# Each dispatcher alert with its expression, duration and severity at the default values.
WEBHOOK_ALERTS = {
    "DisconnectWorkerWebhookAttemptsFailing": (
        f'1 - (sum by (namespace, job) (rate(disconnect_worker_webhook_attempts_total'
        f'{{result="delivered", {THIS_DISPATCHER}}}[15m])) / sum by (namespace, job) '
        f"(rate(disconnect_worker_webhook_attempts_total{{{THIS_DISPATCHER}}}[15m]))) > 0.5",
        "15m", "warning"),
    "DisconnectWorkerWebhookDeliveriesFailed": (
        f'sum by (namespace, job) (increase(disconnect_worker_webhook_deliveries_total'
        f'{{outcome="failed", {THIS_DISPATCHER}}}[15m])) > 0', "0s", "warning"),
    "DisconnectWorkerWebhookBacklog": (
        f"max by (namespace, job) (disconnect_worker_webhook_oldest_due_seconds"
        f"{{{THIS_DISPATCHER}}}) > 300", "10m", "warning"),
    "DisconnectWorkerWebhookEndpointDisabled": (
        f"sum by (namespace, job, reason) (increase("
        f"disconnect_worker_webhook_endpoints_disabled_total{{{THIS_DISPATCHER}}}[15m])) > 0",
        "0s", "warning"),
    "DisconnectWorkerWebhookDispatcherDown": (
        f"sum by (namespace, job) (up{{{THIS_DISPATCHER}}}) == 0 or absent(up{{{THIS_DISPATCHER}}})",
        "5m", "critical"),
}


def webhook_alerts(values):
    """Alert name -> rule, from the dispatcher's PrometheusRule these values render."""
    rule = one(render(values), "PrometheusRule", "-webhooks")
    (group,) = rule["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_the_dispatcher_s_alerts_need_both_the_rules_and_the_dispatcher():
    assert [o["metadata"]["name"] for o in render(RULE) if o["kind"] == "PrometheusRule"] == [
        FULLNAME]
    names = [o["metadata"]["name"] for o in render(WEBHOOK_RULE) if o["kind"] == "PrometheusRule"]
    assert sorted(names) == [FULLNAME, WEBHOOKS_JOB]
    # The worker's rule stays as it was.
    assert alerts(WEBHOOK_RULE) == alerts(RULE)


def test_the_dispatcher_s_rule_carries_the_labels_prometheus_selects_rules_by():
    values = merge(WEBHOOK_RULE, {"prometheusRule": {"labels": {"release": "prometheus"}}})
    rule = one(render(values), "PrometheusRule", "-webhooks")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    (group,) = rule["spec"]["groups"]
    assert group["name"] == WEBHOOKS_JOB
    assert set(group) == {"name", "rules"}


def test_each_dispatcher_alert_has_its_expression_duration_and_severity():
    rules = webhook_alerts(WEBHOOK_RULE)
    assert set(rules) == set(WEBHOOK_ALERTS)
    for name, (expr, duration, severity) in WEBHOOK_ALERTS.items():
        assert rules[name]["expr"] == expr, name
        assert rules[name]["for"] == duration, name
        assert rules[name]["labels"] == {"severity": severity}, name


def test_each_dispatcher_alert_says_what_happened_and_what_to_look_at():
    for name, rule in webhook_alerts(WEBHOOK_RULE).items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        assert rule["annotations"]["summary"].endswith("."), name
        assert "look at" in rule["annotations"]["description"].lower(), name


def test_every_dispatcher_alert_selects_only_this_release_s_dispatcher():
    for name, rule in webhook_alerts(WEBHOOK_RULE).items():
        found = selectors(rule["expr"])
        assert found, name
        for selector in found:
            assert selector.name in DELIVER_SERIES, f"{name}: {selector.name}"
            matchers = label_matchers(selector)
            assert matchers["job"] == WEBHOOKS_JOB, name
            assert matchers["namespace"] == NAMESPACE, name


def test_dispatcher_alerts_follow_its_service_name():
    values = merge(WEBHOOK_RULE, {"fullnameOverride": "revoker"})
    services = [o["metadata"]["name"] for o in render(values) if o["kind"] == "Service"]
    assert sorted(services) == ["revoker", "revoker-webhooks"]
    for name, rule in webhook_alerts(values).items():
        for selector in selectors(rule["expr"]):
            assert label_matchers(selector)["job"] == "revoker-webhooks", name


def test_the_dispatcher_s_rule_template_names_only_metrics_it_exposes():
    names = set(METRIC_NAME.findall(WEBHOOKS_RULE_FILE.read_text()))
    assert names <= DELIVER_SERIES
    assert len(names) == 4
    # ...and the worker's rule template none of them: a test of the worker
    # checks that file's names against a scrape of `run`, which has none.
    worker_rules = (CHART_DIR / "templates" / "prometheusrule.yaml").read_text()
    assert not names & set(METRIC_NAME.findall(worker_rules))


def test_dispatcher_thresholds_durations_and_severities_are_values():
    values = merge(WEBHOOK_RULE, {"prometheusRule": {
        "thresholds": {"webhookAttemptsFailing": 0.25, "webhookBacklog": 1000000},
        "for": {"webhookBacklog": "30m", "webhookDispatcherDown": "10m"},
        "severity": {"webhookEndpointDisabled": "info"},
        "alertLabels": {"team": "payments"},
    }})
    rules = webhook_alerts(values)
    assert rules["DisconnectWorkerWebhookAttemptsFailing"]["expr"].endswith(")) > 0.25")
    assert rules["DisconnectWorkerWebhookBacklog"]["expr"].endswith(" > 1000000")
    assert rules["DisconnectWorkerWebhookBacklog"]["for"] == "30m"
    assert rules["DisconnectWorkerWebhookDispatcherDown"]["for"] == "10m"
    assert rules["DisconnectWorkerWebhookEndpointDisabled"]["labels"] == {
        "severity": "info", "team": "payments"}
    assert rules["DisconnectWorkerWebhookBacklog"]["labels"] == {
        "severity": "warning", "team": "payments"}


def test_dispatcher_alert_texts_quote_its_settings():
    values = merge(WEBHOOK_RULE, {"webhooks": {"config": {
        "concurrency": 128, "queue": "hooks.q", "disableAfterSecs": 86400}}})
    rules = webhook_alerts(values)
    assert "WEBHOOK_CONCURRENCY (128:" in rules["DisconnectWorkerWebhookBacklog"][
        "annotations"]["description"]
    assert "the queue hooks.q" in rules["DisconnectWorkerWebhookDispatcherDown"][
        "annotations"]["description"]
    assert "failed for 86400 s" in rules["DisconnectWorkerWebhookEndpointDisabled"][
        "annotations"]["description"]


def _source_metrics() -> dict[str, set[str]]:
    """The dispatcher's metrics by kind, as src/observability/metrics/webhooks.rs defines them."""
    text = (REPO_DIR / "src" / "observability" / "metrics" / "webhooks.rs").read_text()
    names = dict(re.findall(r'pub const ([A-Z_]+): &str = "(disconnect_worker_webhook_[a-z_]+)";',
                            text))
    kinds_of: dict[str, set[str]] = {"counter": set(), "gauge": set(), "histogram": set()}
    for kind, constant in re.findall(r"describe_(counter|gauge|histogram)!\(\s*([A-Z_]+),", text):
        kinds_of[kind].add(names[constant])
    return kinds_of


def test_the_dispatcher_s_metrics_are_the_ones_its_source_defines():
    # The worker's test scrapes `run`, which has no webhook series, so the
    # names the chart uses are held to the dispatcher's source here.
    source = _source_metrics()
    assert source["counter"] == WEBHOOK_COUNTERS
    assert source["gauge"] == WEBHOOK_GAUGES
    assert source["histogram"] == WEBHOOK_HISTOGRAMS


DASHBOARD_FILE = CHART_DIR / "dashboards" / "disconnect-worker.json"
# The Webhooks row: the dispatcher's panels, appended to the worker's by the template.
WEBHOOKS_ROW_FILE = CHART_DIR / "dashboards" / "webhooks.json"
DASHBOARD = merge(CREDENTIALS, {"grafanaDashboard": {"enabled": True}})
# Grafana's variables, replaced as Grafana would before the query is sent
# ("$job-webhooks", the dispatcher's job, becomes FULLNAME-webhooks).
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
    """The dashboard as the ConfigMap carries it: the worker's panels, then the Webhooks row."""
    board = json.loads(DASHBOARD_FILE.read_text())
    board["panels"] += webhooks_row()
    return board


def webhooks_row() -> list:
    return json.loads(WEBHOOKS_ROW_FILE.read_text())


def is_webhooks_panel(panel: dict) -> bool:
    return panel["id"] in {p["id"] for p in webhooks_row()}


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
        # The Webhooks row reads the release's dispatcher: its job is the worker's plus -webhooks.
        job, series = (("$job-webhooks", DELIVER_SERIES) if is_webhooks_panel(panel)
                       else ("$job", SERIES))
        assert f'{{job="{job}", namespace="$namespace"' in target["expr"], panel["title"]
        found = selectors(as_sent(target["expr"]))
        assert found, panel["title"]
        for selector in found:
            assert selector.name in series, f"{panel['title']}: {selector.name}"
            assert label_matchers(selector) == {
                "job": job.replace("$job", FULLNAME), "namespace": NAMESPACE}


def test_dashboard_variables_list_the_releases_that_expose_metrics():
    for variable in dashboard()["templating"]["list"][1:]:
        query = variable["query"]["query"]
        assert query == variable["definition"]
        inner = re.fullmatch(r"label_values\((.+), (namespace|job)\)", query)
        assert inner and inner[2] == variable["name"], query
        (selector,) = selectors(as_sent(inner[1]))
        assert selector.name in SERIES
        if variable["name"] == "job":
            # The worker's jobs only: the dispatcher's (-webhooks), which
            # exports the build, pool and process metrics too, is not a choice.
            assert selector.name not in COMMON_SERIES | DELIVER_SERIES, selector.name


def test_the_webhooks_row_comes_last_with_its_own_panel_ids():
    board = json.loads(DASHBOARD_FILE.read_text())
    row = webhooks_row()
    assert row[0]["type"] == "row" and row[0]["title"] == "Webhooks"
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    assert min(p["gridPos"]["y"] for p in row) == bottom
    assert not {p["id"] for p in row} & {p["id"] for p in board["panels"]}


# What the Webhooks row must show (the dispatcher's, as Grafana sends them).
WEBHOOKS_DASHBOARD_SERIES = {
    "disconnect_worker_webhook_deliveries_total", "disconnect_worker_webhook_attempts_total",
    "disconnect_worker_webhook_attempt_seconds_bucket",
    "disconnect_worker_webhook_delivery_seconds_bucket",
    "disconnect_worker_webhook_backlog_deliveries", "disconnect_worker_webhook_oldest_due_seconds",
    "disconnect_worker_webhook_endpoints_disabled",
    "disconnect_worker_webhook_endpoints_disabled_total",
    "disconnect_worker_webhook_in_flight_attempts", "disconnect_worker_webhook_events_total",
}


def test_dashboard_shows_every_metric_it_promises():
    used = {s.name for _, target in panel_targets(dashboard())
            for s in selectors(as_sent(target["expr"]))}
    assert DASHBOARD_SERIES <= used
    assert WEBHOOKS_DASHBOARD_SERIES <= used


def test_the_webhooks_row_reads_the_table_sampled_gauges_with_max():
    # Every replica reports the same sample of the table: a sum would count it once per pod.
    for panel, target in panel_targets({"panels": webhooks_row()}):
        for gauge in ("backlog_deliveries", "oldest_due_seconds", "endpoints_disabled{"):
            if f"disconnect_worker_webhook_{gauge}" in target["expr"]:
                assert target["expr"].startswith("max"), panel["title"]


def test_the_dashboard_file_names_only_metrics_the_worker_exposes():
    # The worker's own test reads the names from the file as it is written.
    assert set(METRIC_NAME.findall(DASHBOARD_FILE.read_text())) <= SERIES


def test_the_webhooks_row_file_names_only_metrics_the_dispatcher_exposes():
    assert set(METRIC_NAME.findall(WEBHOOKS_ROW_FILE.read_text())) <= DELIVER_SERIES


def test_dashboard_configmap_carries_the_sidecar_label_and_the_file():
    objects = render(DASHBOARD)
    (configmap,) = [o for o in objects
                    if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in configmap["metadata"]  # the release's
    assert json.loads(configmap["data"]["disconnect-worker.json"]) == dashboard()


def test_the_dashboard_is_the_same_with_or_without_the_dispatcher():
    # One uid, one dashboard: every release's ConfigMap must carry the same JSON.
    def text(values):
        return one(render(values), "ConfigMap", "-dashboard")["data"]["disconnect-worker.json"]

    assert text(DASHBOARD) == text(merge(DASHBOARD, WEBHOOKS))


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
