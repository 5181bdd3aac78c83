"""docker-compose.yml's `monitoring` profile (no Docker engine runs here): Prometheus scrapes
every engine, pioneer and gateway either deployment runs, on the metrics port each is given;
the Grafana dashboard asks only for metrics and labels the services' registries export, through
the datasource Grafana is provisioned with; what the profile mounts is in the repository, and
what it publishes is on 127.0.0.1 only, the services' metrics ports not at all."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from services.certs import make_deployment_secrets
from services.engine.metrics import EngineMetrics
from services.gateway.metrics import GatewayMetrics
from services.pioneer.metrics import PioneerMetrics
from tests.test_deployment import (
    ALL_SERVICES,
    CLUSTER,
    COMPOSE,
    MONITORING,
    ROOT,
    SERVICES,
    SETTINGS,
    entry_config,
    env,
    kind,
    settings,
)

PROMETHEUS_CONFIG: dict[str, Any] = yaml.safe_load(
    (ROOT / "deploy/prometheus/prometheus.yml").read_text()
)
GRAFANA = ROOT / "deploy/grafana"
DASHBOARD: dict[str, Any] = json.loads((GRAFANA / "discovery.json").read_text())
(DATASOURCE,) = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
    "datasources"
]
(DASHBOARD_PROVIDER,) = yaml.safe_load(
    (GRAFANA / "provisioning/dashboards/discovery.yml").read_text()
)["providers"]
# The services Prometheus scrapes: the default deployment's and the cluster profile's.
SCRAPED = {name for name in ALL_SERVICES if kind(name) in SETTINGS}
METRICS_PORT = {service: f"{service.upper()}_METRICS_PORT" for service in SETTINGS}


# --- what the services export ---------------------------------------------------------------


@dataclass
class Exported:
    """A sample name as Prometheus stores it (`…_total`, `…_bucket`, …), its family's type, and
    the labels it carries."""

    type: str
    labels: set[str] = field(default_factory=set)


def exported(metrics: Any, registry: CollectorRegistry) -> dict[str, Exported]:
    """Every sample name `registry` exposes. A labelled metric shows no sample until it has a
    child: each is given one first, so that an idle service's names count too."""
    for metric in vars(metrics).values():
        # prometheus-client keeps a metric's label names private, with no public accessor.
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*["probe"] * len(metric._labelnames))
    found: dict[str, Exported] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, Exported(family.type)).labels |= set(sample.labels)
    return found


def registries() -> dict[str, dict[str, Exported]]:
    """By service kind, as each service wires its metrics (the `follow` of what is read at
    scrape time included: the engine's queue depth is registered by it)."""
    engine = EngineMetrics()
    engine.follow(
        watchers=lambda: 0, held=lambda: 0, pollers=lambda: 0, queued=lambda: {"probe": 1}
    )
    pioneer = PioneerMetrics()
    pioneer.follow(slots=1, in_use=lambda: 0)
    gateway = GatewayMetrics()
    gateway.follow(streams=lambda: 0, engine_streams=lambda: 0)
    return {
        "engine": exported(engine, engine.registry),
        "pioneer": exported(pioneer, pioneer.registry),
        "gateway": exported(gateway, gateway.registry),
    }


def target_labels() -> set[str]:
    """The labels Prometheus gives every series it scrapes: job and instance, and those
    deploy/prometheus/prometheus.yml sets."""
    labels = {"job", "instance"}
    for job in PROMETHEUS_CONFIG["scrape_configs"]:
        for group in job["static_configs"]:
            labels |= set(group.get("labels", {}))
        labels |= {rule["target_label"] for rule in job.get("relabel_configs", [])}
    return labels


def catalogue() -> dict[str, dict[str, Exported]]:
    """What a query may name, by service kind, with the target labels; `up` is Prometheus's
    own series of every target."""
    found = registries()
    for samples in found.values():
        for sample in samples.values():
            sample.labels |= target_labels()
        samples["up"] = Exported("gauge", target_labels())
    return found


