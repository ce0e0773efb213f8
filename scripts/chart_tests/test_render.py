"""What the rendered manifests must guarantee, for every supported value set."""

from __future__ import annotations

import pytest

from chart import (
    AMQP_PASSWORD, AMQP_URL, CRD_KINDS, CREDENTIALS, DB_PASSWORD, DATABASE_URL,
    EXISTING_SECRET, KUBE_VERSIONS, OTEL_ENV, RUN_ENV, SCENARIOS, SECRET_ENV, WEBHOOK_KEY,
    WEBHOOK_SECRET_ENV, container, default_values, env, kinds, merge, one, pod_spec, render,
    render_error, render_files, validate_strict,
)

HOOK = "helm.sh/hook"
HOOK_WEIGHT = "helm.sh/hook-weight"
HOOK_DELETE = "helm.sh/hook-delete-policy"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_matches_the_kubernetes_schemas(scenario, kube_version):
    objects = render(SCENARIOS[scenario])
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue  # no Kubernetes schema for custom resources: see chart.CRD_KINDS
        validate_strict(obj, kube_version)


def test_default_objects():
    assert kinds(render(CREDENTIALS)) == sorted([
        "ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Secret", "Secret",
        "Service", "ServiceAccount",
    ])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_credentials_appear_only_in_secrets(scenario):
    for path, text in render_files(SCENARIOS[scenario]).items():
        if path.endswith(("/secret.yaml", "/migrations-secret.yaml", "/webhooks-secret.yaml")):
            continue
        # NOTES.txt included: it is printed to whoever runs helm install.
        for password in (DB_PASSWORD, AMQP_PASSWORD, WEBHOOK_KEY):
            assert password not in text, f"{path} leaks a credential"
    for obj in render(SCENARIOS[scenario]):
        if obj["kind"] == "ConfigMap":
            assert not (SECRET_ENV | WEBHOOK_SECRET_ENV) & obj["data"].keys()


def test_chart_secret_holds_the_urls_and_the_worker_reads_them_from_it():
    objects = render(CREDENTIALS)
    secret = one(objects, "Secret", "disconnect-worker")
    assert secret["stringData"] == {"DATABASE_URL": DATABASE_URL, "AMQP_URL": AMQP_URL}
    assert HOOK not in secret["metadata"].get("annotations", {})
    variables = env(one(objects, "Deployment"))
    for name in SECRET_ENV:
        assert variables[name]["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"], "key": name}


