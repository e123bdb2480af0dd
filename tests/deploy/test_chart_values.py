"""The chart's values: the schema is generated from TurnoutConfig and current, Helm rejects bad
values with a message, the defaults serve a Llama and a DeepSeek model, and the chart lints."""

from __future__ import annotations

import helm_python
import pytest

from engine.errors import ConfigError
from service.cli.chart import chart_schema, render_values_schema
from service.config import TurnoutConfig
from tests.deploy.chart import CHART, CI_VALUES, load_values, render

LLAMA = {"id": "local/llama/x", "source": {"ref": "acme/x"}}
MISSING_DEPENDENCY = "chart directory is missing these dependencies: kuberay-operator"


def test_the_checked_in_schema_is_current():
    path = CHART / "values.schema.json"
    assert render_values_schema(path) == path.read_text(), "stale: run `turnout chart-schema`"


def test_chart_schema_regenerates_a_stale_schema(tmp_path):
    stale = tmp_path / "values.schema.json"
    stale.write_text('{"type": "object", "properties": {"image": {"type": "object"}}}')
    with pytest.raises(ConfigError, match="stale"):
        chart_schema(chart=tmp_path, check=True)
    chart_schema(chart=tmp_path, check=False)
    assert render_values_schema(stale) == stale.read_text()
    assert '"image"' in stale.read_text() and '"ModelSource"' in stale.read_text()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"turnout": {"models": [{**LLAMA, "replicas": 0}]}}, "'/turnout/models/0/replicas': minimum: got 0, want 1"),
        ({"turnout": {"models": [{**LLAMA, "engine": {"tensor_parallel_size": 0}}]}}, "/engine/tensor_parallel_size': minimum"),
        ({"turnout": {"modles": []}}, "'modles' not allowed"),
        ({"turnout": {"models": [{**LLAMA, "source": {"ref": "acme/x", "token": "t"}}]}}, "'token' not allowed"),
        ({"turnout": {"auth": {"api_keys": ["sk-1"]}}}, "'api_keys' not allowed"),
        ({"workers": []}, "'workers' not allowed"),
        ({"platform": "tpu"}, "'/platform': value must be one of"),
        ({"workerGroups": [{"name": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "gpus": -1}]}, "'/workerGroups/0/gpus': minimum"),
        ({"workerGroups": [{"name": "Bad_Name", "replicas": 1, "minReplicas": 1, "maxReplicas": 1}]}, "'/workerGroups/0/name': 'Bad_Name' does not match"),
        ({"service": {"port": 0}}, "'/service/port': minimum"),
        ({"networkPolicy": {"apiFrom": [{}]}}, "'/networkPolicy/apiFrom/0': minProperties"),
        ({"networkPolicy": {"metricsFrom": [{"podSelectr": {}}]}}, "'/networkPolicy/metricsFrom/0': additional properties 'podSelectr' not allowed"),
        ({"networkPolicy": {"operatorFrom": [{"ipBlock": {}}]}}, "'/networkPolicy/operatorFrom/0/ipBlock': missing property 'cidr'"),
        ({"rayAuth": {"via": "sidecar"}}, "'/rayAuth/via': value must be one of"),
        ({"rayAuth": {"token": "short-token"}}, "'/rayAuth/token': minLength: got 11, want 32"),
    ],
)
def test_helm_rejects_bad_values_with_a_message(chart: helm_python.Chart, values: dict, message: str):
    with pytest.raises(helm_python.HelmValuesError) as info:
        chart.render(values, name="llm")
    assert message in str(info.value)


def test_a_provider_key_without_a_secret_fails_the_render(chart: helm_python.Chart):
    provider = {"name": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"}
    with pytest.raises(helm_python.HelmRenderError) as info:
        chart.render({"turnout": {"cloud_providers": [provider]}}, name="llm")
    assert "secrets.cloudApiKeys.OPENAI_API_KEY" in str(info.value)


def test_defaults_serve_a_llama_and_a_deepseek_model_on_one_gpu_each(chart: helm_python.Chart):
    rendered = render(chart, {})
    config = TurnoutConfig(**rendered.values["turnout"])
    assert sorted(m.id.split("/")[1] for m in config.models) == ["deepseek", "llama"]
    assert all(m.num_gpus == 1 and m.source and m.source.kind == "huggingface" for m in config.models)
    assert [g["gpus"] for g in rendered.values["workerGroups"]] == [1]
    assert rendered.values["workerGroups"][0]["replicas"] == len(config.models)


@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=lambda p: p.stem if p else "defaults")
def test_the_chart_lints(values_file):
    report = helm_python.lint(CHART, load_values(values_file), kube_version="v1.35.0")
    assert report["errors"] == []
    # The optional operator subchart is only vendored by `helm dependency build`.
    warnings = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    assert set(warnings) <= {MISSING_DEPENDENCY}, warnings


def test_the_operator_dependency_is_optional_and_needs_no_network():
    (dependency,) = helm_python.dependency_list(CHART)
    assert dependency["name"] == "kuberay-operator" and dependency["status"] == "missing"
    with helm_python.Chart.load(CHART) as loaded:
        assert loaded.metadata["dependencies"][0]["condition"] == "kuberay-operator.enabled"
        assert loaded.render({"kuberay-operator": {"enabled": False}}, name="llm")


def test_models_carry_their_adapters_into_the_serve_config(chart: helm_python.Chart):
    adapters = [{"name": "support", "ref": "acme/support-lora"}, {"name": "local", "kind": "path", "ref": "/models/loras/x"}]
    model = {**LLAMA, "engine": {"max_loras": 2, "max_lora_rank": 16}, "adapters": adapters}
    rendered = render(chart, {"turnout": {"models": [model]}})
    turnout = TurnoutConfig(**rendered.serve_config["applications"][0]["args"]["turnout"])
    (served,) = turnout.models
    assert [(a.name, a.kind, a.ref) for a in served.adapters] == [
        ("support", "huggingface", "acme/support-lora"), ("local", "path", "/models/loras/x"),
    ]
    assert served.engine.max_loras == 2
    with pytest.raises(Exception, match="kind"):
        chart.render({"turnout": {"models": [{**model, "adapters": [{"name": "x", "kind": "s3", "ref": "b"}]}]}}, name="llm")
