"""Tracing settings, the PrometheusRule and the Grafana dashboard."""

from __future__ import annotations

import pytest

from chart import (
    CREDENTIALS, EXISTING_SECRET, OTEL, OTEL_ENV, PROGRAM_ENV, SECRET_ENV, env, merge, one,
    render, render_error,
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
