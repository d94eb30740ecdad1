"""Where inference servers and gateways keep request work in Prometheus: metric names and labels.

A `RequestMetrics` names, for one exporter, the Prometheus series of each measure of
REQUEST_WORK_SCHEMA (all counters, or a histogram's `_sum` / `_count`, read as exact
increases) and the labels naming the endpoint and the tenant. Two are built in, as their
projects document them:

- `VLLM`, the inference server (vLLM production metrics, docs.vllm.ai `usage/metrics`, v0.9
  to v0.11; labels `model_name`): prompt and generation token counters, the request prefill,
  decode and end-to-end latency histograms. vLLM knows no tenants.
- `LITELLM`, the gateway (LiteLLM proxy's Prometheus callback,
  `litellm/integrations/prometheus.py` of BerriAI/litellm main, 2026;
  docs.litellm.ai/docs/proxy/prometheus): `litellm_input_tokens_metric` and
  `litellm_output_tokens_metric` counters and the `litellm_request_total_latency_metric`
  histogram, labelled per virtual key and team (`hashed_api_key`, `api_key_alias`, `team`,
  `team_alias`, `user`, `end_user`) and `model`. The tenant is `team_alias` unless configured.

Any other gateway is a YAML file (`load_request_metrics`) naming the same things; see
docs/collectors.md."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import UserError
from models.files import read_yaml

MEASURES = ("requests", "request_seconds", "prefill_seconds", "decode_seconds",
            "input_tokens", "output_tokens")
"""Measures of REQUEST_WORK_SCHEMA a mapping may name a counter for."""
HISTOGRAMS = {"latency": "latency_buckets", "ttft": "ttft_buckets"}
"""Latency histograms a mapping may name -> their REQUEST_WORK_SCHEMA column."""

_MATCHER = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
_METRIC = re.compile(rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{{{_MATCHER}(,{_MATCHER})*\}})?$")
"""A metric name, optionally with label matchers: `gen_ai_client_token_usage_sum{type="input"}`."""
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class RequestMetrics:
    """The series and labels of one exporter's request work."""

    name: str
    model_label: str
    counters: Mapping[str, str]
    """measure (one of MEASURES) -> metric name (a counter, or a histogram's _sum/_count),
    optionally with label matchers (`{token_type="input"}`) where one metric holds several."""
    tenant_label: str | None = None
    """Label naming the tenant; None for a server that knows no tenants (vLLM)."""
    namespace_label: str | None = "namespace"
    """Label naming the endpoint's Kubernetes namespace (Prometheus's Kubernetes service
    discovery relabels it onto every series of a pod)."""
    namespace: str | None = None
    """The endpoint's namespace when the series carry none (a gateway scraped outside the
    endpoint's namespace): one of `namespace_label` and `namespace` is set."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Label matchers every series must carry (e.g. `job: litellm`)."""
    gauges: Mapping[str, str] = field(default_factory=dict)
    """`requests_running` / `requests_waiting` -> a gauge of the server's scheduler."""
    histograms: Mapping[str, str] = field(default_factory=dict)
    """`latency` (end to end) and `ttft` (time to first token) -> a histogram's name, whose
    `<name>_bucket` series (label `le`) give each interval's latency histogram."""


VLLM = RequestMetrics(
    name="vllm",
    model_label="model_name",
    counters={
        "requests": "vllm:e2e_request_latency_seconds_count",
        "request_seconds": "vllm:e2e_request_latency_seconds_sum",
        "prefill_seconds": "vllm:request_prefill_time_seconds_sum",
        "decode_seconds": "vllm:request_decode_time_seconds_sum",
        "input_tokens": "vllm:prompt_tokens_total",
        "output_tokens": "vllm:generation_tokens_total",
    },
    histograms={"latency": "vllm:e2e_request_latency_seconds",
                "ttft": "vllm:time_to_first_token_seconds"},
    gauges={"requests_running": "vllm:num_requests_running",
            "requests_waiting": "vllm:num_requests_waiting"},
)

LITELLM = RequestMetrics(
    name="litellm",
    model_label="model",
    tenant_label="team_alias",
    counters={
        "requests": "litellm_request_total_latency_metric_count",
        "request_seconds": "litellm_request_total_latency_metric_sum",
        "input_tokens": "litellm_input_tokens_metric_total",
        "output_tokens": "litellm_output_tokens_metric_total",
    },
    histograms={"latency": "litellm_request_total_latency_metric",
                "ttft": "litellm_llm_api_time_to_first_token_metric"},
)

BUILT_IN = {m.name: m for m in (VLLM, LITELLM)}