# --- reading PromQL -------------------------------------------------------------------------

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])                      # a range or a subquery: [5m], [$__rate_interval]
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>\d[\w.]*|\.\d[\w.]*)            # 0.95, 1e3, 5m (after offset), 0x1f
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,(){}])
    """,
    re.VERBOSE,
)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
MATCHERS = {"=", "!=", "=~", "!~"}
COUNTER_RATES = {"rate", "irate", "increase"}
# PromQL's aggregations and functions (a name followed by a parenthesis is one of these, or a
# typo that Prometheus would refuse).
# fmt: off
FUNCTIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "abs", "absent", "absent_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month",
    "delta", "deriv", "exp", "floor", "histogram_quantile", "histogram_count", "histogram_sum",
    "histogram_fraction", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time"
}
# fmt: on


@dataclass
class Token:
    kind: str
    text: str


@dataclass
class Selector:
    metric: str
    at: int  # its token's index
    matchers: list[tuple[str, str, str]] = field(default_factory=list)


def tokens(expr: str) -> list[Token]:
    found = []
    at = 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        if match is None:
            raise ValueError(f"cannot read {expr[at:]!r} in {expr!r}")
        assert match.lastgroup is not None
        if match.lastgroup != "space":
            found.append(Token(match.lastgroup, match.group()))
        at = match.end()
    return found


def closing(toks: list[Token], opening: int) -> int:
    """The index of the parenthesis that closes the one at `opening`."""
    depth = 0
    for at in range(opening, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[at].text, 0) if toks[at].kind == "op" else 0
        if depth == 0:
            return at
    raise ValueError("a parenthesis left open")


def opening(toks: list[Token], closed: int) -> int:
    """The index of the parenthesis that the one at `closed` closes."""
    depth = 0
    for at in range(closed, -1, -1):
        depth += {")": 1, "(": -1}.get(toks[at].text, 0) if toks[at].kind == "op" else 0
        if depth == 0:
            return at
    raise ValueError("a parenthesis closed that was not opened")


def unquote(text: str) -> str:
    """A PromQL string's value (a backquoted one is raw)."""
    return text[1:-1] if text[0] == "`" else str(json.loads('"' + text[1:-1] + '"'))


@dataclass
class Query:
    """What a PromQL expression names: its selectors, the labels it groups by (with the tokens
    each aggregation covers), the labels it matches series on, and its function calls."""

    selectors: list[Selector] = field(default_factory=list)
    groupings: list[tuple[str, int, int]] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)  # on, ignoring, group_left, group_right
    calls: list[tuple[str, int, int]] = field(default_factory=list)  # and their parentheses
    problems: list[str] = field(default_factory=list)


def read(expr: str) -> Query:
    query = Query()
    try:
        toks = tokens(expr)
    except ValueError as exc:
        query.problems.append(str(exc))
        return query
    at = 0
    while at < len(toks):
        tok = toks[at]
        following = toks[at + 1].text if at + 1 < len(toks) else ""
        if tok.kind != "ident":
            at += 1
        elif tok.text in GROUPING:
            if following != "(":
                at += 1  # group_left without labels
                continue
            end = closing(toks, at + 1)
            labels = [t.text for t in toks[at + 2 : end] if t.kind == "ident"]
            if tok.text in ("by", "without"):
                if toks[at - 1].text == ")":  # sum(…) by (…)
                    scope = (opening(toks, at - 1), at - 1)
                else:  # sum by (…) (…)
                    scope = (end + 1, closing(toks, end + 1))
                query.groupings += [(label, *scope) for label in labels]
            else:
                query.joins += labels
            at = end + 1
        elif tok.text.lower() in KEYWORDS:
            at += 1
        elif following in ("(", "by", "without"):  # a function, or `sum by (…) (…)`
            if tok.text not in FUNCTIONS:
                query.problems.append(f"{tok.text}(…) is no PromQL function")
            if following == "(":
                query.calls.append((tok.text, at + 1, closing(toks, at + 1)))
            at += 1
        else:
            selector = Selector(tok.text, at)
            query.selectors.append(selector)
            at += 1
            if following != "{":
                continue
            end = next(i for i in range(at, len(toks)) if toks[i].text == "}")
            matchers = [t for t in toks[at + 1 : end] if t.text != ","]
            for i in range(0, len(matchers), 3):
                label, op, value = (matchers[i : i + 3] + [Token("", "")] * 3)[:3]
                if label.kind != "ident" or op.text not in MATCHERS or value.kind != "string":
                    query.problems.append(f"{tok.text}: cannot read its matchers")
                    break
                selector.matchers.append((label.text, op.text, unquote(value.text)))
            at = end + 1
    return query


