"""The webhook dispatcher (`disconnect-worker deliver`, webhooks.enabled): its
own Deployment, ConfigMap, Service, PDB, NetworkPolicy and ServiceMonitor, and
how they stay apart from the worker's. Its alerts and dashboard row are in
test_observability.py and test_promtool.py."""

from __future__ import annotations

from typing import Any

import pytest

from chart import (
    CREDENTIALS, DELIVER_ENV, DELIVER_UNUSED_ENV, EXISTING_SECRET, OTEL, OTEL_ENV, REPO_DIR,
    RUN_ENV, SCENARIOS, SECRET_ENV, WEBHOOK_KEY, WEBHOOK_SECRET_ENV, WEBHOOKS,
    WEBHOOKS_EXISTING_SECRET, container, default_values, env, kinds, merge, one, pod_spec, render,
    render_error, render_files,
)

VALUES = merge(CREDENTIALS, WEBHOOKS)
WORKER = "dw-disconnect-worker"
DISPATCHER = "dw-disconnect-worker-webhooks"
# The worker Deployment's selector as every release of the chart has had it:
# Deployment selectors are immutable, so it must never change.
RELEASED_WORKER_SELECTOR = {"matchLabels": {
    "app.kubernetes.io/name": "disconnect-worker",
    "app.kubernetes.io/instance": "dw",
    "app.kubernetes.io/component": "worker",
}}


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def dispatcher(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "Deployment", DISPATCHER)


