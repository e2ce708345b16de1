"""deploy/grafana/dispatcher-tenants.json: valid JSON whose every query reads metrics and labels
that DESIGN section 11 names and the dispatcher exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dispatcher.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dispatcher-tenants.json"

#: DESIGN section 11, word for word: the contract the dashboard and the code both follow.
DESIGN_11 = {
    "dispatcher_requests_total": {"tenant", "code"},
    "dispatcher_request_duration_seconds": {"tenant"},
    "dispatcher_requests_in_flight": {"tenant"},
    "dispatcher_tenant_state": {"tenant", "state"},
    "dispatcher_rejected_total": {"tenant", "reason"},
    "dispatcher_builds_total": {"tenant", "result"},
    "dispatcher_build_duration_seconds": {"tenant"},
    "dispatcher_reloads_total": {"result"},
    "dispatcher_reload_duration_seconds": set(),
}
HISTOGRAMS = {n for n in DESIGN_11 if n.endswith("_seconds")}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    found = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard()["templating"]["list"] if "definition" in v]
    return found


def series(name: str) -> tuple[str, set[str]]:
    """``dispatcher_x_bucket`` -> (``dispatcher_x``, its labels + ``le``)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in HISTOGRAMS:
            return base, DESIGN_11[base] | ({"le"} if suffix == "_bucket" else set())
    assert name in DESIGN_11, f"{name} is not a metric of DESIGN section 11"
    return name, DESIGN_11[name]


def test_the_code_exports_exactly_design_11() -> None:
    assert set(METRIC_NAMES) == set(DESIGN_11)


@pytest.mark.parametrize("query", queries())
def test_every_query_reads_design_11_metrics_and_labels(query: str) -> None:
    names = re.findall(r"\bdispatcher_[a-z_]+\b", query)
    assert names, f"no dispatcher metric in {query}"
    labels: set[str] = set(TARGET_LABELS)
    for name in names:
        labels |= series(name)[1]
    used = set(re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)\s*\"", query))
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", query):
        used |= {label.strip() for label in grouping.split(",")}
    for function_labels in re.findall(r"label_values\([^,]*,\s*([a-z_]+)\)", query):
        used.add(function_labels)
    assert used <= labels, f"{query}: labels {used - labels} do not exist"


def test_the_dashboard_has_what_operators_need() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["tenant"]["multi"] and variables["tenant"]["includeAll"]
    assert "$tenant" in json.dumps(board["panels"])
    expressions = " ".join(queries())
    assert "topk(10," in expressions
    for metric in (
        "dispatcher_requests_total",
        "dispatcher_request_duration_seconds_bucket",
        "dispatcher_requests_in_flight",
        "dispatcher_rejected_total",
    ):
        assert metric in expressions
    assert "histogram_quantile(0.5," in expressions and "histogram_quantile(0.99," in expressions
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()


def promtool() -> str:
    """promtool (Debian's prometheus package; .ci/run installs it): skip locally without it."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"{reason}; under CI=true this test may not skip")
        pytest.skip(reason)
    return found


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, with Grafana's variables filled in as Grafana does."""
    variables = {"$__rate_interval": "1m", "$tenant": ".*", "$instance": ".*"}
    rules = []
    for i, query in enumerate(q for q in queries() if not q.startswith("label_values")):
        for variable, value in variables.items():
            query = query.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    file = tmp_path / "rules.yml"
    file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool(), "check", "rules", str(file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_the_documented_scrape_config_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.partition("## Watching tenants")[2]
    config = re.search(r"```yaml\n(scrape_configs:.*?)```", section, re.DOTALL)
    assert config is not None, "docs/operations.md shows a Prometheus scrape config"
    file = tmp_path / "prometheus.yml"
    file.write_text(config[1])
    done = subprocess.run(
        [promtool(), "check", "config", str(file)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
