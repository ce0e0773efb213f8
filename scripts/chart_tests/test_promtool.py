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
    CREDENTIALS, NAMESPACE, SCENARIOS, SERIES, label_matchers, merge, one, render, selectors,
)

RULE = merge(CREDENTIALS, {"prometheusRule": {"enabled": True}})
FULLNAME = "dw-disconnect-worker"
# `promtool test rules` cases; they read the rules rendered with RULE.
ALERT_TESTS = Path(__file__).with_name("alert_tests.yaml")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found: scripts/check-chart installs it and sets PROMTOOL")
    return path


def write_rules(values: dict[str, Any], directory: Path) -> None:
    """The rule groups of the PrometheusRule these values render, as the rule
    file Prometheus would load (the operator hands it the spec as it is)."""
    spec = one(render(values), "PrometheusRule")["spec"]
    (directory / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def run(promtool: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("values", [
    RULE,
    SCENARIOS["prometheus-rule"],
    merge(RULE, {
        "fullnameOverride": "revoker",
        "config": {"prefetch": 64},
        "prometheusRule": {
            "thresholds": {"slowProcessing": 0.25, "brokerReconnects": 10, "outboxStuck": 1000000},
            "for": {"slowProcessing": "30m", "deadLetters": "5m"},
            "severity": {"outboxStuck": "page"},
            "alertLabels": {"team": "payments"},
        },
    }),
], ids=["defaults", "scenario", "customised"])
def test_promtool_accepts_the_rules(promtool, values, tmp_path):
    write_rules(values, tmp_path)
    output = run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert "SUCCESS: 13 rules found" in output, output


def test_alerts_fire_as_the_promtool_unit_tests_expect(promtool, tmp_path):
    write_rules(RULE, tmp_path)
    shutil.copy(ALERT_TESTS, tmp_path)
    output = run(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in output, output


def test_the_unit_tests_feed_series_the_worker_exports_to_alerts_the_chart_has():
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == ["rules.yaml"]
    (group,) = one(render(RULE), "PrometheusRule")["spec"]["groups"]
    alerts = {rule["alert"] for rule in group["rules"]}
    releases = set()
    for test in tests["tests"]:
        for series in test["input_series"]:
            (selector,) = selectors(series["series"])
            assert selector.name in SERIES, selector.name
            labels = label_matchers(selector)
            releases.add((labels["job"], labels["namespace"]))
        for case in test["alert_rule_test"]:
            # An alert the rules lack would pass any test expecting no alert.
            assert case["alertname"] in alerts, case["alertname"]
    # This release's series, and another release's, which its alerts must ignore.
    assert (FULLNAME, NAMESPACE) in releases
    assert len(releases) > 1
