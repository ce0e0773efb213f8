{{/*
Chart name, truncated to 63 characters because some Kubernetes name fields
are limited to that (DNS label).
*/}}
{{- define "disconnect-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the
release name already contains it.
*/}}
{{- define "disconnect-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label ("+" is not allowed in
label values).
*/}}
{{- define "disconnect-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "disconnect-worker.labels" -}}
helm.sh/chart: {{ include "disconnect-worker.chart" . }}
{{ include "disconnect-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels shared by the worker and the migration pods (the
NetworkPolicy selects both). Never change them: Deployment selectors are
immutable.
*/}}
{{- define "disconnect-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "disconnect-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the worker pods only. The component label keeps the
migration Job's pod out of the Service, the PDB and the autoscalers.
*/}}
{{- define "disconnect-worker.workerSelectorLabels" -}}
{{ include "disconnect-worker.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
The webhook dispatcher's resource names (Deployment, ConfigMap, Service, PDB,
NetworkPolicy, ServiceMonitor, PrometheusRule, the key's Secret): the
worker's name plus -webhooks, cut so the whole fits 63 characters. The
Service's name is the dispatcher's job label, which its alerts select and the
dashboard reads as "$job-webhooks".
*/}}
{{- define "disconnect-worker.webhooksFullname" -}}
{{- printf "%s-webhooks" (include "disconnect-worker.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
Selector labels of the dispatcher pods only. Its pods share the release's
name and instance labels; the component keeps the two workloads apart: every
selector of the worker's objects requires component worker (immutable in its
Deployment since the chart's first release), every one of the dispatcher's
requires component webhooks, and the worker's NetworkPolicy, which selects by
name and instance to cover the migration pods, excludes component webhooks.
*/}}
{{- define "disconnect-worker.webhooksSelectorLabels" -}}
{{ include "disconnect-worker.selectorLabels" . }}
app.kubernetes.io/component: webhooks
{{- end }}

{{/*
Where the dispatcher reads WEBHOOK_SECRET_KEY: the user's Secret and key, or
the one the chart makes from webhooks.secretKey.value.
*/}}
{{- define "disconnect-worker.webhooksSecretKeyRef" -}}
{{- with .Values.webhooks.secretKey }}
{{- if .existingSecret }}
name: {{ .existingSecret }}
key: {{ .key }}
{{- else }}
name: {{ include "disconnect-worker.webhooksFullname" $ }}
key: WEBHOOK_SECRET_KEY
{{- end }}
{{- end }}
{{- end }}

{{/*
Seconds Kubernetes gives the dispatcher between SIGTERM and SIGKILL. It then
takes no more events and lets the attempts in flight finish: one may wait for
its endpoint's slot (at most one timeout), then run (at most another), then
be recorded; the margin covers the recording. Killed sooner, an attempt is
repeated after its lease, a duplicate for the receiver.
*/}}
{{- define "disconnect-worker.webhooksTerminationGracePeriodSeconds" -}}
{{- $attempts := mulf .Values.webhooks.config.timeoutSecs 2 | ceil | int }}
{{- $given := .Values.webhooks.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $given }}
{{- add $attempts 10 }}
{{- else if le (int $given) $attempts }}
{{- fail (printf "webhooks.terminationGracePeriodSeconds (%d) must be longer than twice webhooks.config.timeoutSecs (%d s): an attempt in flight at SIGTERM may wait for its endpoint's slot for one timeout and then run for another, and a dispatcher killed sooner sends it again after its lease" (int $given) $attempts) }}
{{- else }}
{{- int $given }}
{{- end }}
{{- end }}

{{/*
ServiceAccount the worker runs as.
*/}}
{{- define "disconnect-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "disconnect-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: a digest pins the image exactly and wins over the tag.
*/}}
{{- define "disconnect-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding DATABASE_URL and AMQP_URL, and its keys.
*/}}
{{- define "disconnect-worker.secretName" -}}
{{- default (include "disconnect-worker.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "disconnect-worker.databaseUrlKey" -}}
{{- ternary .Values.existingSecretKeys.databaseUrl "DATABASE_URL" (ne .Values.existingSecret "") }}
{{- end }}

{{- define "disconnect-worker.amqpUrlKey" -}}
{{- ternary .Values.existingSecretKeys.amqpUrl "AMQP_URL" (ne .Values.existingSecret "") }}
{{- end }}

{{- /*
The key of the one URL the KEDA trigger reads as its host: the management
API's with keda.protocol http, else one broker's AMQP URL.
*/}}
{{- define "disconnect-worker.kedaHostKey" -}}
{{- if eq .Values.keda.protocol "http" }}
{{- ternary .Values.existingSecretKeys.kedaManagementUrl "KEDA_MANAGEMENT_URL" (ne .Values.existingSecret "") }}
{{- else if .Values.existingSecret }}
{{- default .Values.existingSecretKeys.amqpUrl .Values.existingSecretKeys.kedaAmqpUrl }}
{{- else }}
{{- ternary "KEDA_AMQP_URL" "AMQP_URL" (ne .Values.secret.kedaAmqpUrl "") }}
{{- end }}
{{- end }}

{{- /* Where the migration Job reads its DATABASE_URL: Secret name, then key. */}}
{{- define "disconnect-worker.migrationDatabaseUrlKey" -}}
{{- if .Values.existingSecret }}
{{- default .Values.existingSecretKeys.databaseUrl .Values.existingSecretKeys.migrationDatabaseUrl }}
{{- else }}
{{- print "DATABASE_URL" }}
{{- end }}
{{- end }}

{{/*
Seconds Kubernetes waits between SIGTERM and SIGKILL. The worker drains for up
to config.shutdownGraceSecs; killing it sooner would abandon in-flight
requests (redelivered later, but counted against the delivery limit).
*/}}
{{- define "disconnect-worker.terminationGracePeriodSeconds" -}}
{{- $grace := int .Values.config.shutdownGraceSecs }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.shutdownGraceSecs (%d), or the worker is killed while it drains" (int .Values.terminationGracePeriodSeconds) $grace) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
The OpenTelemetry settings that are set, as a YAML map from the standard
OTEL_* variable to its value: the worker reads them from the ConfigMap, the
migration Job (which cannot use the ConfigMap) from its own env. Unset ones
are left out, so the SDK's defaults apply. OTEL_RESOURCE_ATTRIBUTES is not
among them: see disconnect-worker.otelPodEnv.
*/}}
{{- define "disconnect-worker.otelSettings" -}}
{{- $settings := dict }}
{{- with .Values.otel }}
{{- $variables := dict
      "OTEL_EXPORTER_OTLP_ENDPOINT" .endpoint
      "OTEL_EXPORTER_OTLP_PROTOCOL" .protocol
      "OTEL_SERVICE_NAME" .serviceName
      "OTEL_TRACES_SAMPLER" .tracesSampler
      "OTEL_TRACES_SAMPLER_ARG" .tracesSamplerArg }}
{{- range $variable, $value := $variables }}
{{- if $value }}
{{- $_ := set $settings $variable $value }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/*
With an OTLP endpoint only: the pod's name, namespace and node from the
downward API, then OTEL_RESOURCE_ATTRIBUTES made of them (the kubelet expands
$(VAR) from variables defined earlier in the list) followed by
otel.resourceAttributes, sorted by key. An EnvVar list for the worker and
migration containers. This is the one place OTEL_RESOURCE_ATTRIBUTES is set:
a ConfigMap cannot hold a value that differs from pod to pod.
*/}}
{{- define "disconnect-worker.otelPodEnv" -}}
{{- if .Values.otel.endpoint }}
{{- $attributes := list
      "k8s.pod.name=$(K8S_POD_NAME)"
      "k8s.namespace.name=$(K8S_NAMESPACE_NAME)"
      "k8s.node.name=$(K8S_NODE_NAME)" }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end }}
{{- end }}

{{/*
A number as PromQL reads it. Helm reads numbers as floats, and a float prints
as 1e+06; a whole number prints as an integer instead.
*/}}
{{- define "disconnect-worker.number" -}}
{{- $number := float64 . }}
{{- if eq $number (float64 (int64 $number)) }}
{{- int64 $number }}
{{- else }}
{{- $number }}
{{- end }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express.
*/}}
{{- define "disconnect-worker.validate" -}}
{{- if and .Values.keda.enabled .Values.autoscaling.enabled }}
{{- fail "keda.enabled and autoscaling.enabled cannot both be true: two autoscalers would fight over the Deployment's replicas. Enable one." }}
{{- end }}
{{- if and (not .Values.existingSecret) (or (not .Values.secret.databaseUrl) (not .Values.secret.amqpUrl)) }}
{{- fail "secret.databaseUrl and secret.amqpUrl are required (or set existingSecret to a Secret holding DATABASE_URL and AMQP_URL)" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if eq .Values.keda.protocol "http" }}
{{- if and .Values.existingSecret (not .Values.existingSecretKeys.kedaManagementUrl) }}
{{- fail "keda.protocol http reads the queue from the RabbitMQ management API: set existingSecretKeys.kedaManagementUrl to the key of its URL (http(s)://user:pass@host:15672/vhost) in existingSecret" }}
{{- else if and (not .Values.existingSecret) (not .Values.secret.kedaManagementUrl) }}
{{- fail "keda.protocol http reads the queue from the RabbitMQ management API: set secret.kedaManagementUrl (http(s)://user:pass@host:15672/vhost)" }}
{{- end }}
{{- else if and (not .Values.existingSecret) (contains "," .Values.secret.amqpUrl) (not .Values.secret.kedaAmqpUrl) }}
{{- fail "secret.amqpUrl lists several brokers, and the KEDA trigger takes one: set secret.kedaAmqpUrl" }}
{{- end }}
{{- with .Values.keda.tls }}
{{- if and .enabled (not .secretName) }}
{{- fail "keda.tls.enabled needs keda.tls.secretName: the Secret holding the CA (and client certificate and key) KEDA connects with" }}
{{- end }}
{{- if and .enabled (ne (empty .keys.cert) (empty .keys.key)) }}
{{- fail "keda.tls.keys.cert and keda.tls.keys.key go together: a client certificate needs its key" }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := list "k8s.pod.name" "k8s.namespace.name" "k8s.node.name" }}
{{- if hasKey $.Values.otel.resourceAttributes $key }}
{{- fail (printf "otel.resourceAttributes sets %s, which the chart takes from the pod itself: leave it out" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.otel.tracesSamplerArg (not (has .Values.otel.tracesSampler (list "traceidratio" "parentbased_traceidratio"))) }}
{{- fail "otel.tracesSamplerArg is read only by the traceidratio samplers: set otel.tracesSampler to traceidratio or parentbased_traceidratio, or leave the argument empty" }}
{{- end }}
{{- if gt (int .Values.config.retryMinDelayMs) (int .Values.config.retryMaxDelayMs) }}
{{- fail "config.retryMinDelayMs must not exceed config.retryMaxDelayMs (the worker refuses to start otherwise)" }}
{{- end }}
{{- if .Values.webhooks.enabled }}
{{- with .Values.webhooks.secretKey }}
{{- if and (not .existingSecret) (not .value) }}
{{- fail "webhooks.enabled needs WEBHOOK_SECRET_KEY (32 random bytes in base64: openssl rand -base64 32) from a Secret: set webhooks.secretKey.existingSecret (and webhooks.secretKey.key) to a Secret you manage that holds it, or webhooks.secretKey.value for a Secret the chart makes" }}
{{- end }}
{{- if and .existingSecret .value }}
{{- fail "webhooks.secretKey.existingSecret and webhooks.secretKey.value are both set: the dispatcher reads one key; keep the existing Secret and leave value empty" }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.config }}
{{- if ge (int .databaseStatementTimeoutSecs) (int .databaseTransactionTimeoutSecs) }}
{{- fail "config.databaseStatementTimeoutSecs must be less than config.databaseTransactionTimeoutSecs: on a working link the server's timeout must end a slow statement first (the worker refuses to start otherwise)" }}
{{- end }}
{{- if ge (int .amqpConfirmTimeoutSecs) (int .databaseTransactionTimeoutSecs) }}
{{- fail "config.amqpConfirmTimeoutSecs must be less than config.databaseTransactionTimeoutSecs: the outbox relay waits for confirms inside a transaction (the worker refuses to start otherwise)" }}
{{- end }}
{{- end }}
{{- end }}