def worker(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "Deployment", WORKER)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (or a Service's plain selector map) matches these labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and key in labels and labels[key] in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_the_dispatcher_is_off_by_default():
    objects = render(CREDENTIALS)
    assert not [o for o in objects if "webhooks" in o["metadata"]["name"]]
    assert default_values()["webhooks"]["enabled"] is False


def test_the_dispatcher_s_objects():
    objects = render(VALUES)
    mine = sorted((o["kind"], o["metadata"]["name"]) for o in objects
                  if o["metadata"]["name"] == DISPATCHER)
    assert mine == [("ConfigMap", DISPATCHER), ("Deployment", DISPATCHER),
                    ("PodDisruptionBudget", DISPATCHER), ("Secret", DISPATCHER),
                    ("Service", DISPATCHER)]
    for obj in objects:
        if obj["metadata"]["name"] == DISPATCHER:
            assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "webhooks"
    # The worker's objects are all still there, unchanged.
    worker_only = [o for o in render(CREDENTIALS)]
    assert [o for o in objects if o["metadata"]["name"] != DISPATCHER] == worker_only


def test_a_key_is_required_and_only_one():
    message = render_error(merge(CREDENTIALS, {"webhooks": {"enabled": True}}))
    assert "webhooks.enabled needs WEBHOOK_SECRET_KEY" in message
    assert "webhooks.secretKey.existingSecret" in message
    assert "webhooks.secretKey.value" in message
    message = render_error(merge(VALUES, WEBHOOKS_EXISTING_SECRET))
    assert "webhooks.secretKey.existingSecret and webhooks.secretKey.value are both set" in message
    # A key given while the dispatcher is off is ignored, as secret.* with existingSecret.
    assert "Secret" not in kinds([o for o in render(merge(CREDENTIALS, WEBHOOKS, {
        "webhooks": {"enabled": False}})) if o["metadata"]["name"] == DISPATCHER])


def test_the_dispatcher_runs_deliver_from_the_worker_s_image_without_migrating():
    objects = render(VALUES)
    deliver = container(dispatcher(objects))
    assert deliver["args"] == ["deliver"]
    assert deliver["image"] == container(worker(objects))["image"] == "disconnect-worker:0.3.0"
    assert deliver["envFrom"] == [{"configMapRef": {"name": DISPATCHER}}]
    # deliver has no RUN_MIGRATIONS: the migration Job migrates.
    assert "RUN_MIGRATIONS" not in env(dispatcher(objects))
    assert "RUN_MIGRATIONS" not in named(objects, "ConfigMap", DISPATCHER)["data"]
    assert "Job" in kinds(objects)


def test_probes_hit_healthz_and_readyz_on_the_http_port():
    deliver = container(dispatcher(render(merge(VALUES, {"http": {"port": 8081}}))))
    assert deliver["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]
    assert deliver["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert deliver["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_every_configmap_key_is_a_variable_deliver_reads():
    data = named(render(VALUES), "ConfigMap", DISPATCHER)["data"]
    assert set(data) <= DELIVER_ENV - SECRET_ENV - WEBHOOK_SECRET_ENV
    # ...and every non-secret setting is there, but the OpenTelemetry
    # variables, which appear only when set, and the worker's request and
    # dead-letter names, which deliver parses but does not read.
    assert set(data) == (DELIVER_ENV - SECRET_ENV - WEBHOOK_SECRET_ENV - OTEL_ENV
                         - DELIVER_UNUSED_ENV)
    assert DELIVER_UNUSED_ENV <= RUN_ENV


def test_deliver_reads_no_request_or_dead_letter_setting():
    # What allows DELIVER_UNUSED_ENV out of the dispatcher's ConfigMap: deliver
    # takes only the event exchange, the topology switch and the bounds from
    # the broker settings it shares with the worker.
    source = (REPO_DIR / "src" / "commands" / "deliver.rs").read_text()
    for field in ("topology()", "request_exchange", "request_queue", "request_routing_key",
                  "dead_letter_exchange", "dead_letter_queue", "delivery_limit"):
        assert f"broker.{field}" not in source, field


def test_the_dispatcher_shares_the_worker_s_database_and_broker_settings():
    values = merge(VALUES, OTEL, {"config": {
        "databasePoolSize": 17, "databaseStatementTimeoutSecs": 30,
        "databaseTransactionTimeoutSecs": 40, "amqpHeartbeatSecs": 20,
        "eventExchange": "ex", "declareTopology": False, "logFormat": "text",
        "rustLog": "disconnect_worker=debug,info"}})
    objects = render(values)
    theirs = named(objects, "ConfigMap", WORKER)["data"]
    mine = named(objects, "ConfigMap", DISPATCHER)["data"]
    shared = set(theirs) & set(mine)
    assert {"DATABASE_POOL_SIZE", "AMQP_HEARTBEAT_SECS", "EVENT_EXCHANGE", "DECLARE_TOPOLOGY",
            "HTTP_PORT", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= shared
    for variable in shared:
        assert mine[variable] == theirs[variable], variable
    assert mine["DECLARE_TOPOLOGY"] == "false"
    # The pod's own OpenTelemetry attributes, as the worker's.
    for name in ("K8S_POD_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        assert env(dispatcher(objects))[name] == env(worker(objects))[name]


WEBHOOK_CONFIG_TO_ENV = {
    "queue": ("WEBHOOK_QUEUE", "hooks.q"),
    "retryScheduleSecs": ("WEBHOOK_RETRY_SCHEDULE_SECS", "1,60,3600"),
    # Fractions and fractional seconds print as the program parses them.
    "retryJitter": ("WEBHOOK_RETRY_JITTER", 0.35),
    "slowDownSecs": ("WEBHOOK_SLOW_DOWN_SECS", 2.5),
    "timeoutSecs": ("WEBHOOK_TIMEOUT_SECS", 7.5),
    # Large numbers: Helm reads them as floats, which must not print as 1e+06.
    "disableAfterSecs": ("WEBHOOK_DISABLE_AFTER_SECS", 1000000),
    "concurrency": ("WEBHOOK_CONCURRENCY", 4096),
    "endpointConcurrency": ("WEBHOOK_ENDPOINT_CONCURRENCY", 1),
    "pollMillis": ("WEBHOOK_POLL_MILLIS", 250),
    "prefetch": ("WEBHOOK_PREFETCH", 10000),
    "retentionDays": ("WEBHOOK_RETENTION_DAYS", 0),
    "allowedCidrs": ("WEBHOOK_ALLOWED_CIDRS", "10.20.0.0/16,fd00:1::/64"),
    "allowHttp": ("WEBHOOK_ALLOW_HTTP", True),
}


def test_each_webhooks_config_value_maps_to_its_variable():
    values = {key: value for key, (_, value) in WEBHOOK_CONFIG_TO_ENV.items()}
    data = named(render(merge(VALUES, {"webhooks": {"config": values}})),
                 "ConfigMap", DISPATCHER)["data"]
    for key, (variable, value) in WEBHOOK_CONFIG_TO_ENV.items():
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        assert data[variable] == expected, key
    # The table above covers every webhooks.config key values.yaml has.
    assert set(default_values()["webhooks"]["config"]) == set(WEBHOOK_CONFIG_TO_ENV)


def test_the_defaults_are_the_program_s():
    data = named(render(VALUES), "ConfigMap", DISPATCHER)["data"]
    assert {k: v for k, v in data.items() if k.startswith("WEBHOOK_")} == {
        "WEBHOOK_QUEUE": "connection.events.webhooks",
        "WEBHOOK_RETRY_SCHEDULE_SECS": "5,300,1800,7200,18000,36000,36000",
        "WEBHOOK_RETRY_JITTER": "0.2",
        "WEBHOOK_SLOW_DOWN_SECS": "60",
        "WEBHOOK_TIMEOUT_SECS": "15",
        "WEBHOOK_DISABLE_AFTER_SECS": "432000",
        "WEBHOOK_CONCURRENCY": "64",
        "WEBHOOK_ENDPOINT_CONCURRENCY": "4",
        "WEBHOOK_POLL_MILLIS": "1000",
        "WEBHOOK_PREFETCH": "100",
        "WEBHOOK_RETENTION_DAYS": "30",
        "WEBHOOK_ALLOWED_CIDRS": "",
        "WEBHOOK_ALLOW_HTTP": "false",
    }


def test_the_chart_made_key_secret_holds_the_key_and_the_dispatcher_reads_it():
    objects = render(VALUES)
    secret = named(objects, "Secret", DISPATCHER)
    assert secret["stringData"] == {"WEBHOOK_SECRET_KEY": WEBHOOK_KEY}
    variables = env(dispatcher(objects))
    assert variables["WEBHOOK_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": DISPATCHER, "key": "WEBHOOK_SECRET_KEY"}
    # The URLs from the worker's Secret, as the worker reads them.
    for name in SECRET_ENV:
        assert variables[name] == env(worker(objects))[name]
    # Only the dispatcher gets the key.
    assert "WEBHOOK_SECRET_KEY" not in env(worker(objects))
    assert "WEBHOOK_SECRET_KEY" not in named(objects, "Secret", WORKER)["stringData"]


def test_existing_secrets_are_referenced_and_no_secret_is_made():
    objects = render(SCENARIOS["webhooks-existing-secret"])
    assert "Secret" not in kinds(objects)
    variables = env(dispatcher(objects))
    assert variables["WEBHOOK_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "dw-webhook-key", "key": "sealing-key"}
    assert variables["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": EXISTING_SECRET["existingSecret"], "key": "pg-url"}
    annotations = dispatcher(objects)["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"checksum/config"}


def test_config_and_key_changes_roll_the_dispatcher():
    def checksums(values):
        return dispatcher(render(values))["spec"]["template"]["metadata"]["annotations"]

    before = checksums(VALUES)
    assert set(before) == {"checksum/config", "checksum/secret", "checksum/webhooks-secret"}
    for change, annotation in [
        ({"webhooks": {"config": {"concurrency": 8}}}, "checksum/config"),
        ({"config": {"databasePoolSize": 4}}, "checksum/config"),
        ({"secret": {"amqpUrl": "amqps://u:other@mq:5671/%2f"}}, "checksum/secret"),
        ({"webhooks": {"secretKey": {"value": "B" * 43 + "="}}}, "checksum/webhooks-secret"),
    ]:
        assert checksums(merge(VALUES, change))[annotation] != before[annotation], change


@pytest.mark.parametrize("timeout, override, expected", [
    (15, None, 40), (2.5, None, 15), (0.1, None, 11), (120, None, 250), (15, 31, 31),
    (15, 600, 600)])
def test_termination_grace_outlasts_two_attempt_timeouts(timeout, override, expected):
    values = merge(VALUES, {"webhooks": {"config": {"timeoutSecs": timeout},
                                         "terminationGracePeriodSeconds": override}})
    spec = pod_spec(dispatcher(render(values)))
    assert spec["terminationGracePeriodSeconds"] == expected > 2 * timeout


@pytest.mark.parametrize("override", [30, 15, 5])
def test_termination_grace_not_above_two_timeouts_is_refused(override):
    message = render_error(merge(VALUES, {"webhooks": {"terminationGracePeriodSeconds": override}}))
    assert (f"webhooks.terminationGracePeriodSeconds ({override}) must be longer than twice "
            "webhooks.config.timeoutSecs (30 s)") in message


def test_the_worker_s_grace_is_its_own():
    spec = pod_spec(worker(render(merge(VALUES, {"webhooks": {"config": {"timeoutSecs": 100}}}))))
    assert spec["terminationGracePeriodSeconds"] == 30


def test_replicas_and_pod_settings_are_the_dispatcher_s_own():
    values = merge(VALUES, {"replicaCount": 5, "keda": {"enabled": True}, "webhooks": {
        "replicaCount": 3,
        "resources": {"requests": {"cpu": "250m"}},
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "podAnnotations": {"example.com/owner": "payments"},
        "podLabels": {"team": "payments"},
        "nodeSelector": {"egress": "internet"},
        "tolerations": [{"key": "egress", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {}},
    }})
    objects = render(values)
    deployment = dispatcher(objects)
    # An autoscaler on the worker leaves the dispatcher's count alone.
    assert deployment["spec"]["replicas"] == 3
    assert "replicas" not in worker(objects)["spec"]
    assert one(objects, "ScaledObject")["spec"]["scaleTargetRef"] == {"name": WORKER}
    spec = pod_spec(deployment)
    assert container(deployment)["resources"]["requests"] == {"cpu": "250m", "memory": "64Mi"}
    assert container(worker(objects))["resources"]["requests"]["cpu"] == "100m"
    assert env(deployment)["RUST_BACKTRACE"]["value"] == "1"
    assert "RUST_BACKTRACE" not in env(worker(objects))
    assert deployment["spec"]["template"]["metadata"]["annotations"]["example.com/owner"] == (
        "payments")
    assert pod_labels(deployment)["team"] == "payments"
    assert spec["nodeSelector"] == {"egress": "internet"}
    assert spec["tolerations"][0]["key"] == "egress"
    assert spec["affinity"] == {"podAntiAffinity": {}}
    assert "nodeSelector" not in pod_spec(worker(objects))


def test_the_dispatcher_runs_locked_down():
    objects = render(VALUES)
    deployment = dispatcher(objects)
    spec = pod_spec(deployment)
    assert spec["securityContext"] == pod_spec(worker(objects))["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True


def test_extra_volumes_reach_the_dispatcher_too():
    volume = {"name": "db-ca", "secret": {"secretName": "db-ca"}}
    mount = {"name": "db-ca", "mountPath": "/etc/disconnect-worker/ca", "readOnly": True}
    deployment = dispatcher(render(merge(VALUES, {"extraVolumes": [volume],
                                                  "extraVolumeMounts": [mount]})))
    assert pod_spec(deployment)["volumes"] == [volume]
    assert container(deployment)["volumeMounts"] == [mount]


# -- Selectors: the worker's objects never take the dispatcher's pods, nor the reverse.

def test_the_worker_deployment_s_selector_is_the_released_one():
    for values in (CREDENTIALS, VALUES):
        assert worker(render(values))["spec"]["selector"] == RELEASED_WORKER_SELECTOR


@pytest.mark.parametrize("scenario", ["webhooks", "webhooks-everything"])
def test_selectors_stay_disjoint(scenario):
    objects = render(SCENARIOS[scenario])
    pods = {
        "worker": pod_labels(worker(objects)),
        "webhooks": pod_labels(dispatcher(objects)),
        "migrations": pod_labels(one(objects, "Job")),
    }
    selectors = []
    for obj in objects:
        name, kind = obj["metadata"]["name"], obj["kind"]
        if kind in ("Deployment", "PodDisruptionBudget"):
            selectors.append((kind, name, obj["spec"]["selector"]))
        elif kind == "Service":
            selectors.append((kind, name, obj["spec"]["selector"]))
        elif kind == "NetworkPolicy":
            selectors.append((kind, name, obj["spec"]["podSelector"]))
    assert len(selectors) >= 6
    for kind, name, selector in selectors:
        selected = {pod for pod, labels in pods.items() if selects(selector, labels)}
        if name == DISPATCHER:
            assert selected == {"webhooks"}, (kind, name)
        elif kind == "NetworkPolicy":
            assert selected == {"worker", "migrations"}, (kind, name)
        else:
            assert selected == {"worker"}, (kind, name)
    # Each ServiceMonitor finds its own Service only.
    services = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objects
                if o["kind"] == "Service"}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        found = {name for name, labels in services.items()
                 if selects(monitor["spec"]["selector"], labels)}
        assert found == {monitor["metadata"]["name"]}


def test_pod_labels_cannot_move_the_dispatcher_under_the_worker_s_selectors():
    values = merge(VALUES, {"webhooks": {"podLabels": {"app.kubernetes.io/component": "worker"}}})
    objects = render(values)
    labels = pod_labels(dispatcher(objects))
    assert labels["app.kubernetes.io/component"] == "webhooks"
    assert not selects(worker(objects)["spec"]["selector"], labels)
    assert selects(dispatcher(objects)["spec"]["selector"], labels)


def test_topology_spread_gets_the_dispatcher_s_selector():
    deployment = dispatcher(render(VALUES))
    (constraint,) = pod_spec(deployment)["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["labelSelector"] == deployment["spec"]["selector"]


# -- Service, PDB, ServiceMonitor, NetworkPolicy.

def test_the_service_and_service_monitor_scrape_the_dispatcher_as_its_own_job():
    objects = render(merge(VALUES, {"serviceMonitor": {"enabled": True,
                                                       "labels": {"release": "prometheus"}}}))
    service = named(objects, "Service", DISPATCHER)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}]
    monitor = named(objects, "ServiceMonitor", DISPATCHER)
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == named(objects, "ServiceMonitor", WORKER)["spec"][
        "endpoints"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["payments"]}
    assert "ServiceMonitor" not in kinds(render(VALUES))


def test_the_disruption_budget_follows_the_worker_s_settings():
    objects = render(merge(VALUES, {"podDisruptionBudget": {"maxUnavailable": "50%"}}))
    pdb = named(objects, "PodDisruptionBudget", DISPATCHER)
    assert pdb["spec"]["maxUnavailable"] == "50%"
    assert pdb["spec"]["selector"] == dispatcher(objects)["spec"]["selector"]
    objects = render(merge(VALUES, {"podDisruptionBudget": {"enabled": False}}))
    assert "PodDisruptionBudget" not in kinds(objects)


def test_the_dispatcher_s_network_policy_adds_the_way_out_to_the_receivers():
    objects = render(SCENARIOS["webhooks-everything"])
    settings = SCENARIOS["webhooks-everything"]["networkPolicy"]
    mine = named(objects, "NetworkPolicy", DISPATCHER)["spec"]
    theirs = named(objects, "NetworkPolicy", WORKER)["spec"]
    # Ingress: the metrics port, from the same peers as the worker's.
    assert mine["ingress"] == theirs["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}], "from": settings["ingressFrom"]}]
    assert mine["policyTypes"] == ["Ingress", "Egress"]
    dns, database, receivers = mine["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert database == settings["egress"]["rules"][0]
    assert receivers["ports"] == [{"port": 443, "protocol": "TCP"}]
    public_v4, public_v6 = (peer["ipBlock"] for peer in receivers["to"])
    assert public_v4["cidr"] == "0.0.0.0/0" and public_v6["cidr"] == "::/0"
    # The cloud's metadata address and the cluster's private ranges stay closed.
    assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(
        public_v4["except"])
    assert {"fe80::/10", "fc00::/7"} <= set(public_v6["except"])
    # The worker gets no way out to the internet.
    assert theirs["egress"] == [dns, database]


def test_the_receivers_rule_is_a_value():
    rule = {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 8443}]}
    values = merge(SCENARIOS["webhooks-everything"],
                   {"webhooks": {"networkPolicy": {"egress": {"rules": [rule]}}}})
    assert named(render(values), "NetworkPolicy", DISPATCHER)["spec"]["egress"][-1] == rule


def test_the_dispatcher_s_network_policy_leaves_egress_open_unless_asked():
    objects = render(merge(VALUES, {"networkPolicy": {"enabled": True}}))
    policy = named(objects, "NetworkPolicy", DISPATCHER)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert "egress" not in policy
    assert "NetworkPolicy" not in kinds(render(VALUES))


# -- NOTES.txt

def test_notes_say_how_to_add_an_endpoint():
    notes = next(text for path, text in render_files(VALUES).items() if path.endswith("NOTES.txt"))
    assert (f"kubectl --namespace payments exec deploy/{DISPATCHER} -- disconnect-worker "
            "webhooks add --client-id APP --url https://... [--headers finch]") in notes
    assert f'Secret\n"{DISPATCHER}"' in notes
    without = next(text for path, text in render_files(CREDENTIALS).items()
                   if path.endswith("NOTES.txt"))
    assert "webhooks" not in without
    existing = next(text for path, text in render_files(SCENARIOS["webhooks-existing-secret"])
                    .items() if path.endswith("NOTES.txt"))
    assert '"dw-webhook-key"' in existing


def test_long_release_names_still_fit():
    values = merge(VALUES, {"fullnameOverride": "x" * 63})
    objects = render(values)
    names = {o["metadata"]["name"] for o in objects if o["metadata"]["name"].endswith("-webhooks")}
    assert names == {"x" * 54 + "-webhooks"}