def load_request_metrics(path: Path) -> RequestMetrics:
    """The mapping in YAML file `path`, every problem reported at once (UserError)."""
    return parse_request_metrics(read_yaml(path), str(path))


def parse_request_metrics(data: Any, where: str) -> RequestMetrics:
    """A mapping from parsed YAML: `name`, `model_label`, `tenant_label`, `namespace_label` or
    `namespace`, `match` (label: value) and `metrics` (measure: metric name)."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with metrics and labels, got "
                        f"{type(data).__name__}")
    problems: list[str] = []
    known = {"name", "model_label", "tenant_label", "namespace_label", "namespace", "match",
             "metrics", "histograms", "gauges"}
    problems += [f"{key}: unknown field (expected one of {', '.join(sorted(known))})"
                 for key in data if key not in known]

    def text(key: str, pattern: re.Pattern[str] | None, required: bool) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                problems.append(f"{key}: required")
            return None
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: expected a non-empty string, got {value!r}")
            return None
        if pattern is not None and not pattern.match(value):
            problems.append(f"{key}: {value!r} is not a Prometheus label name")
            return None
        return value

    name = text("name", None, True)
    model_label = text("model_label", _LABEL, True)
    tenant_label = text("tenant_label", _LABEL, False)
    namespace_label = text("namespace_label", _LABEL, False)
    namespace = text("namespace", None, False)
    if (namespace_label is None) == (namespace is None) and not any(
            p.startswith("namespace") for p in problems):
        problems.append("namespace_label / namespace: set exactly one (the label naming the "
                        "endpoint's namespace, or the namespace itself)")
    counters: dict[str, str] = {}
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        problems.append(f"metrics: expected a mapping of measure to metric name "
                        f"(measures: {', '.join(MEASURES)})")
    else:
        for measure, metric in metrics.items():
            if measure not in MEASURES:
                problems.append(f"metrics.{measure}: unknown measure (expected one of "
                                f"{', '.join(MEASURES)})")
            elif not isinstance(metric, str) or not _METRIC.match(metric):
                problems.append(f"metrics.{measure}: {metric!r} is not a Prometheus metric name, "
                                f"optionally with matchers {{label=\"value\"}}")
            else:
                counters[measure] = metric
        if not any(m in counters for m in ("request_seconds", "input_tokens", "prefill_seconds")
                   ) and not any(p.startswith("metrics.") for p in problems):
            problems.append("metrics: name at least one measure of work (request_seconds, "
                            "prefill_seconds and decode_seconds, or input_tokens and "
                            "output_tokens)")
        for a, b in (("prefill_seconds", "decode_seconds"), ("input_tokens", "output_tokens")):
            if (a in counters) != (b in counters):
                problems.append(f"metrics: {a} and {b} go together (work is weighed by both)")
    extra: dict[str, str] = {}
    match = data.get("match", {})
    if not isinstance(match, dict):
        problems.append(f"match: expected a mapping of label to value, got {match!r}")
    else:
        for label, value in match.items():
            if not isinstance(label, str) or not _LABEL.match(label) or not isinstance(value, str):
                problems.append(f"match.{label}: expected a label name and a string value")
            else:
                extra[label] = value

    def names(key: str, allowed: Sequence[str], what: str, *, matchers: bool
              ) -> dict[str, str]:
        """A mapping of `allowed` keys to metric names; histogram names take no matchers
        (their `_bucket` series are named from them)."""
        named: dict[str, str] = {}
        raw = data.get(key, {})
        if not isinstance(raw, dict):
            problems.append(f"{key}: expected a mapping of {'/'.join(allowed)} to a {what} "
                            f"name, got {raw!r}")
            return named
        for entry, metric in raw.items():
            if entry not in allowed:
                problems.append(f"{key}.{entry}: unknown {what} (expected one of "
                                f"{', '.join(allowed)})")
            elif not isinstance(metric, str) or not _METRIC.match(metric) or (
                    not matchers and "{" in metric):
                problems.append(f"{key}.{entry}: {metric!r} is not a Prometheus metric name")
            else:
                named[entry] = metric
        return named

    histograms = names("histograms", tuple(HISTOGRAMS), "histogram", matchers=False)
    gauges = names("gauges", ("requests_running", "requests_waiting"), "gauge", matchers=True)
    if problems:
        raise UserError("\n".join(f"{where}: {p}" for p in problems))
    assert name is not None
    assert model_label is not None
    return RequestMetrics(name=name, model_label=model_label, counters=counters,
                          tenant_label=tenant_label, namespace_label=namespace_label,
                          namespace=namespace, extra=extra, histograms=histograms,
                          gauges=gauges)
