"""The PrometheusRule's alerts, checked and unit-tested by Prometheus's own promtool.

scripts/check-chart provides promtool and names it in PROMTOOL; without it
these tests fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import (
    CREDENTIALS, DELIVER_SERIES, NAMESPACE, SCENARIOS, SERIES, WEBHOOKS, label_matchers, merge,
    render, selectors,
)

RULE = merge(CREDENTIALS, {"prometheusRule": {"enabled": True}})
# The worker's alerts and the webhook dispatcher's.
WEBHOOK_RULE = merge(RULE, WEBHOOKS)
FULLNAME = "dw-disconnect-worker"
# `promtool test rules` cases; they read the rules rendered with WEBHOOK_RULE.
ALERT_TESTS = Path(__file__).with_name("alert_tests.yaml")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found: scripts/check-chart installs it and sets PROMTOOL")
    return path


def rule_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rule groups of every PrometheusRule these values render: the
    worker's, and the dispatcher's with webhooks.enabled."""
    return [group for obj in render(values) if obj["kind"] == "PrometheusRule"
            for group in obj["spec"]["groups"]]


def write_rules(values: dict[str, Any], directory: Path) -> None:
    """The rule groups as the one rule file Prometheus would load (the
    operator hands it each spec as it is)."""
    spec = {"groups": rule_groups(values)}
    (directory / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def run(promtool: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


CUSTOMISED = merge(RULE, {
    "fullnameOverride": "revoker",
    "config": {"prefetch": 64},
    "prometheusRule": {
        "thresholds": {"slowProcessing": 0.25, "brokerReconnects": 10, "outboxStuck": 1000000,
                       "webhookAttemptsFailing": 0.2, "webhookBacklog": 1000000},
        "for": {"slowProcessing": "30m", "deadLetters": "5m", "webhookDispatcherDown": "15m"},
        "severity": {"outboxStuck": "page", "webhookEndpointDisabled": "info"},
        "alertLabels": {"team": "payments"},
    },
})


@pytest.mark.parametrize("values, count", [
    (RULE, 13),
    (SCENARIOS["prometheus-rule"], 13),
    (CUSTOMISED, 13),
    (WEBHOOK_RULE, 18),
    (SCENARIOS["webhooks-everything"], 18),
    (merge(CUSTOMISED, WEBHOOKS, {"webhooks": {"config": {"timeoutSecs": 0.5}}}), 18),
], ids=["defaults", "scenario", "customised", "webhooks", "webhooks-scenario",
        "webhooks-customised"])
def test_promtool_accepts_the_rules(promtool, values, count, tmp_path):
    write_rules(values, tmp_path)
    output = run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {count} rules found" in output, output


def test_alerts_fire_as_the_promtool_unit_tests_expect(promtool, tmp_path):
    write_rules(WEBHOOK_RULE, tmp_path)
    shutil.copy(ALERT_TESTS, tmp_path)
    output = run(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in output, output


def test_the_unit_tests_feed_series_the_worker_exports_to_alerts_the_chart_has():
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == ["rules.yaml"]
    alerts = {rule["alert"] for group in rule_groups(WEBHOOK_RULE) for rule in group["rules"]}
    releases = set()
    for test in tests["tests"]:
        for series in test["input_series"]:
            (selector,) = selectors(series["series"])
            assert selector.name in SERIES | DELIVER_SERIES, selector.name
            labels = label_matchers(selector)
            releases.add((labels["job"], labels["namespace"]))
        for case in test["alert_rule_test"]:
            # An alert the rules lack would pass any test expecting no alert.
            assert case["alertname"] in alerts, case["alertname"]
    # This release's series, and another release's, which its alerts must ignore.
    assert (FULLNAME, NAMESPACE) in releases
    assert len(releases) > 1


def test_every_dispatcher_alert_has_a_unit_test_that_fires_and_one_that_does_not():
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    (group,) = [group for group in rule_groups(WEBHOOK_RULE) if group["name"].endswith("-webhooks")]
    for rule in group["rules"]:
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), rule["alert"]
        assert any(not case["exp_alerts"] for case in mine), rule["alert"]
    # Each test feeds another release's dispatcher too, which must not fire.
    jobs = {label_matchers(selectors(series["series"])[0])["namespace"]
            for test in tests["tests"] for series in test["input_series"]
            if label_matchers(selectors(series["series"])[0])["job"] == f"{FULLNAME}-webhooks"}
    assert jobs == {NAMESPACE, "staging"}