def test_existing_secret_creates_no_secret_and_is_referenced_everywhere():
    objects = render(merge(EXISTING_SECRET, {"keda": {"enabled": True}}))
    assert "Secret" not in kinds(objects)
    name = EXISTING_SECRET["existingSecret"]
    keys = EXISTING_SECRET["existingSecretKeys"]
    worker = env(one(objects, "Deployment"))
    assert worker["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": name, "key": keys["databaseUrl"]}
    assert worker["AMQP_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": name, "key": keys["amqpUrl"]}
    migrate = env(one(objects, "Job"))
    assert migrate["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": name, "key": keys["databaseUrl"]}
    auth = one(objects, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": name, "key": keys["amqpUrl"]}]
    pod_annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in pod_annotations


def test_secret_urls_are_required_without_existing_secret():
    message = render_error({})
    assert "secret.databaseUrl and secret.amqpUrl are required" in message
    assert "existingSecret" in message


def test_probes_hit_healthz_and_readyz_on_the_http_port():
    worker = container(one(render(CREDENTIALS), "Deployment"))
    assert worker["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_http_port_feeds_the_container_port_and_http_port_variable():
    objects = render(merge(CREDENTIALS, {"http": {"port": 8081}}))
    assert container(one(objects, "Deployment"))["ports"][0]["containerPort"] == 8081
    assert one(objects, "ConfigMap")["data"]["HTTP_PORT"] == "8081"
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_takes_its_settings_from_the_configmap_and_runs_run():
    objects = render(CREDENTIALS)
    worker = container(one(objects, "Deployment"))
    assert worker["args"] == ["run"]
    assert worker["image"] == "disconnect-worker:0.3.0"  # appVersion by default
    assert worker["envFrom"] == [
        {"configMapRef": {"name": one(objects, "ConfigMap")["metadata"]["name"]}}]


def test_every_configmap_key_is_a_variable_the_worker_reads():
    data = one(render(CREDENTIALS), "ConfigMap")["data"]
    assert set(data) <= RUN_ENV - SECRET_ENV
    # ...and every non-secret setting is there, except RUN_MIGRATIONS, which
    # follows migrations.enabled in the Deployment, and the OpenTelemetry
    # variables, which appear only when set (test_observability.py).
    assert set(data) == RUN_ENV - SECRET_ENV - {"RUN_MIGRATIONS"} - OTEL_ENV


CONFIG_TO_ENV = {
    "databasePoolSize": ("DATABASE_POOL_SIZE", 17),
    "databaseConnectTimeoutSecs": ("DATABASE_CONNECT_TIMEOUT_SECS", 7),
    "databasePoolTimeoutSecs": ("DATABASE_POOL_TIMEOUT_SECS", 8),
    "databaseTransactionTimeoutSecs": ("DATABASE_TRANSACTION_TIMEOUT_SECS", 40),
    "databaseStatementTimeoutSecs": ("DATABASE_STATEMENT_TIMEOUT_SECS", 30),
    "databaseIdleInTransactionTimeoutSecs": ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS", 0),
    "databaseKeepaliveSecs": ("DATABASE_KEEPALIVE_SECS", 11),
    "databaseTcpUserTimeoutSecs": ("DATABASE_TCP_USER_TIMEOUT_SECS", 33),
    "amqpHeartbeatSecs": ("AMQP_HEARTBEAT_SECS", 20),
    "amqpConnectTimeoutSecs": ("AMQP_CONNECT_TIMEOUT_SECS", 12),
    "amqpConfirmTimeoutSecs": ("AMQP_CONFIRM_TIMEOUT_SECS", 9),
    "requestExchange": ("REQUEST_EXCHANGE", "rx"),
    "requestQueue": ("REQUEST_QUEUE", "rq"),
    "requestRoutingKey": ("REQUEST_ROUTING_KEY", "rk"),
    "deadLetterExchange": ("DEAD_LETTER_EXCHANGE", "dlx"),
    "deadLetterQueue": ("DEAD_LETTER_QUEUE", "dlq"),
    "eventExchange": ("EVENT_EXCHANGE", "ex"),
    "deliveryLimit": ("DELIVERY_LIMIT", 7),
    "declareTopology": ("DECLARE_TOPOLOGY", False),
    "prefetch": ("PREFETCH", 64),
    "batchSize": ("BATCH_SIZE", 16),
    "batchLingerMs": ("BATCH_LINGER_MS", 0),
    # Large numbers: Helm reads them as floats, which must not print as 6.7e+07.
    "maxRequestBytes": ("MAX_REQUEST_BYTES", 67108864),
    "retryMinDelayMs": ("RETRY_MIN_DELAY_MS", 250),
    "retryMaxDelayMs": ("RETRY_MAX_DELAY_MS", 600000),
    "retryMaxAttempts": ("RETRY_MAX_ATTEMPTS", 9),
    "shutdownGraceSecs": ("SHUTDOWN_GRACE_SECS", 45),
    "outboxPollMs": ("OUTBOX_POLL_MS", 5000),
    "outboxRelayDelayMs": ("OUTBOX_RELAY_DELAY_MS", 3600000),
    "outboxBatchSize": ("OUTBOX_BATCH_SIZE", 10000),
    "outboxRetentionHours": ("OUTBOX_RETENTION_HOURS", 0),
    "authorizedPublishers": ("AUTHORIZED_PUBLISHERS", "billing:app-a,ops:*"),
    "fanoutChunkSize": ("FANOUT_CHUNK_SIZE", 500),
    "revokedTokenRetentionDays": ("REVOKED_TOKEN_RETENTION_DAYS", 30),
    "disconnectedConnectionRetentionDays": ("DISCONNECTED_CONNECTION_RETENTION_DAYS", 0),
    "auditRetentionDays": ("AUDIT_RETENTION_DAYS", 3650),
    "retentionIntervalSecs": ("RETENTION_INTERVAL_SECS", 60),
    "retentionBatchSize": ("RETENTION_BATCH_SIZE", 100000),
    "logFormat": ("LOG_FORMAT", "text"),
    "rustLog": ("RUST_LOG", "disconnect_worker=debug,info"),
}


def test_each_config_value_maps_to_its_variable():
    values = {key: value for key, (_, value) in CONFIG_TO_ENV.items()}
    data = one(render(merge(CREDENTIALS, {"config": values})), "ConfigMap")["data"]
    for key, (variable, value) in CONFIG_TO_ENV.items():
        # Booleans as the worker's flags take them: true / false.
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        assert data[variable] == expected, key
    # The table above covers every config key values.yaml has.
    assert set(default_values()["config"]) == set(CONFIG_TO_ENV)


def test_config_changes_roll_the_pods():
    def checksum(values):
        pod = one(render(values), "Deployment")["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"]

    assert checksum(CREDENTIALS) != checksum(merge(CREDENTIALS, {"config": {"prefetch": 8}}))


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook_running_migrate():
    objects = render(CREDENTIALS)
    job = one(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations[HOOK] == "pre-install,pre-upgrade"
    assert annotations[HOOK_DELETE] == "before-hook-creation,hook-succeeded"
    migrate = container(job)
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == container(one(objects, "Deployment"))["image"]
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_migration_job_only_uses_what_exists_before_install():
    # Pre-install hooks run before the release's own objects exist.
    objects = render(CREDENTIALS)
    job = one(objects, "Job")
    migrate = container(job)
    assert "envFrom" not in migrate  # not the ConfigMap
    assert "serviceAccountName" not in pod_spec(job)  # not the chart's ServiceAccount
    ref = env(job)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secret = one(objects, "Secret", ref["name"])
    annotations = secret["metadata"]["annotations"]
    assert annotations[HOOK] == "pre-install,pre-upgrade"
    assert int(annotations[HOOK_WEIGHT]) < int(job["metadata"]["annotations"][HOOK_WEIGHT])
    assert "hook-succeeded" in annotations[HOOK_DELETE]
    # The hook copy carries only what migrate needs.
    assert secret["stringData"] == {"DATABASE_URL": DATABASE_URL}


def test_run_migrations_follows_the_migration_job():
    with_job = render(CREDENTIALS)
    assert env(one(with_job, "Deployment"))["RUN_MIGRATIONS"]["value"] == "false"
    without_job = render(merge(CREDENTIALS, {"migrations": {"enabled": False}}))
    assert env(one(without_job, "Deployment"))["RUN_MIGRATIONS"]["value"] == "true"
    assert "Job" not in kinds(without_job)
    assert [o["metadata"]["name"] for o in without_job if o["kind"] == "Secret"] == [
        "dw-disconnect-worker"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_locked_down(kind):
    workload = one(render(CREDENTIALS), kind)
    pod = pod_spec(workload)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532
    assert pod["fsGroup"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(workload)["automountServiceAccountToken"] is False
    own = container(workload)["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert own["runAsNonRoot"] is True


def test_service_account_does_not_mount_a_token():
    objects = render(CREDENTIALS)
    account = one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod_spec(one(objects, "Deployment"))["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("grace, override, expected", [
    (20, None, 30), (45, None, 55), (20, 21, 21), (20, 120, 120)])
def test_termination_grace_outlasts_the_worker_shutdown_grace(grace, override, expected):
    values = merge(CREDENTIALS, {"config": {"shutdownGraceSecs": grace},
                                 "terminationGracePeriodSeconds": override})
    spec = pod_spec(one(render(values), "Deployment"))
    assert spec["terminationGracePeriodSeconds"] == expected > grace


@pytest.mark.parametrize("override", [20, 5])
def test_termination_grace_not_above_shutdown_grace_is_refused(override):
    message = render_error(merge(CREDENTIALS, {"terminationGracePeriodSeconds": override}))
    assert "terminationGracePeriodSeconds" in message
    assert "must be longer than config.shutdownGraceSecs (20)" in message


def test_keda_scales_on_the_request_queue_with_the_secret_url():
    values = merge(CREDENTIALS, {"keda": {"enabled": True, "queueLength": 1000000},
                                 "config": {"requestQueue": "dr.q"}})
    objects = render(values)
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]
    scaled = one(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "dr.q"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["value"] == "1000000"
    assert trigger["metadata"]["protocol"] == "amqp"
    assert trigger["metadata"]["activationValue"] == "0"
    assert trigger["metadata"]["unsafeSsl"] == "false"
    assert "host" not in trigger["metadata"]  # the URL holds a password
    auth = one(objects, "TriggerAuthentication")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "dw-disconnect-worker", "key": "AMQP_URL"}]
    assert "HorizontalPodAutoscaler" not in kinds(objects)


def test_hpa_scales_the_deployment_on_cpu():
    objects = render(merge(CREDENTIALS, {"autoscaling": {"enabled": True, "maxReplicas": 7}}))
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["maxReplicas"] == 7
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "ScaledObject" not in kinds(objects)


def test_keda_and_hpa_together_are_refused():
    message = render_error(merge(CREDENTIALS, {"keda": {"enabled": True},
                                               "autoscaling": {"enabled": True}}))
    assert "keda.enabled and autoscaling.enabled cannot both be true" in message


def test_replicas_are_set_without_an_autoscaler():
    assert one(render(merge(CREDENTIALS, {"replicaCount": 3})), "Deployment")["spec"]["replicas"] == 3


def test_service_monitor_scrapes_metrics_through_the_service():
    objects = render(merge(CREDENTIALS, {"serviceMonitor": {
        "enabled": True, "labels": {"release": "prometheus"}}}))
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["name"] == "http"


def test_optional_objects_are_off_by_default():
    present = set(kinds(render(CREDENTIALS)))
    assert not present & {"ServiceMonitor", "NetworkPolicy", "ScaledObject",
                          "TriggerAuthentication", "HorizontalPodAutoscaler"}


def test_disruption_budget_selects_only_worker_pods():
    objects = render(CREDENTIALS)
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    deployment = one(objects, "Deployment")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    job_labels = one(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= job_labels.items()


def test_network_policy_opens_only_the_http_port_and_dns():
    objects = render(SCENARIOS["network-policy"])
    policy = one(objects, "NetworkPolicy")["spec"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == SCENARIOS["network-policy"]["networkPolicy"]["ingressFrom"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    dns, database = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert database["ports"] == [{"port": 5432}, {"port": 5671}]
    # It covers the migration pods too, so they reach Postgres under the same rules.
    job_labels = one(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= job_labels.items()


def test_network_policy_leaves_egress_open_unless_asked():
    policy = one(render(merge(CREDENTIALS, {"networkPolicy": {"enabled": True}})),
                 "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert "egress" not in policy


def test_pod_customisation_hooks():
    objects = render(SCENARIOS["customised"])
    deployment = one(objects, "Deployment")
    spec = pod_spec(deployment)
    worker = container(deployment)
    assert worker["image"] == "registry.example/dw@sha256:" + "ab" * 32
    assert env(deployment)["RUST_BACKTRACE"]["value"] == "1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "payments"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["template"]["metadata"]["annotations"]["example.com/owner"] == "payments"
    assert spec["priorityClassName"] == "high"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]


def test_pod_labels_cannot_break_the_selector():
    values = merge(CREDENTIALS, {"podLabels": {"app.kubernetes.io/name": "other"}})
    deployment = one(render(values), "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_topology_spread_gets_the_worker_selector():
    deployment = one(render(CREDENTIALS), "Deployment")
    (constraint,) = pod_spec(deployment)["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["labelSelector"] == deployment["spec"]["selector"]


CA_VOLUME = {"name": "db-ca", "secret": {"secretName": "db-ca"}}
CA_MOUNT = {"name": "db-ca", "mountPath": "/etc/disconnect-worker/ca", "readOnly": True}


def test_extra_volumes_reach_the_worker_and_the_migration_job():
    values = merge(CREDENTIALS, {"extraVolumes": [CA_VOLUME], "extraVolumeMounts": [CA_MOUNT]})
    objects = render(values)
    for workload in (one(objects, "Deployment"), one(objects, "Job")):
        assert pod_spec(workload)["volumes"] == [CA_VOLUME]
        assert container(workload)["volumeMounts"] == [CA_MOUNT]
    # None by default: the root filesystem stays the image's alone.
    for workload in (one(render(CREDENTIALS), "Deployment"), one(render(CREDENTIALS), "Job")):
        assert "volumes" not in pod_spec(workload)
        assert "volumeMounts" not in container(workload)


def test_the_migration_job_can_use_its_own_database_url():
    direct = "postgres://migrator:pw@db-direct:5432/x"
    objects = render(merge(CREDENTIALS, {"secret": {"migrationDatabaseUrl": direct}}))
    copied = one(objects, "Secret", "-migrations")
    assert copied["stringData"]["DATABASE_URL"] == direct
    # The worker keeps the pooled URL.
    assert one(objects, "Secret", "disconnect-worker")["stringData"]["DATABASE_URL"] == DATABASE_URL
    # With an existing Secret, the Job reads its own key.
    values = merge(EXISTING_SECRET, {"existingSecretKeys": {"migrationDatabaseUrl": "pg-direct"}})
    job = one(render(values), "Job")
    (database_url,) = [e for e in container(job)["env"] if e["name"] == "DATABASE_URL"]
    assert database_url["valueFrom"]["secretKeyRef"] == {"name": "dw-credentials", "key": "pg-direct"}


def test_keda_reads_one_broker_address_when_the_worker_has_several():
    cluster = "amqp://u:p@mq-0:5672/%2f,amqp://u:p@mq-1:5672/%2f"
    values = merge(CREDENTIALS, {"secret": {"amqpUrl": cluster}, "keda": {"enabled": True}})
    assert "kedaAmqpUrl" in render_error(values)
    values = merge(values, {"secret": {"kedaAmqpUrl": "amqp://u:p@mq:5672/%2f"}})
    objects = render(values)
    auth = one(objects, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["key"] == "KEDA_AMQP_URL"
    assert one(objects, "Secret", "disconnect-worker")["stringData"]["KEDA_AMQP_URL"] == (
        "amqp://u:p@mq:5672/%2f")
    values = merge(EXISTING_SECRET, {"keda": {"enabled": True},
                                     "existingSecretKeys": {"kedaAmqpUrl": "mq-one"}})
    auth = one(render(values), "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["key"] == "mq-one"



MANAGEMENT_URL = f"https://u:{AMQP_PASSWORD}@mq:15671/%2f"


def test_keda_over_http_reads_the_management_url_from_the_secret():
    values = merge(CREDENTIALS, {"secret": {"kedaManagementUrl": MANAGEMENT_URL},
                                 "keda": {"enabled": True, "protocol": "http"}})
    objects = render(values)
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["protocol"] == "http"
    assert "host" not in trigger["metadata"]
    secret = one(objects, "Secret", "disconnect-worker")
    assert secret["stringData"]["KEDA_MANAGEMENT_URL"] == MANAGEMENT_URL
    assert one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": secret["metadata"]["name"], "key": "KEDA_MANAGEMENT_URL"}]
    # The worker never sees it.
    assert "KEDA_MANAGEMENT_URL" not in env(one(objects, "Deployment"))


def test_keda_over_http_reads_the_management_url_from_an_existing_secret():
    values = merge(EXISTING_SECRET, {"existingSecretKeys": {"kedaManagementUrl": "mgmt"},
                                     "keda": {"enabled": True, "protocol": "http"}})
    auth = one(render(values), "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": EXISTING_SECRET["existingSecret"], "key": "mgmt"}]


def test_keda_over_http_without_a_management_url_is_refused():
    message = render_error(merge(CREDENTIALS, {"keda": {"enabled": True, "protocol": "http"}}))
    assert "keda.protocol http reads the queue from the RabbitMQ management API" in message
    assert "set secret.kedaManagementUrl" in message
    message = render_error(merge(EXISTING_SECRET, {"keda": {"enabled": True, "protocol": "http"}}))
    assert "set existingSecretKeys.kedaManagementUrl" in message


def test_keda_over_http_does_not_need_one_broker_address():
    cluster = "amqp://u:p@mq-0:5672/%2f,amqp://u:p@mq-1:5672/%2f"
    values = merge(CREDENTIALS, {"secret": {"amqpUrl": cluster, "kedaManagementUrl": MANAGEMENT_URL},
                                 "keda": {"enabled": True, "protocol": "http"}})
    auth = one(render(values), "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"][0]["key"] == "KEDA_MANAGEMENT_URL"


def test_keda_activation_value_and_unsafe_ssl_reach_the_trigger():
    values = merge(CREDENTIALS, {"keda": {"enabled": True, "activationValue": 1000000,
                                          "unsafeSsl": True}})
    (trigger,) = one(render(values), "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["activationValue"] == "1000000"
    assert trigger["metadata"]["unsafeSsl"] == "true"


def test_keda_tls_passes_the_ca_and_client_certificate_through_the_trigger_authentication():
    values = merge(CREDENTIALS, {"keda": {"enabled": True, "tls": {
        "enabled": True, "secretName": "mq-tls",
        "keys": {"ca": "ca.pem", "cert": "tls.crt", "key": "tls.key"}}}})
    objects = render(values)
    switch = one(objects, "Secret", "-keda-tls")
    assert switch["stringData"] == {"tls": "enable"}
    refs = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert refs == [
        {"parameter": "host", "name": "dw-disconnect-worker", "key": "AMQP_URL"},
        {"parameter": "tls", "name": "dw-disconnect-worker-keda-tls", "key": "tls"},
        {"parameter": "ca", "name": "mq-tls", "key": "ca.pem"},
        {"parameter": "cert", "name": "mq-tls", "key": "tls.crt"},
        {"parameter": "key", "name": "mq-tls", "key": "tls.key"},
    ]
    # Nothing TLS in the trigger's own metadata: KEDA reads these as auth parameters only.
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert not {"tls", "ca", "cert", "key"} & trigger["metadata"].keys()


def test_keda_tls_with_only_a_ca_passes_only_the_ca():
    values = merge(CREDENTIALS, {"keda": {"enabled": True, "tls": {
        "enabled": True, "secretName": "mq-ca"}}})
    refs = one(render(values), "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert [r["parameter"] for r in refs] == ["host", "tls", "ca"]
    assert refs[2] == {"parameter": "ca", "name": "mq-ca", "key": "ca.crt"}


def test_keda_without_tls_has_no_tls_secret_or_parameter():
    objects = render(merge(CREDENTIALS, {"keda": {"enabled": True}}))
    assert sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Secret") == [
        "dw-disconnect-worker", "dw-disconnect-worker-migrations"]
    refs = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert [r["parameter"] for r in refs] == ["host"]


def test_keda_tls_needs_its_secret_and_a_client_certificate_needs_its_key():
    message = render_error(merge(CREDENTIALS, {"keda": {"enabled": True, "tls": {"enabled": True}}}))
    assert "keda.tls.enabled needs keda.tls.secretName" in message
    message = render_error(merge(CREDENTIALS, {"keda": {"enabled": True, "tls": {
        "enabled": True, "secretName": "mq-tls", "keys": {"cert": "tls.crt"}}}}))
    assert "keda.tls.keys.cert and keda.tls.keys.key go together" in message
