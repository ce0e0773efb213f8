"""helm lint, values.schema.json, and the documentation of values.yaml."""

from __future__ import annotations

import json
import re

import helm_python as helm
import jsonschema
import pytest

from chart import CHART_DIR, CREDENTIALS, KUBE_VERSIONS, SCENARIOS, merge, render_error

WARNING = 2  # lint severities: 1 info, 2 warning, 3 error


@pytest.mark.parametrize("scenario", ["no values"] + sorted(SCENARIOS))
def test_helm_lint_is_clean(scenario):
    values = SCENARIOS.get(scenario)
    for kube_version in KUBE_VERSIONS:
        report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{kube_version}")
        problems = [m for m in report["messages"] if m["severity"] >= WARNING]
        assert not report["errors"] and not problems, report


def test_schema_is_a_valid_draft_07_schema():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("values, where, why", [
    ({"replicaCount": -1}, "/replicaCount", "minimum"),
    ({"replicaCount": "two"}, "/replicaCount", "integer"),
    ({"config": {"logFormat": "xml"}}, "/config/logFormat", "'text', 'json'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "'Always'"),
    ({"config": {"prefetch": 0}}, "/config/prefetch", "minimum"),
    ({"config": {"prefetch": "32"}}, "/config/prefetch", "integer"),
    ({"config": {"requestQueue": "amq.requests"}}, "/config/requestQueue", ""),
    ({"config": {"prefech": 8}}, "/config", "prefech"),
    ({"config": {"amqpHeartbeatSecs": 0}}, "/config/amqpHeartbeatSecs", "minimum"),
    ({"config": {"databaseTransactionTimeoutSecs": 0}},
     "/config/databaseTransactionTimeoutSecs", "minimum"),
    ({"migrations": {"enabled": "yes"}}, "/migrations/enabled", "boolean"),
    ({"secret": {"databaseUrl": "mysql://u:p@h/x"}}, "/secret/databaseUrl", ""),
    ({"terminationGracePeriodSeconds": 0}, "/terminationGracePeriodSeconds", "minimum"),
    ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable", ""),
    ({"otel": {"protocol": "grpc/json"}}, "/otel/protocol", "'http/protobuf'"),
    # The worker exports over HTTP only, and refuses grpc at start-up.
    ({"otel": {"protocol": "grpc"}}, "/otel/protocol", "'http/protobuf'"),
    ({"otel": {"tracesSampler": "sometimes"}}, "/otel/tracesSampler", "'traceidratio'"),
    ({"otel": {"tracesSamplerArg": 0.1}}, "/otel/tracesSamplerArg", "string"),
    ({"otel": {"tracesSamplerArg": "1.5"}}, "/otel/tracesSamplerArg", ""),
    ({"otel": {"endpoint": "otel-collector:4318"}}, "/otel/endpoint", ""),
    ({"otel": {"resourceAttributes": {"team": "a,b"}}}, "/otel/resourceAttributes/team", ""),
    ({"otel": {"resourceAttributes": {"a=b": "c"}}}, "/otel/resourceAttributes", ""),
    ({"otel": {"exporter": "otlp"}}, "/otel", "exporter"),
    ({"prometheusRule": {"for": {"deadLetters": "5 minutes"}}}, "/prometheusRule/for/deadLetters", ""),
    ({"prometheusRule": {"thresholds": {"slowProcessing": -1}}},
     "/prometheusRule/thresholds/slowProcessing", "minimum"),
    ({"prometheusRule": {"thresholds": {"saturated": 0}}}, "/prometheusRule/thresholds/saturated",
     "minimum"),
    ({"prometheusRule": {"severity": {"deadLetters": ""}}}, "/prometheusRule/severity/deadLetters",
     ""),
    ({"prometheusRule": {"thresholds": {"deadletters": 1}}}, "/prometheusRule/thresholds",
     "deadletters"),
    ({"keda": {"protocol": "auto"}}, "/keda/protocol", "'amqp', 'http'"),
    ({"keda": {"activationValue": -1}}, "/keda/activationValue", "minimum"),
    ({"keda": {"tls": {"keys": {"ca": "ca crt"}}}}, "/keda/tls/keys/ca", ""),
    ({"secret": {"kedaManagementUrl": "amqp://u:p@mq:5672/"}}, "/secret/kedaManagementUrl", ""),
    ({"unknownTopLevel": True}, "", "unknownTopLevel"),
    ({"webhooks": {"enabled": "yes"}}, "/webhooks/enabled", "boolean"),
    ({"webhooks": {"replicaCount": -1}}, "/webhooks/replicaCount", "minimum"),
    ({"webhooks": {"secretKey": {"value": "not-a-key"}}}, "/webhooks/secretKey/value", ""),
    # 16 bytes, not 32.
    ({"webhooks": {"secretKey": {"value": "MDEyMzQ1Njc4OWFiY2RlZg=="}}},
     "/webhooks/secretKey/value", ""),
    ({"webhooks": {"secretKey": {"key": "a key"}}}, "/webhooks/secretKey/key", ""),
    ({"webhooks": {"secretKey": {"existingSecret": "Key_Secret"}}},
     "/webhooks/secretKey/existingSecret", ""),
    ({"webhooks": {"config": {"queue": "amq.webhooks"}}}, "/webhooks/config/queue", ""),
    ({"webhooks": {"config": {"retryScheduleSecs": "5,5m"}}}, "/webhooks/config/retryScheduleSecs",
     ""),
    ({"webhooks": {"config": {"retryScheduleSecs": ""}}}, "/webhooks/config/retryScheduleSecs", ""),
    ({"webhooks": {"config": {"retryJitter": 0.6}}}, "/webhooks/config/retryJitter", "maximum"),
    ({"webhooks": {"config": {"timeoutSecs": 0}}}, "/webhooks/config/timeoutSecs", "minimum"),
    ({"webhooks": {"config": {"timeoutSecs": 121}}}, "/webhooks/config/timeoutSecs", "maximum"),
    ({"webhooks": {"config": {"timeoutSecs": "15"}}}, "/webhooks/config/timeoutSecs", "number"),
    ({"webhooks": {"config": {"slowDownSecs": -1}}}, "/webhooks/config/slowDownSecs", "minimum"),
    ({"webhooks": {"config": {"concurrency": 0}}}, "/webhooks/config/concurrency", "minimum"),
    ({"webhooks": {"config": {"concurrency": 4097}}}, "/webhooks/config/concurrency", "maximum"),
    ({"webhooks": {"config": {"endpointConcurrency": 0}}},
     "/webhooks/config/endpointConcurrency", "minimum"),
    ({"webhooks": {"config": {"pollMillis": 5}}}, "/webhooks/config/pollMillis", "minimum"),
    ({"webhooks": {"config": {"prefetch": 10001}}}, "/webhooks/config/prefetch", "maximum"),
    ({"webhooks": {"config": {"retentionDays": -1}}}, "/webhooks/config/retentionDays", "minimum"),
    ({"webhooks": {"config": {"allowedCidrs": "10.0.0.0/8;192.168.0.0/16"}}},
     "/webhooks/config/allowedCidrs", ""),
    ({"webhooks": {"config": {"allowHttp": "false"}}}, "/webhooks/config/allowHttp", "boolean"),
    ({"webhooks": {"config": {"runMigrations": True}}}, "/webhooks/config", "runMigrations"),
    ({"webhooks": {"terminationGracePeriodSeconds": 0}}, "/webhooks/terminationGracePeriodSeconds",
     "minimum"),
    ({"webhooks": {"networkPolicy": {"egress": {"rules": {}}}}},
     "/webhooks/networkPolicy/egress/rules", "array"),
    ({"webhooks": {"autoscaling": {"enabled": True}}}, "/webhooks", "autoscaling"),
    ({"prometheusRule": {"thresholds": {"webhookAttemptsFailing": 1}}},
     "/prometheusRule/thresholds/webhookAttemptsFailing", ""),
    ({"prometheusRule": {"for": {"webhookDispatcherDown": "5 minutes"}}},
     "/prometheusRule/for/webhookDispatcherDown", ""),
])
def test_schema_refuses_bad_values_and_says_where(values, where, why):
    message = render_error(merge(CREDENTIALS, values))
    assert "don't meet the specifications of the schema" in message
    assert f"at '{where}'" in message, message
    assert why in message, message


def test_retry_delays_must_be_ordered():
    message = render_error(merge(CREDENTIALS, {"config": {
        "retryMinDelayMs": 5000, "retryMaxDelayMs": 1000}}))
    assert "retryMinDelayMs must not exceed config.retryMaxDelayMs" in message


@pytest.mark.parametrize("config, says", [
    ({"databaseStatementTimeoutSecs": 15, "databaseTransactionTimeoutSecs": 15},
     "config.databaseStatementTimeoutSecs must be less than config.databaseTransactionTimeoutSecs"),
    ({"amqpConfirmTimeoutSecs": 20},
     "config.amqpConfirmTimeoutSecs must be less than config.databaseTransactionTimeoutSecs"),
])
def test_bounds_that_contradict_each_other_are_refused(config, says):
    assert says in render_error(merge(CREDENTIALS, {"config": config}))


KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):")


def test_every_value_is_documented_and_in_the_schema():
    """Each value operators set has a comment right above it.

    Nested maps that the schema describes key by key (image, config, ...) are
    groups: their own keys carry the comments. A key whose value is free-form
    (resources, podSecurityContext, ...) is commented once, as a whole.
    """
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str, dict]] = []  # (indent, key, schema node)
    seen = set()
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][2] if stack else schema
        if "properties" not in parent:
            continue  # inside a free-form default value
        path = ".".join([k for _, k, _ in stack] + [match["key"]])
        assert match["key"] in parent["properties"], f"{path} is not in values.schema.json"
        node = parent["properties"][match["key"]]
        node = resolve(schema, node)
        seen.add(path)
        stack.append((indent, match["key"], node))
        if "properties" in node:
            continue  # a group
        above = lines[number - 1].strip() if number else ""
        assert above.startswith("#"), f"values.yaml line {number + 1}: {path} has no comment"
    assert {"replicaCount", "config.prefetch", "keda.queueLength"} <= seen


def resolve(schema: dict, node: dict) -> dict:
    if "$ref" in node:
        return schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node
