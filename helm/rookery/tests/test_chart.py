"""Offline tests of the rookery Helm chart, the alert rules and the dashboard.

Run by tests/run-all.sh (which makes the virtualenv), or by hand:

    target/chart-venv/bin/python -m pytest helm/rookery/tests -q

The chart is rendered by helm-python-sdk (Helm's Go SDK as a shared library,
no helm binary, no cluster), every manifest is checked against the
Kubernetes 1.30 OpenAPI schemas in strict mode by kubernetes-validate, and
the properties a deployment depends on are asserted.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parent.parent
REPO = CHART.parent.parent
CI = CHART / "ci"
KUBE_VERSION = "1.30"
RELEASE = "rookery"
NAMESPACE = "chat"

# Every metric the server exposes on /metrics. They are registered in
# crates/rookery-core/src/metrics.rs (prefix "rookery", counters get
# "_total"); keep this list in step with that file. The alert rules, the
# dashboard and docs/operations/kubernetes.md may only use these names.
METRICS = {
    "rookery_c2s_connections": "gauge",
    "rookery_c2s_connections_accepted_total": "counter",
    "rookery_sessions": "gauge",
    "rookery_stanzas_in_total": "counter",
    "rookery_stanzas_out_total": "counter",
    "rookery_auth_attempts_total": "counter",
    "rookery_stream_errors_total": "counter",
    "rookery_slow_consumer_drops_total": "counter",
    "rookery_rpc_latency_seconds": "histogram",
    "rookery_shards_owned": "gauge",
    "rookery_shard_handovers_total": "counter",
    "rookery_redis_errors_total": "counter",
    "rookery_rpc_retries_total": "counter",
    "rookery_s2s_streams": "gauge",
    "rookery_s2s_stanzas_total": "counter",
    "rookery_s2s_bounced_total": "counter",
    "rookery_s2s_failures_total": "counter",
    "rookery_cluster_members": "gauge",
    "rookery_bosh_requests_held": "gauge",
}

# Config sections the chart renders that another change is adding to the
# server at the same time; deploy/rookery.example.toml does not name them
# yet. Remove an entry once the example file has it.
PENDING_KEYS: set[str] = set()

# Kinds without an upstream Kubernetes schema (custom resources): checked
# for their apiVersion and a few fields here instead.
CUSTOM_KINDS = {
    "Certificate": "cert-manager.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}

CI_FILES = sorted(p.name for p in CI.glob("*.yaml"))
CASES = ["defaults", *CI_FILES]


def load_values(case: str) -> dict | None:
    if case == "defaults":
        return None
    return yaml.safe_load((CI / case).read_text())


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_values(values: dict | None) -> list[dict]:
    """Render with these values; every non-empty YAML document, NOTES.txt left out."""
    out = _chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template", path)
                docs.append(doc)
    return docs


@functools.cache
def _rendered(case: str) -> str:
    return json.dumps(render_values(load_values(case)))


def rendered(case: str) -> list[dict]:
    return json.loads(_rendered(case))


def merged(case: str) -> dict:
    return _chart().merge_values(load_values(case))


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name=None):
    found = [d for d in kinds(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def rookery_workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and not d["metadata"]["name"].endswith("-redis")]


def container(workload, name="rookery"):
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def config_files(docs) -> dict[str, dict]:
    cm = one(docs, "ConfigMap", RELEASE)
    return {k: tomllib.loads(v) for k, v in cm["data"].items()}


def role_config(docs, workload) -> dict:
    args = container(workload)["args"]
    path = args[args.index("--config") + 1]
    assert path.startswith("/etc/rookery/config/")
    return config_files(docs)[path.rsplit("/", 1)[1]]


def cluster_mode(case) -> bool:
    return merged(case)["mode"] == "cluster"


def federation(case) -> bool:
    return merged(case)["s2s"]["enabled"]


def cluster_roles(case) -> list[str]:
    return ["cm", "session", "s2s"] if federation(case) else ["cm", "session"]


def strip_internal(doc):
    return {k: v for k, v in doc.items() if k != "__template"}


# --- rendering, schema, lint -------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lint_clean(case):
    report = helm.lint(str(CHART), load_values(case), strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("case", CASES)
def test_manifests_validate_against_kubernetes(case):
    docs = rendered(case)
    assert docs
    for doc in docs:
        doc = strip_internal(doc)
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] == CUSTOM_KINDS[doc["kind"]]
            assert doc["metadata"]["name"] and doc["spec"]
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}") from None


def test_validator_rejects_unknown_fields():
    """The strict schemas catch a misspelt field (so the test above can fail)."""
    docs = rendered("defaults")
    bad = strip_internal(one(docs, "Deployment", "rookery-cm"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_names_are_unique_and_labelled(case):
    seen = set()
    for doc in rendered(case):
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "rookery"


BAD_VALUES = {
    "replicas not a number": {"session": {"replicas": "abc"}},
    "unknown mode": {"mode": "triple"},
    "unknown top-level key": {"replicaCount": 3},
    "unknown service type": {"service": {"type": "Ingress"}},
    "drain grace not a number": {"config": {"drain": {"grace_secs": "soon"}}},
    "sample ratio above 1": {"config": {"telemetry": {"sample_ratio": 2}}},
    "bad store backend": {"config": {"store": {"backend": "postgres"}}},
    "cluster on sqlite": {"config": {"store": {"backend": "sqlite"}}},
    "cluster without scylla nodes": {"config": {"store": {"scylla": {"nodes": []}}}},
    "cluster without redis": {"redis": {"enabled": False}},
    "redis url without scheme": {"redis": {"enabled": False}, "externalRedis": {"urls": ["redis-host:6379"]}},
    "tls cert without key": {"tls": {"cert": "PEM"}},
    "two tls sources": {"tls": {"existingSecret": "x", "certManager": {"enabled": True}}},
    "autoscaling without a target": {
        "cm": {"autoscaling": {"targetCPUUtilizationPercentage": 0, "targetConnectionsPerPod": 0}}
    },
    "port out of range": {"ports": {"grpc": 70000}},
    "table inside an array in config": {"config": {"c2s": {"listen_extra": [{"a": 1}]}}},
    "connection target above the limit": {
        "config": {"c2s": {"max_connections": 20000}},
        "cm": {"autoscaling": {"targetConnectionsPerPod": 20000}},
    },
    "unknown upload key": {"upload": {"volume": {}}},
    "upload volume from a claim and a class": {
        "upload": {"sharedVolume": {"existingClaim": "files", "storageClass": "nfs"}}
    },
    "upload volume without ReadWriteMany": {
        "upload": {"sharedVolume": {"storageClass": "nfs", "accessModes": ["ReadWriteOnce"]}}
    },
    "upload secret without a key": {"upload": {"signingSecret": {"existingSecretKey": ""}}},
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_values_fail_rendering(name):
    with pytest.raises(helm.HelmError):
        render_values(BAD_VALUES[name])


BAD_FILES = sorted(p.name for p in (CHART / "tests" / "bad-values").glob("*.yaml"))


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_values_files_fail_rendering(name):
    values = yaml.safe_load((CHART / "tests" / "bad-values" / name).read_text())
    with pytest.raises(helm.HelmError):
        render_values(values)


def test_bad_values_file_fails_schema_validation():
    with pytest.raises(helm.HelmValuesError, match="replicas"):
        _chart().validate_schema({"session": {"replicas": "abc"}})


# --- workloads -----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_workloads_per_mode(case):
    docs = rendered(case)
    names = {(d["kind"], d["metadata"]["name"]) for d in rookery_workloads(docs)}
    if cluster_mode(case):
        want = {("Deployment", "rookery-cm"), ("StatefulSet", "rookery-session")}
        if federation(case):
            want.add(("Deployment", "rookery-s2s"))
            s2s = one(docs, "Deployment", "rookery-s2s")
            assert s2s["spec"]["replicas"] == merged(case)["s2s"]["replicas"]
            assert container(s2s)["args"][-2:] == ["--role", "s2s"]
        assert names == want
        sts = one(docs, "StatefulSet", "rookery-session")
        assert sts["spec"]["serviceName"] == "rookery-session"
        assert sts["spec"]["replicas"] == merged(case)["session"]["replicas"]
        assert container(sts)["args"][-2:] == ["--role", "session"]
        assert container(one(docs, "Deployment", "rookery-cm"))["args"][-2:] == ["--role", "cm"]
    else:
        assert names == {("StatefulSet", "rookery")}
        sts = one(docs, "StatefulSet", "rookery")
        assert sts["spec"]["replicas"] == 1
        assert "--role" not in container(sts)["args"]
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["resources"]["requests"]["storage"] == merged(case)["single"]["persistence"]["size"]
        assert not kinds(docs, "HorizontalPodAutoscaler")
        assert not kinds(docs, "PodDisruptionBudget")
        assert not kinds(docs, "Job")


@pytest.mark.parametrize("case", CASES)
def test_probes(case):
    for w in rookery_workloads(rendered(case)):
        c = container(w)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == 5280
        for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (w["metadata"]["name"], probe)
            assert get["port"] in ("http", 5280)
        cfg = role_config(rendered(case), w)
        assert cfg["http"]["listen"] == ["0.0.0.0:5280"]


@pytest.mark.parametrize("case", CASES)
def test_container_ports_match_config(case):
    docs = rendered(case)
    for w in rookery_workloads(docs):
        c = container(w)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        cfg = role_config(docs, w)
        role = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        if role in ("session", "s2s"):
            assert "c2s" not in ports and "web" not in ports
            assert cfg["c2s"]["listen"] == [] and cfg["c2s"]["direct_tls_listen"] == []
            assert cfg["web"]["tls_listen"] == []
        else:
            assert ports["c2s"] == 5222 and ports["c2s-tls"] == 5223
            assert cfg["c2s"]["listen"] == ["0.0.0.0:5222"]
            assert cfg["c2s"]["direct_tls_listen"] == ["0.0.0.0:5223"]
            # The web transports (decision 0016), advertised at the Service's port.
            assert ports["web"] == 5443
            assert cfg["web"]["tls_listen"] == ["0.0.0.0:5443"]
            assert cfg["web"]["public_url"].startswith("https://")
        # Federation: 5269 on the s2s nodes or the single node, nowhere else.
        assert cfg["s2s"]["enabled"] == federation(case)
        if federation(case) and role in ("s2s", "single"):
            assert ports["s2s"] == 5269
            assert cfg["s2s"]["listen"] == ["0.0.0.0:5269"]
        else:
            assert "s2s" not in ports and "listen" not in cfg["s2s"]
        if role in ("cm", "session", "s2s"):
            assert ports["grpc"] == 7400
            assert cfg["cluster"]["grpc_listen"] == "0.0.0.0:7400"
        else:
            assert "grpc" not in ports and "cluster" not in cfg


@pytest.mark.parametrize("case", CASES)
def test_security_context(case):
    for w in workloads(rendered(case)):
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        if w["metadata"]["name"].endswith("-redis"):
            assert pod["securityContext"]["runAsUser"] == 999
        else:
            assert pod["securityContext"]["runAsUser"] == 65532
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert sc["runAsNonRoot"] is True
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("case", CASES)
def test_writable_paths_are_volumes(case):
    """With a read-only root the data directory must be a volume."""
    docs = rendered(case)
    for w in rookery_workloads(docs):
        mounts = {m["mountPath"]: m["name"] for m in container(w)["volumeMounts"]}
        assert role_config(docs, w)["server"]["data_dir"] == "/var/lib/rookery"
        assert mounts["/var/lib/rookery"] == "data"
        assert mounts["/etc/rookery/config"] == "config"
        volumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        if w["kind"] == "Deployment" or cluster_mode(case):
            assert "emptyDir" in volumes["data"]
        else:
            assert "data" not in volumes  # the PVC of volumeClaimTemplates
        assert volumes["config"]["configMap"]["name"] == RELEASE


@pytest.mark.parametrize("case", CASES)
def test_termination_grace_exceeds_drain(case):
    docs = rendered(case)
    for w in rookery_workloads(docs):
        grace = role_config(docs, w)["drain"]["grace_secs"]
        assert grace == merged(case)["config"]["drain"]["grace_secs"]
        tgps = w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert tgps >= grace + 10, (w["metadata"]["name"], tgps, grace)


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


@pytest.mark.parametrize("case", CASES)
def test_env_gives_node_name_and_advertise_address(case):
    for w in rookery_workloads(rendered(case)):
        c = container(w)
        env = env_of(c)
        order = [e["name"] for e in c["env"]]
        # $(VAR) may only refer to a variable defined earlier in the list.
        for i, e in enumerate(c["env"]):
            for ref in re.findall(r"\$\(([A-Z_]+)\)", e.get("value", "")):
                assert ref in order[:i], (e["name"], ref)
        if not cluster_mode(case):
            assert not [n for n in env if n.startswith("ROOKERY__CLUSTER__")]
            continue
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["ROOKERY__CLUSTER__GRPC_ADVERTISE"]["value"] == "$(POD_IP):7400"
        assert env["ROOKERY__CLUSTER__NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("case", CASES)
def test_topology_spread(case):
    for w in rookery_workloads(rendered(case)):
        pod = w["spec"]["template"]["spec"]
        if not cluster_mode(case):
            continue
        constraints = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} >= {"kubernetes.io/hostname"}
        labels = w["spec"]["template"]["metadata"]["labels"]
        for c in constraints:
            assert c["labelSelector"]["matchLabels"].items() <= labels.items()


# --- configuration ---------------------------------------------------------------


def example_keys() -> set[str]:
    """Every table and key of deploy/rookery.example.toml (commented-out options included)."""
    text = (REPO / "deploy" / "rookery.example.toml").read_text()
    keys, table = set(), ""
    for line in text.splitlines():
        m = re.match(r"^\[([a-z0-9_.]+)\]", line)
        if m:
            table = m.group(1)
            keys.add(table)
            continue
        m = re.match(r"^#?\s*([a-z0-9_]+)\s*=", line)
        if m and table:
            keys.add(f"{table}.{m.group(1)}")
    return keys


def flatten(table: dict, prefix="") -> dict[str, object]:
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out[key] = None
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@pytest.mark.parametrize("case", CASES)
def test_config_toml(case):
    docs = rendered(case)
    files = config_files(docs)
    known = example_keys()
    mode = merged(case)["mode"]
    assert set(files) == ({f"{r}.toml" for r in cluster_roles(case)} if mode == "cluster" else {"rookery.toml"})
    values_cfg = merged(case)["config"]
    for name, cfg in files.items():
        for section in ("server", "c2s", "http", "log", "drain", "telemetry", "store"):
            assert section in cfg, (name, section)
        assert cfg["server"]["domain"] == values_cfg["server"]["domain"]
        assert cfg["drain"].keys() >= {"grace_secs", "see_other_host"}
        assert cfg["telemetry"].keys() >= {"otlp_endpoint", "service_name", "sample_ratio"}
        assert 0 <= cfg["telemetry"]["sample_ratio"] <= 1
        for key, value in flatten(cfg).items():
            pending = any(key == p or key.startswith(p + ".") for p in PENDING_KEYS)
            assert pending or key in known, f"{name}: {key} is not an option of the server"
            assert not isinstance(value, float) or key == "telemetry.sample_ratio", key
        if mode == "cluster":
            assert cfg["store"]["backend"] == "scylla"
            assert cfg["store"]["scylla"]["nodes"] == values_cfg["store"]["scylla"]["nodes"]
            assert isinstance(cfg["cluster"]["shards"], int)
            assert cfg["cluster"]["kubernetes"]["session_service"] == "rookery-session"
            assert cfg["cluster"]["kubernetes"]["cm_service"] == "rookery-cm"
            assert cfg["cluster"]["kubernetes"]["namespace"] == NAMESPACE
            assert cfg["cluster"]["kubernetes"]["enabled"] == values_cfg["cluster"]["kubernetes"]["enabled"]
            for svc in ("rookery-session", "rookery-cm"):
                s = one(docs, "Service", svc)
                assert s["spec"]["clusterIP"] == "None"
        else:
            assert cfg["store"] == {"backend": "sqlite"}


def test_toml_rendering_of_odd_values():
    """Strings with quotes, backslashes and non-ASCII, floats, empty lists, nesting."""
    domain = 'chat.example.com'
    odd = 'a "quoted" \\ back\\slash, ünïcode <&> \ttab'
    docs = render_values(
        {
            "config": {
                "server": {"domain": domain},
                "log": {"level": odd},
                "telemetry": {"sample_ratio": 0.25},
                "drain": {"grace_secs": 0},
                "modules": {"version_os": False, "vcard_max_bytes": 1048576},
                "session": {"resource_conflict": "replace"},
            }
        }
    )
    for cfg in config_files(docs).values():
        assert cfg["log"]["level"] == odd
        assert cfg["telemetry"]["sample_ratio"] == 0.25
        assert cfg["drain"]["grace_secs"] == 0
        assert cfg["modules"] == {"version_os": False, "vcard_max_bytes": 1048576}
        assert cfg["session"]["resource_conflict"] == "replace"
    for w in rookery_workloads(docs):
        assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 15


@pytest.mark.parametrize("case", CASES)
def test_redis(case):
    docs = rendered(case)
    values = merged(case)
    bundled = values["mode"] == "cluster" and values["redis"]["enabled"]
    sts = [d for d in kinds(docs, "StatefulSet") if d["metadata"]["name"] == "rookery-redis"]
    assert bool(sts) == bundled
    if values["mode"] != "cluster":
        return
    urls = {n: cfg["cluster"]["redis"]["urls"] for n, cfg in config_files(docs).items()}
    if bundled:
        svc = one(docs, "Service", "rookery-redis")
        assert svc["spec"]["ports"][0]["port"] == 6379
        assert svc["spec"]["selector"].items() <= sts[0]["spec"]["template"]["metadata"]["labels"].items()
        assert set(map(tuple, urls.values())) == {("redis://rookery-redis:6379",)}
        assert "--save" in container(sts[0], "redis")["args"]
    else:
        assert not [d for d in docs if d["metadata"]["name"] == "rookery-redis"]
        secret = values["externalRedis"]["existingSecret"]
        for w in rookery_workloads(docs):
            env = env_of(container(w))
            if secret:
                assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == secret
                assert env["ROOKERY__CLUSTER__REDIS__URLS"]["value"] == '["$(REDIS_URL)"]'
            else:
                assert "ROOKERY__CLUSTER__REDIS__URLS" not in env
        if not secret:
            assert set(map(tuple, urls.values())) == {tuple(values["externalRedis"]["urls"])}


@pytest.mark.parametrize("case", CASES)
def test_rbac_iff_kubernetes_discovery(case):
    docs = rendered(case)
    values = merged(case)
    discovery = values["mode"] == "cluster" and values["config"]["cluster"]["kubernetes"]["enabled"]
    want_rbac = discovery and values["rbac"]["create"]
    roles, bindings = kinds(docs, "Role"), kinds(docs, "RoleBinding")
    assert bool(roles) == bool(bindings) == want_rbac
    if want_rbac:
        (role,) = roles
        (rule,) = role["rules"]
        assert rule["apiGroups"] == ["discovery.k8s.io"]
        assert rule["resources"] == ["endpointslices"]
        assert sorted(rule["verbs"]) == ["get", "list", "watch"]
        (binding,) = bindings
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        sa = one(docs, "ServiceAccount")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    for w in rookery_workloads(docs):
        pod = w["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is bool(discovery)
        assert pod["serviceAccountName"] == RELEASE


# --- scaling, disruption, services ---------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_hpa(case):
    docs = rendered(case)
    values = merged(case)
    a = values["cm"]["autoscaling"]
    hpas = kinds(docs, "HorizontalPodAutoscaler")
    if values["mode"] != "cluster" or not a["enabled"]:
        assert not hpas
        if values["mode"] == "cluster":
            assert one(docs, "Deployment", "rookery-cm")["spec"]["replicas"] == values["cm"]["replicas"]
        return
    (hpa,) = hpas
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rookery-cm"}
    assert "replicas" not in one(docs, "Deployment", "rookery-cm")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (a["minReplicas"], a["maxReplicas"])
    by_type = {m["type"]: m for m in spec["metrics"]}
    if a["targetCPUUtilizationPercentage"]:
        cpu = by_type["Resource"]["resource"]
        assert cpu["name"] == "cpu"
        assert cpu["target"] == {"type": "Utilization", "averageUtilization": a["targetCPUUtilizationPercentage"]}
    else:
        assert "Resource" not in by_type
    if a["targetConnectionsPerPod"]:
        pods = by_type["Pods"]["pods"]
        assert pods["metric"]["name"] == "rookery_c2s_connections"
        assert pods["target"] == {"type": "AverageValue", "averageValue": str(a["targetConnectionsPerPod"])}
    else:
        assert "Pods" not in by_type
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def pod_labels(docs):
    return [(w["metadata"]["name"], w["spec"]["template"]["metadata"]["labels"]) for w in workloads(docs)]


@pytest.mark.parametrize("case", CASES)
def test_pdbs_select_their_pods(case):
    docs = rendered(case)
    pdbs = kinds(docs, "PodDisruptionBudget")
    if not cluster_mode(case):
        assert not pdbs
        return
    assert {p["metadata"]["name"] for p in pdbs} == {f"rookery-{r}" for r in cluster_roles(case)}
    for pdb in pdbs:
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [n for n, labels in pod_labels(docs) if selector.items() <= labels.items()]
        assert matched == [pdb["metadata"]["name"]]
        assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("case", CASES)
def test_services_select_pods(case):
    docs = rendered(case)
    values = merged(case)
    for svc in kinds(docs, "Service"):
        selector = svc["spec"]["selector"]
        matched = [n for n, labels in pod_labels(docs) if selector.items() <= labels.items()]
        assert len(matched) == 1, (svc["metadata"]["name"], matched)
        if svc["spec"].get("clusterIP") == "None":
            assert svc["spec"]["publishNotReadyAddresses"] is False
    c2s = one(docs, "Service", RELEASE)
    assert c2s["spec"]["type"] == values["service"]["type"]
    ports = {p["name"]: p for p in c2s["spec"]["ports"]}
    assert (ports["c2s"]["port"], ports["c2s-tls"]["port"]) == (5222, 5223)
    assert (ports["web"]["port"], ports["web"]["targetPort"]) == (443, "web")
    assert ports["c2s"]["targetPort"] == "c2s"
    target = "rookery-cm" if cluster_mode(case) else "rookery"
    labels = dict(pod_labels(docs))[target]
    assert c2s["spec"]["selector"].items() <= labels.items()
    if values["service"]["nodePorts"]["c2s"] and values["service"]["type"] != "ClusterIP":
        assert ports["c2s"]["nodePort"] == values["service"]["nodePorts"]["c2s"]
    # Federation: 5269 on the federation Service (to the s2s nodes) in
    # cluster mode, on the client Service in single mode.
    federation_svcs = [s for s in kinds(docs, "Service") if s["metadata"]["name"] == "rookery-federation"]
    if cluster_mode(case) and federation(case):
        (fed,) = federation_svcs
        assert fed["spec"]["type"] == values["service"]["type"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in fed["spec"]["ports"]] == [("s2s", 5269, "s2s")]
        assert fed["spec"]["selector"].items() <= dict(pod_labels(docs))["rookery-s2s"].items()
        assert "s2s" not in ports
    else:
        assert not federation_svcs
        assert ("s2s" in ports) == federation(case)
        if federation(case):
            assert (ports["s2s"]["port"], ports["s2s"]["targetPort"]) == (5269, "s2s")


@pytest.mark.parametrize("case", CASES)
def test_dialback_secret(case):
    """Every s2s node reads the same dialback secret (XEP-0185 keys must
    verify on whichever node a remote server reaches)."""
    docs = rendered(case)
    values = merged(case)
    secrets = [s for s in kinds(docs, "Secret") if s["metadata"]["name"] == "rookery-dialback"]
    if not (cluster_mode(case) and federation(case)):
        assert not secrets
        return
    want = values["s2s"]["dialbackSecret"]
    name = want["existingSecret"] or "rookery-dialback"
    if want["existingSecret"]:
        assert not secrets
    else:
        (secret,) = secrets
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        value = base64.b64decode(secret["data"][want["existingSecretKey"]])
        assert len(value) >= 32
    s2s = one(docs, "Deployment", "rookery-s2s")
    volumes = {v["name"]: v for v in s2s["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dialback"]["secret"]["secretName"] == name
    mounts = {m["name"]: m for m in container(s2s)["volumeMounts"]}
    assert mounts["dialback"]["readOnly"] is True
    path = role_config(docs, s2s)["s2s"]["dialback_secret_file"]
    assert path == f'{mounts["dialback"]["mountPath"]}/{want["existingSecretKey"]}'


# --- HTTP upload (XEP-0363) ------------------------------------------------------------

UPLOAD_MOUNT = "/var/lib/rookery-upload"


def upload_offered(values) -> bool:
    """What the chart promises: upload unless turned off, and in cluster mode
    only with a volume every cm mounts (decision 0023)."""
    if not (values["upload"]["enabled"] and (values["config"].get("upload") or {}).get("enabled", True)):
        return False
    vol = values["upload"]["sharedVolume"]
    return values["mode"] == "single" or bool(vol["existingClaim"] or vol["storageClass"])


def web_public_url(values) -> str:
    url = (values["config"].get("web") or {}).get("public_url")
    if url:
        return url
    port = values["service"]["ports"]["web"]
    domain = values["config"]["server"]["domain"]
    return f"https://{domain}" if port == 443 else f"https://{domain}:{port}"


def check_upload(docs, values):
    offered = upload_offered(values)
    cluster = values["mode"] == "cluster"
    shared = cluster and offered
    user = values["config"].get("upload") or {}
    signing = values["upload"]["signingSecret"]
    volume = values["upload"]["sharedVolume"]
    secret_name = signing["existingSecret"] or "rookery-upload"
    claim_name = volume["existingClaim"] or "rookery-upload"

    # Every role's [upload]: the same enabled flag and public URL everywhere
    # in a cluster (session nodes grant the slots, cms serve them, s2s nodes
    # accept the upload domain); files in the shared volume on the cms.
    roles = set()
    for w in rookery_workloads(docs):
        role = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        roles.add(role)
        cfg = role_config(docs, w).get("upload", {})
        c = container(w)
        env = env_of(c)
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        assert cfg.get("enabled", True) is offered, (role, cfg)
        if shared:
            assert cfg["public_url"] == (user.get("public_url") or web_public_url(values)), role
            assert cfg["public_url"].startswith("https://")
        elif cluster:
            assert cfg.get("public_url", "") == user.get("public_url", ""), role
        else:
            # Single mode: the server's own defaults (its [web] public URL,
            # <data_dir>/upload on the PVC).
            assert cfg.get("public_url", "") == user.get("public_url", "")
            assert cfg.get("directory", "") == user.get("directory", "")
        # The signing key, from the Secret, on cm and session pods only.
        if shared and role in ("cm", "session"):
            names = [e["name"] for e in c["env"]]
            assert names.index("UPLOAD_SECRET") < names.index("ROOKERY__UPLOAD__SECRET")
            assert env["UPLOAD_SECRET"]["valueFrom"]["secretKeyRef"] == {
                "name": secret_name,
                "key": signing["existingSecretKey"],
            }
            assert env["ROOKERY__UPLOAD__SECRET"]["value"] == '"$(UPLOAD_SECRET)"'
            assert "secret" not in cfg  # never in the ConfigMap
        else:
            assert "UPLOAD_SECRET" not in env and "ROOKERY__UPLOAD__SECRET" not in env, role
        # The shared volume on every cm, and the directory inside it.
        if shared and role == "cm":
            assert volumes["upload"]["persistentVolumeClaim"]["claimName"] == claim_name
            assert mounts["upload"]["mountPath"] == UPLOAD_MOUNT
            assert not mounts["upload"].get("readOnly", False)
            assert cfg["directory"].startswith(UPLOAD_MOUNT + "/")
        else:
            assert "upload" not in volumes and "upload" not in mounts, role
            if cluster:
                assert "directory" not in cfg, role
    if cluster:
        assert roles == set(cluster_roles_of(values))

    secrets = [s for s in kinds(docs, "Secret") if s["metadata"]["name"] == "rookery-upload"]
    if shared and not signing["existingSecret"]:
        (secret,) = secrets
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        value = base64.b64decode(secret["data"][signing["existingSecretKey"]])
        assert len(value) == 48 and value.isalnum()
    else:
        assert not secrets

    claims = kinds(docs, "PersistentVolumeClaim")
    if shared and not volume["existingClaim"]:
        (pvc,) = claims
        assert pvc["metadata"]["name"] == "rookery-upload"
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]
        assert pvc["spec"]["storageClassName"] == volume["storageClass"]
        assert pvc["spec"]["resources"]["requests"]["storage"] == volume["size"]
    else:
        assert not claims


def cluster_roles_of(values) -> list[str]:
    return ["cm", "session", "s2s"] if values["s2s"]["enabled"] else ["cm", "session"]


@pytest.mark.parametrize("case", CASES)
def test_upload(case):
    check_upload(rendered(case), merged(case))


# Values beside the ci/ cases: each way of turning upload on or off.
UPLOAD_VARIANTS = {
    "cluster, class": {"upload": {"sharedVolume": {"storageClass": "nfs"}}},
    "cluster, claim and key made elsewhere, no federation": {
        "s2s": {"enabled": False},
        "upload": {
            "signingSecret": {"existingSecret": "keys", "existingSecretKey": "upload"},
            "sharedVolume": {"existingClaim": "files"},
        },
    },
    "cluster, own URLs": {
        "service": {"ports": {"web": 8443}},
        "config": {"web": {"public_url": "https://web.example.org"}},
        "upload": {"sharedVolume": {"storageClass": "nfs"}},
    },
    "cluster, own upload URL": {
        "config": {"upload": {"public_url": "https://files.example.org", "max_file_size": 1048576}},
        "upload": {"sharedVolume": {"storageClass": "nfs", "accessModes": ["ReadWriteMany"]}},
    },
    "cluster, web port 8443": {
        "service": {"ports": {"web": 8443}},
        "upload": {"sharedVolume": {"existingClaim": "files"}},
    },
    "cluster, upload off": {"upload": {"enabled": False, "sharedVolume": {"storageClass": "nfs"}}},
    "cluster, upload off in config": {
        "config": {"upload": {"enabled": False}},
        "upload": {"sharedVolume": {"storageClass": "nfs"}},
    },
    "cluster, no shared volume but enabled in config": {"config": {"upload": {"enabled": True}}},
    "single": {"mode": "single", "config": {"store": {"backend": "sqlite"}}},
    "single, upload off": {
        "mode": "single",
        "config": {"store": {"backend": "sqlite"}},
        "upload": {"enabled": False, "sharedVolume": {"storageClass": "nfs"}},
    },
}


@pytest.mark.parametrize("name", sorted(UPLOAD_VARIANTS))
def test_upload_variants(name):
    values = UPLOAD_VARIANTS[name]
    docs = render_values(values)
    check_upload(docs, _chart().merge_values(values))
    for doc in docs:
        doc = strip_internal(doc)
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_upload_notes():
    """NOTES.txt says whether upload is offered, and why not in a cluster without a shared volume."""

    def notes(values):
        out = _chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        (text,) = [v for k, v in out.items() if k.endswith("NOTES.txt")]
        return " ".join(text.split())

    off = notes(None)
    assert "HTTP upload (XEP-0363) is off" in off and "upload.sharedVolume.storageClass" in off
    assert "ReadWriteMany" in off
    on = notes(UPLOAD_VARIANTS["cluster, class"])
    assert "HTTP upload (XEP-0363) on upload.example.org" in on
    assert "https://example.org/upload/" in on and "rookery-upload" in on
    assert "is off" not in on
    assert "off (upload.enabled" in notes(UPLOAD_VARIANTS["cluster, upload off"])
    single = notes(UPLOAD_VARIANTS["single"])
    assert "HTTP upload (XEP-0363) on upload.example.org" in single and "PVC" in single


# --- TLS, store migration, monitoring objects ---------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_tls(case):
    docs = rendered(case)
    tls = merged(case)["tls"]
    secret_name = tls["existingSecret"] or ("rookery-tls" if (tls["certManager"]["enabled"] or tls["cert"]) else "")
    assert bool(kinds(docs, "Certificate")) == tls["certManager"]["enabled"]
    tls_secrets = [s for s in kinds(docs, "Secret") if s["type"] == "kubernetes.io/tls"]
    assert bool(tls_secrets) == bool(tls["cert"])
    if tls["certManager"]["enabled"]:
        cert = one(docs, "Certificate")
        assert cert["spec"]["secretName"] == secret_name
        assert cert["spec"]["issuerRef"]["name"] == tls["certManager"]["issuerRef"]["name"]
        assert cert["spec"]["dnsNames"] == (tls["certManager"]["dnsNames"] or [merged(case)["config"]["server"]["domain"]])
    if tls["cert"]:
        assert [s["metadata"]["name"] for s in tls_secrets] == [secret_name]
    for w in rookery_workloads(docs):
        cfg = role_config(docs, w)
        volumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        if secret_name:
            assert volumes["tls"]["secret"]["secretName"] == secret_name
            assert cfg["tls"] == {"cert": "/etc/rookery/tls/tls.crt", "key": "/etc/rookery/tls/tls.key"}
            mounts = {m["name"]: m["mountPath"] for m in container(w)["volumeMounts"]}
            assert mounts["tls"] == "/etc/rookery/tls"
        else:
            assert "tls" not in volumes and "tls" not in cfg


@pytest.mark.parametrize("case", CASES)
def test_store_migrate_hook(case):
    docs = rendered(case)
    values = merged(case)
    want = values["mode"] == "cluster" and values["scylla"]["migrate"]["enabled"]
    jobs = kinds(docs, "Job")
    assert bool(jobs) == want
    if not want:
        return
    (job,) = jobs
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][-2:] == ["store", "migrate"]
    # Hooks run before the release's ConfigMap exists: the Job has its own.
    config = one(docs, "ConfigMap", "rookery-migrate")
    assert int(config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    cfg = tomllib.loads(config["data"]["session.toml"])
    assert cfg["store"]["backend"] == "scylla"
    assert cfg["store"]["scylla"] == config_files(docs)["session.toml"]["store"]["scylla"]
    # Every command checks the whole configuration: the Job needs the same
    # values from Secrets (Redis URL, ScyllaDB password) as the servers.
    from_secrets = {"REDIS_URL", "ROOKERY__CLUSTER__REDIS__URLS", "SCYLLA_PASSWORD", "ROOKERY__STORE__SCYLLA__PASSWORD"}
    session_env = env_of(container(one(docs, "StatefulSet", "rookery-session")))
    job_env = env_of(c)
    assert {k: v for k, v in session_env.items() if k in from_secrets} == job_env
    if values["scylla"]["passwordSecret"]:
        assert job_env["SCYLLA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == values["scylla"]["passwordSecret"]
    if values["externalRedis"]["existingSecret"] and not values["redis"]["enabled"]:
        assert job_env["ROOKERY__CLUSTER__REDIS__URLS"]["value"] == '["$(REDIS_URL)"]'


@pytest.mark.parametrize("case", CASES)
def test_monitoring_objects(case):
    docs = rendered(case)
    metrics = merged(case)["metrics"]
    monitors = kinds(docs, "ServiceMonitor")
    assert bool(monitors) == metrics["serviceMonitor"]["enabled"]
    for m in monitors:
        selector = m["spec"]["selector"]["matchLabels"]
        selected = {s["metadata"]["name"] for s in kinds(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()}
        assert selected == ({f"rookery-{r}" for r in cluster_roles(case)} if cluster_mode(case) else {"rookery-headless"})
        assert m["spec"]["endpoints"][0]["port"] == "http"
    rules = kinds(docs, "PrometheusRule")
    assert bool(rules) == metrics["prometheusRule"]["enabled"]
    for r in rules:
        assert r["spec"] == yaml.safe_load((REPO / "deploy/prometheus/rookery-alerts.yaml").read_text())
    dashboards = [d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"] == "rookery-dashboard"]
    assert bool(dashboards) == metrics["grafanaDashboard"]["enabled"]
    for d in dashboards:
        assert json.loads(d["data"]["rookery-dashboard.json"])["uid"] == "rookery-overview"


# --- alert rules, dashboard, docs -------------------------------------------------------

ALERTS = REPO / "deploy" / "prometheus" / "rookery-alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "rookery-dashboard.json"


def metric_names(text: str) -> set[str]:
    names = set()
    for name in re.findall(r"\brookery_[a-z0-9_]+", text):
        for suffix in ("_bucket", "_count", "_sum"):
            base = name.removesuffix(suffix)
            if base != name and METRICS.get(base) == "histogram":
                name = base
        names.add(name)
    return names


def alert_exprs():
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_alert_rules_use_only_exposed_metrics():
    rules = alert_exprs()
    assert {r["alert"] for r in rules} >= {
        "RookeryDown",
        "RookeryHighAuthFailures",
        "RookeryRpcLatencyHigh",
        "RookeryRedisErrors",
        "RookeryShardsUnowned",
        "RookerySlowConsumerDrops",
        "RookeryStreamErrorsHigh",
    }
    used = set()
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        names = metric_names(r["expr"])
        assert names <= METRICS.keys(), (r["alert"], names - METRICS.keys())
        used |= names
    assert "sum(rookery_shards_owned" in "".join(r["expr"] for r in rules)
    assert used, "no metric used"


def test_dashboard_uses_only_exposed_metrics_and_shows_each():
    exprs = dashboard_exprs()
    assert exprs
    used = set()
    for e in exprs:
        names = metric_names(e)
        assert names <= METRICS.keys(), (e, names - METRICS.keys())
        used |= names
    assert used == METRICS.keys(), METRICS.keys() - used
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"])
    for word in ("p50", "p99", "Shards owned", "handovers", "Redis errors", "retries", "Auth", "Stream errors"):
        assert word.lower() in titles.lower(), word
    # PromQL on a per-pod counter must go through rate() or increase().
    for e in exprs:
        for counter in [m for m, t in METRICS.items() if t == "counter"]:
            for m in re.finditer(re.escape(counter) + r"\b", e):
                before = e[: m.start()]
                assert re.search(r"(rate|increase)\($", before.rstrip()), e


def test_chart_copies_of_rules_and_dashboard_are_identical():
    assert (CHART / "files/rookery-alerts.yaml").read_text() == ALERTS.read_text()
    assert (CHART / "files/rookery-dashboard.json").read_text() == DASHBOARD.read_text()


def test_operations_guide_explains_every_metric_and_alert():
    guide = (REPO / "docs/operations/kubernetes.md").read_text()
    for name in METRICS:
        assert f"`{name}" in guide, name
    for rule in alert_exprs():
        assert rule["alert"] in guide, rule["alert"]
    assert metric_names(guide) <= METRICS.keys(), metric_names(guide) - METRICS.keys()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_the_rules():
    subprocess.run(["promtool", "check", "rules", str(ALERTS)], check=True, capture_output=True)


# --- the chart's own documentation ---------------------------------------------------------


def value_paths(tree: dict, prefix="") -> list[str]:
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(value_paths(v, key + "."))
        else:
            out.append(key)
    return out


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in value_paths(values) if f"`{p}`" not in readme]
    assert missing == []


def test_readme_defaults_match_values():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = dict(re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", readme, re.M))

    def lookup(path):
        node = values
        for part in path.split("."):
            node = node[part]
        return node

    for path in value_paths(values):
        assert json.loads(rows[path].replace("\\|", "|")) == lookup(path), path


def test_schema_covers_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(tree, node, path):
        for k, v in tree.items():
            props = node.get("properties", {})
            assert k in props or node.get("additionalProperties", True) is not False, path + k
            if isinstance(v, dict) and k in props:
                walk(v, props[k], path + k + ".")

    walk(values, schema, "")


def test_dockerfile():
    text = (REPO / "deploy/Dockerfile").read_text()
    assert re.search(r"^FROM rust:\S+-bookworm AS build", text, re.M)
    assert "cargo build --release --locked -p rookery" in text
    assert re.search(r"^FROM gcr.io/distroless/cc-debian12:nonroot", text, re.M)
    assert "USER 65532:65532" in text
    assert 'ENTRYPOINT ["/usr/local/bin/rookery"]' in text
    assert re.search(r"^EXPOSE 5222 5223 5443 5280 7400$", text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored


# --- the server itself accepts what the chart renders -------------------------

ROOKERY_BIN = os.environ.get("ROOKERY_BIN")


# What every Secret holds in pod_env (at least 16 characters: an upload key).
SECRET_STAND_IN = "secret-value-0123456789"


def pod_env(c: dict) -> dict[str, str]:
    """The container's environment as Kubernetes would give it: Downward API
    and Secret values replaced by stand-ins, `$(VAR)` expanded from the
    variables defined before (Kubernetes' dependent variables)."""
    stand_in = {
        "status.podIP": "10.1.2.3",
        "metadata.name": "rookery-cm-7d9f8-abcde",
        "metadata.namespace": NAMESPACE,
    }
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            value = stand_in[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = SECRET_STAND_IN
        env[e["name"]] = value
    return env


@pytest.mark.skipif(not ROOKERY_BIN, reason="ROOKERY_BIN (a built rookery binary) not set; tests/run-all.sh sets it")
@pytest.mark.parametrize("case", CASES)
def test_server_accepts_rendered_config(case, tmp_path):
    """Every Rookery container's config file and ROOKERY__* environment, as
    rendered, passes `rookery check-config` of the server built from this
    tree: the chart cannot name an option the server does not have."""
    docs = rendered(case)
    raw = one(docs, "ConfigMap", RELEASE)["data"]
    checked = 0
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            args = c.get("args", [])
            if "--config" not in args:
                continue
            name = args[args.index("--config") + 1].rsplit("/", 1)[1]
            if name not in raw:
                continue
            path = tmp_path / name
            path.write_text(raw[name])
            env = {k: v for k, v in pod_env(c).items() if k.startswith("ROOKERY__")}
            out = subprocess.run(
                [ROOKERY_BIN, "--config", str(path), "check-config"],
                env={"PATH": os.environ.get("PATH", "/usr/bin"), **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, f"{w['metadata']['name']}: {out.stderr}"
            effective = tomllib.loads(out.stdout)
            if "ROOKERY__CLUSTER__GRPC_ADVERTISE" in env:
                assert effective["cluster"]["grpc_advertise"] == "10.1.2.3:7400"
            if "ROOKERY__UPLOAD__SECRET" in env:
                assert effective["upload"]["secret"] == SECRET_STAND_IN
            assert effective["upload"]["enabled"] is upload_offered(merged(case))
            checked += 1
    assert checked > 0