def problems(expr: str, known: dict[str, dict[str, Exported]]) -> list[str]:
    """What Prometheus would find nothing for, or what answers nothing meaningful: a metric no
    service exports, a label it does not carry (a matcher, a `by`), a service it is not
    exported by, a count read without a rate, a rate of a gauge, a quantile without `le`."""
    query = read(expr)
    found = query.problems

    def exporters(selector: Selector) -> dict[str, Exported]:
        """The services that export it, narrowed to those its `service` matcher names."""
        by = {
            svc: names[selector.metric] for svc, names in known.items() if selector.metric in names
        }
        for label, op, value in selector.matchers:
            listed = op == "=~" and re.fullmatch(r"[\w|-]+", value)
            if label == "service" and (op == "=" or listed):
                named = set(value.split("|"))
                for svc in sorted(named - set(by)):
                    found.append(f"{selector.metric}: {svc} exports no such metric")
                by = {svc: sample for svc, sample in by.items() if svc in named}
        return by

    def inside(selector: Selector, first: int, last: int) -> bool:
        return first < selector.at < last

    anywhere: set[str] = set()
    for selector in query.selectors:
        if not any(selector.metric in names for names in known.values()):
            found.append(f"{selector.metric}: no service exports it")
            continue
        by = exporters(selector)
        if not by:
            continue
        labels = set.intersection(*(sample.labels for sample in by.values()))
        anywhere |= labels
        for label, _, _ in selector.matchers:
            if label not in labels:
                found.append(f"{selector.metric} has no label {label}")
        for label, first, last in query.groupings:
            if inside(selector, first, last) and label not in labels:
                found.append(f"{selector.metric} has no label {label} to group by")
        types = {sample.type for sample in by.values()}
        rated = any(
            inside(selector, first, last)
            for name, first, last in query.calls
            if name in COUNTER_RATES
        )
        counts = types <= {"counter", "histogram"} and selector.metric.endswith(
            ("_total", "_bucket", "_sum", "_count")
        )
        if rated and not counts:
            found.append(f"{selector.metric}: a rate of what is not a count")
        if counts and not rated:
            found.append(f"{selector.metric}: a count read without a rate")
    for name, first, last in query.calls:
        if name != "histogram_quantile":
            continue
        buckets = [s for s in query.selectors if inside(s, first, last)]
        if not buckets or not all(s.metric.endswith("_bucket") for s in buckets):
            found.append("histogram_quantile of what is not a histogram's buckets")
        grouped = [label for label, f, to in query.groupings if first < f and to < last]
        if grouped and "le" not in grouped:
            found.append("histogram_quantile over a sum that drops le")
    for label in query.joins:
        if label not in anywhere:
            found.append(f"no metric here has the label {label} to match on")
    return found


# --- the dashboard --------------------------------------------------------------------------


def panels(container: dict[str, Any] = DASHBOARD) -> Iterator[dict[str, Any]]:
    """Every panel, rows' (collapsed ones hold theirs) included."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel's target, and the selector of every `label_values`."""
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            # A string, as Grafana's Prometheus variables take it (its editor's object form
            # holds it under "query").
            query = variable["query"]
            query = query if isinstance(query, str) else query["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query}"
            # The label it lists, as a matcher of the selector: checked like one.
            selector = match.group(1)
            label = f'{match.group(2)}=~".+"'
            expr = selector[:-1] + f", {label}}}" if selector.endswith("}") else selector
            yield f"variable {variable['name']}", expr


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def test_the_dashboard_queries_only_metrics_and_labels_the_services_export() -> None:
    known = catalogue()
    found = [
        f"{where}: {problem}" for where, expr in queries() for problem in problems(expr, known)
    ]
    assert found == []
    used = {s.metric for _, expr in queries() for s in read(expr).selectors}
    # What a reader of the issue expects on it: each service's figures, and the processes'.
    for name in (
        "discovery_executions_started_total",
        "discovery_pioneer_slots_in_use",
        "discovery_gateway_requests_total",
        "discovery_rpc_errors_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in used, name


GOOD = (
    "histogram_quantile(0.95, sum by (le, handler) (rate("
    'discovery_step_queue_wait_seconds_bucket{service="engine", job=~"$job"}[$__rate_interval])))'
)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        (GOOD, None),
        ("sum(rate(discovery_steps_started_total[5m]))", "no service exports it"),
        (GOOD.replace("queue_wait", "queue_waits"), "no service exports it"),
        (GOOD.replace("le, handler", "le, workflow"), "no label workflow to group by"),
        (
            "sum(rate(discovery_executions_finished_total[5m])) by (workflow, status)",
            "no label status to group by",
        ),
        (GOOD.replace('job=~"$job"', 'tenant="acme"'), "has no label tenant"),
        (GOOD.replace('"engine"', '"pioneer"'), "pioneer exports no such metric"),
        ("rate(discovery_pioneer_slots[5m])", "a rate of what is not a count"),
        ("discovery_step_retries_total", "a count read without a rate"),
        (GOOD.replace("le, handler", "handler"), "drops le"),
        ("histogram_quantile(0.5, rate(discovery_pioneer_slots[5m]))", "not a histogram"),
        ("sum(rat(discovery_step_retries_total[5m]))", "no PromQL function"),
        # What the reader does not know (here a comment) fails, rather than passing unread.
        ("sum(rate(discovery_step_retries_total[5m])) # retries", "cannot read"),
        ('discovery_watchers{service="engine", job}', "cannot read its matchers"),
    ],
)
def test_the_query_check_finds_what_prometheus_would_answer_nothing_for(
    expr: str, problem: str | None
) -> None:
    found = problems(expr, catalogue())
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


