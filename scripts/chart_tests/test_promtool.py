"""The PrometheusRule's alerts, checked by Prometheus's own promtool.

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
    CREDENTIALS, SCENARIOS, merge, one, render,
)

RULE = merge(CREDENTIALS, {"prometheusRule": {"enabled": True}})


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
    assert "SUCCESS: 10 rules found" in output, output