def test_every_panel_reads_the_provisioned_prometheus() -> None:
    uid = DATASOURCE["uid"]
    assert DATASOURCE["type"] == "prometheus" and DATASOURCE["url"] == "http://prometheus:9090"
    chosen = variables()["datasource"]
    assert chosen["type"] == "datasource" and chosen["query"] == "prometheus"
    assert chosen["current"]["value"] == uid, "the dashboard opens on the provisioned one"
    by_variable = {"type": "prometheus", "uid": "${datasource}"}
    ids = []
    for panel in panels():
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] in (by_variable, {"type": "prometheus", "uid": uid})
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == by_variable, variable["name"]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert DASHBOARD["schemaVersion"] >= 39 and DASHBOARD["uid"]


def test_every_variable_a_query_names_is_defined() -> None:
    grafana = {"__rate_interval", "__interval", "__range"}
    for where, expr in queries():
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in variables() or name in grafana, f"{where}: ${name}"


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it() -> None:
    assert DASHBOARD_PROVIDER["type"] == "file"
    assert DASHBOARD_PROVIDER["allowUiUpdates"] is False
    folder = host_path("grafana", DASHBOARD_PROVIDER["options"]["path"])
    assert folder == GRAFANA and (folder / "discovery.json").is_file()
    for provisioned in ("datasources", "dashboards"):
        assert host_path("grafana", f"/etc/grafana/provisioning/{provisioned}") == (
            GRAFANA / "provisioning" / provisioned
        )
    home = MONITORING["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home) == GRAFANA / "discovery.json"
    # $__rate_interval spans four scrapes when Grafana knows how often Prometheus scrapes.
    assert DATASOURCE["jsonData"]["timeInterval"] == PROMETHEUS_CONFIG["global"]["scrape_interval"]


# --- Prometheus's targets -------------------------------------------------------------------


def scrape_targets() -> dict[str, tuple[str, int, dict[str, str]]]:
    """By compose service: (job, port, the labels its target is given)."""
    found = {}
    for job in PROMETHEUS_CONFIG["scrape_configs"]:
        assert job.get("scheme", "http") == "http", "the services serve plain HTTP"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                assert host not in found, f"{host} scraped twice"
                found[host] = (job["job_name"], int(port), dict(group.get("labels", {})))
    return found


def test_prometheus_scrapes_every_service_of_either_deployment_by_its_kind() -> None:
    targets = scrape_targets()
    assert set(targets) == SCRAPED
    for service, (_, _, labels) in targets.items():
        assert labels == {"service": kind(service)}, service
    # One job a deployment: the dashboard's job variable picks the one running.
    jobs: dict[str, set[str]] = {}
    for service, (job, _, _) in targets.items():
        jobs.setdefault(job, set()).add(service)
    assert sorted(jobs.values(), key=len) == [
        {s for s in SERVICES if s in SCRAPED},
        {s for s in CLUSTER if s in SCRAPED},
    ]


def test_prometheus_names_each_instance_by_its_compose_service() -> None:
    for job in PROMETHEUS_CONFIG["scrape_configs"]:
        (rule,) = job["relabel_configs"]
        assert rule["source_labels"] == ["__address__"] and rule["target_label"] == "instance"
        for group in job["static_configs"]:
            for target in group["targets"]:
                # Prometheus anchors a relabelling regex at both ends.
                match = re.fullmatch(rule["regex"], target)
                assert (
                    match and match.expand(rule.get("replacement", r"\1")) == target.split(":")[0]
                )


def test_each_service_serves_its_metrics_where_prometheus_scrapes(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    for service, (_, port, _) in scrape_targets().items():
        # Stated in compose, so that the wiring is read where it is.
        assert env(service)[METRICS_PORT[kind(service)]] == str(port), service
        loaded = settings(service, tmp_path)
        assert loaded.metrics_port == port and loaded.host == "0.0.0.0", service
        assert SETTINGS[kind(service)]().metrics_port == port, "compose states the default"


# --- what the profile mounts and publishes --------------------------------------------------


def binds(service: str) -> dict[str, str]:
    """The service's volumes, by the path in the container: a repository path (`./…`) or a
    named volume."""
    found = {}
    for volume in MONITORING[service].get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = source + (f":{mode[0]}" if mode else "")
    return found


def host_path(service: str, inside: str) -> Path:
    """The repository file or folder that `inside`, a path in the service's container, is."""
    for target, source in binds(service).items():
        if inside == target or inside.startswith(target + "/"):
            assert source.startswith("./"), f"{inside} is in volume {source}"
            return ROOT / source.split(":")[0] / os.path.relpath(inside, target)
    raise AssertionError(f"{service} mounts nothing at {inside}")


def test_the_monitoring_profile_is_prometheus_and_grafana_on_pinned_images() -> None:
    assert set(MONITORING) == {"prometheus", "grafana"}
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", MONITORING["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", MONITORING["grafana"]["image"])
    command = MONITORING["prometheus"]["command"]
    (config,) = [arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file=")]
    assert host_path("prometheus", config) == ROOT / "deploy/prometheus/prometheus.yml"
    (data,) = [arg.split("=", 1)[1] for arg in command if arg.startswith("--storage.tsdb.path=")]
    assert binds("prometheus")[data] in COMPOSE["volumes"], "its data outlives the container"


def test_the_monitoring_profile_mounts_repository_files_read_only() -> None:
    for service in MONITORING:
        for source in binds(service).values():
            if not source.startswith("./"):
                assert source in COMPOSE["volumes"], f"{service}: {source}"
                continue
            path, mode = source.rsplit(":", 1)
            assert mode == "ro", f"{service} mounts {path} writable"
            local = ROOT / path
            assert local.exists(), f"{service} mounts {path}, which is not in the repository"
            # The images run as their own users (nobody, grafana): the files are read as others.
            files = [local] if local.is_file() else [local, *local.rglob("*")]
            for file in files:
                mode_bits = file.stat().st_mode
                assert mode_bits & stat.S_IROTH, f"{file} is not readable by others"
                if file.is_dir():
                    assert mode_bits & stat.S_IXOTH, f"{file} cannot be entered by others"


def ports(service: str) -> list[tuple[str | None, int, int]]:
    """(host address, published port, container port) of each port compose publishes."""
    found = []
    for entry in ALL_SERVICES[service].get("ports", []):
        parts = str(entry).split(":")
        address = parts[0] if len(parts) == 3 else None
        found.append((address, int(parts[-2]), int(parts[-1])))
    return found


def test_the_monitoring_profile_publishes_on_127_0_0_1_only() -> None:
    assert ports("prometheus") == [("127.0.0.1", 9090, 9090)]
    assert ports("grafana") == [("127.0.0.1", 3000, 3000)]


def test_no_service_metrics_port_is_published() -> None:
    metrics_ports = {int(env(service)[METRICS_PORT[kind(service)]]) for service in SCRAPED}
    assert metrics_ports == {9101, 9102, 9103}
    for service in ALL_SERVICES:
        for _, published, inner in ports(service):
            assert published not in metrics_ports and inner not in metrics_ports, service
    # Nor does the cluster's entry point pass one through.
    assert sorted(re.findall(r"bind :(\d+)", entry_config())) == ["50051", "8080"]


def grafana_entrypoint() -> list[str]:
    """The entrypoint's command line as the container runs it (compose's `$$` is `$`)."""
    return [arg.replace("$$", "$") for arg in MONITORING["grafana"]["entrypoint"]]


def test_grafana_asks_for_a_login_and_has_no_default_password() -> None:
    environment = MONITORING["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    # A required variable (`${X:?…}`, `${X?…}`) would stop every `docker compose up`: compose
    # interpolates the whole file, the profiles it does not start included.
    assert not [value for value in strings(COMPOSE) if re.search(r"\$\{\w+:?\?", value)]


def strings(node: Any) -> Iterator[str]:
    """Every string in a YAML document, keys included (what compose interpolates)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


@pytest.mark.parametrize("password", ["", "s3cret"])
def test_grafana_refuses_to_start_without_its_admin_password(password: str) -> None:
    run = subprocess.run(
        grafana_entrypoint(),
        env={"PATH": os.environ["PATH"], "GF_SECURITY_ADMIN_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if password:
        # Past the check, it hands over to the image's entrypoint (absent here).
        assert run.returncode == 127 and "/run.sh" in run.stderr
    else:
        assert run.returncode == 1 and "GRAFANA_ADMIN_PASSWORD" in run.stderr
