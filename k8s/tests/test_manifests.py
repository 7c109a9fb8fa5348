"""Renders every overlay with `kubectl kustomize` and checks the invariants
production depends on. Run through `./dev test` (or pytest k8s/tests)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1]
REPO = K8S.parent
ENVIRONMENTS = ["dev", "uat", "prd"]
SERVICES = ["pulse-registry", "pulse-ingest", "pulse-processor", "pulse-query-api"]


def render(env, root=K8S):
    out = subprocess.run(
        ["kubectl", "kustomize", str(root / "overlays" / env)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def rendered(request):
    return request.param, render(request.param)


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def by_name(objects, kind, name):
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects):
    """(owner, pod spec) of every workload, operator-managed pod templates included."""
    for d in of_kind(objects, "Deployment"):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]
    for kind in ["ClickHouseInstallation", "ClickHouseKeeperInstallation"]:
        for o in of_kind(objects, kind):
            for t in o["spec"]["templates"]["podTemplates"]:
                yield f'{o["metadata"]["name"]}/{t["name"]}', t["spec"]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_service_is_deployed(rendered):
    _, objects = rendered
    assert sorted(d["metadata"]["name"] for d in of_kind(objects, "Deployment")) == sorted(SERVICES)


def test_no_latest_tags_and_services_by_digest(rendered):
    _, objects = rendered
    for owner, spec in pod_specs(objects):
        for c in spec["containers"]:
            image = c["image"]
            if image.startswith("ghcr.io/pulse-pipeline/"):
                assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{owner}: {image} not by digest"
            else:
                tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else None
                assert tag and tag != "latest", f"{owner}: {image} has no pinned tag"


def test_containers_have_probes_resources_and_run_unprivileged(rendered):
    _, objects = rendered
    for d in of_kind(objects, "Deployment"):
        name = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("topologySpreadConstraints"), f"{name} not spread across zones"
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        for c in spec["containers"]:
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
    for owner, spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, owner


def test_every_deployment_has_a_matching_pdb_and_selector(rendered):
    _, objects = rendered
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for d in of_kind(objects, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert matches(d["spec"]["selector"]["matchLabels"], labels), d["metadata"]["name"]
        covering = [p for p in pdbs if matches(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, f'{d["metadata"]["name"]} has {len(covering)} PDBs'
    services = of_kind(objects, "Service")
    for s in services:
        targets = [d for d in of_kind(objects, "Deployment")
                   if matches(s["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert targets, f'Service {s["metadata"]["name"]} selects no Deployment'


def test_processor_requests_a_gpu_in_production_only(rendered):
    env, objects = rendered
    spec = by_name(objects, "Deployment", "pulse-processor")["spec"]["template"]["spec"]
    resources = spec["containers"][0]["resources"]
    env_vars = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    if env == "prd":
        assert resources["limits"]["nvidia.com/gpu"] >= 1
        assert resources["requests"]["nvidia.com/gpu"] >= 1
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        assert env_vars["PULSE_DEVICE"] == "cuda"
    else:
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert "nodeSelector" not in spec
        assert "PULSE_DEVICE" not in env_vars


def produced_secrets(objects):
    """Secrets that operators create from objects in the render."""
    names = {o["metadata"]["name"] for o in of_kind(objects, "Secret")}
    names |= {o["spec"]["target"]["name"] for o in of_kind(objects, "ExternalSecret")}
    names |= {o["metadata"]["name"] for o in of_kind(objects, "KafkaUser")}
    names |= {f'{o["metadata"]["name"]}-cluster-ca-cert' for o in of_kind(objects, "Kafka")}
    return names


def test_every_referenced_configmap_and_secret_exists(rendered):
    _, objects = rendered
    configmaps = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")}
    secrets = produced_secrets(objects)
    refs = []
    for owner, spec in pod_specs(objects):
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    refs.append(("ConfigMap", src["configMapRef"]["name"], owner))
                if "secretRef" in src:
                    refs.append(("Secret", src["secretRef"]["name"], owner))
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "secretKeyRef" in vf:
                    refs.append(("Secret", vf["secretKeyRef"]["name"], owner))
                if "configMapKeyRef" in vf:
                    refs.append(("ConfigMap", vf["configMapKeyRef"]["name"], owner))
        for v in spec.get("volumes", []):
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"], owner))
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"], owner))
    for ta in of_kind(objects, "TriggerAuthentication"):
        refs += [("Secret", r["name"], ta["metadata"]["name"]) for r in ta["spec"].get("secretTargetRef", [])]
        refs += [("ConfigMap", r["name"], ta["metadata"]["name"]) for r in ta["spec"].get("configMapTargetRef", [])]
    for chi in of_kind(objects, "ClickHouseInstallation"):
        for key, value in chi["spec"]["configuration"]["users"].items():
            if key.endswith("k8s_secret_password"):
                refs.append(("Secret", value.split("/")[1], chi["metadata"]["name"]))
    assert refs, "found no references at all"
    for kind, name, owner in refs:
        known = configmaps if kind == "ConfigMap" else secrets
        assert name in known, f"{owner} references missing {kind} {name}"


def test_no_secret_values_in_git(rendered):
    _, objects = rendered
    assert of_kind(objects, "Secret") == [], "Secrets must come from the secret store, not git"
    for cm in of_kind(objects, "ConfigMap"):
        for key in cm.get("data", {}):
            assert "PASSWORD" not in key.upper(), f"{cm['metadata']['name']} holds {key}"


def test_network_policies_cover_every_workload(rendered):
    _, objects = rendered
    policies = of_kind(objects, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               for p in policies), "no default-deny policy"
    specific = [p for p in policies if p["spec"]["podSelector"].get("matchLabels")]
    workloads = [(d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"])
                 for d in of_kind(objects, "Deployment")]
    workloads.append(("clickhouse", {"clickhouse.altinity.com/chi": "pulse"}))
    workloads.append(("clickhouse-keeper", {"clickhouse-keeper.altinity.com/chk": "pulse"}))
    for name, labels in workloads:
        assert any(matches(p["spec"]["podSelector"]["matchLabels"], labels) for p in specific), \
            f"no NetworkPolicy selects {name}"
    # Kafka's listener admits only Pulse's services and KEDA.
    listener = by_name(objects, "Kafka", "pulse")["spec"]["kafka"]["listeners"][0]
    peers = [p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") for p in listener["networkPolicyPeers"]]
    assert set(SERVICES) <= set(peers)


def test_autoscaling(rendered):
    env, objects = rendered
    deployments = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")}
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert hpas == {"pulse-ingest", "pulse-query-api"}
    scaled = by_name(objects, "ScaledObject", "pulse-processor")
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "pulse-processor"
    assert scaled["spec"]["minReplicaCount"] == (0 if env == "dev" else 2)


def test_topics_and_users(rendered):
    _, objects = rendered
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in of_kind(objects, "KafkaTopic")}
    assert set(topics) == {"pulse.telemetry", "pulse.app-events", "pulse.results", "pulse.dead-letter", "_pulse_schemas"}
    assert topics["_pulse_schemas"]["config"]["cleanup.policy"] == "compact"
    assert topics["_pulse_schemas"]["partitions"] == 1
    assert all("retention.ms" in t["config"] for n, t in topics.items() if n != "_pulse_schemas")
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    assert users == set(SERVICES)


def exported_metrics():
    names = set()
    for path in REPO.glob("*/src/**/*.rs"):
        names |= set(re.findall(r'"(pulse_[a-z_]+)"', path.read_text()))
    return names


def test_dashboard_and_alerts_use_metrics_the_services_export():
    exported = exported_metrics()
    external = {"kafka_consumergroup_lag", "process_resident_memory_bytes"}
    exprs = [t["expr"] for p in yaml.safe_load((K8S / "base" / "grafana-dashboard.json").read_text())["panels"]
             for t in p["targets"]]
    rules = yaml.safe_load((K8S / "base" / "monitoring.yaml").read_text().split("---")[-1])
    exprs += [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\b((?:pulse|kafka|process)_[a-z_]+?)(?:_bucket|_count|_sum)?\b(?=[{\[(\s)]|$)", e))
    assert used, "no metrics found in the dashboard"
    unknown = used - exported - external
    assert not unknown, f"dashboard or alerts use metrics no service exports: {unknown}"
    titles = " ".join(p["title"] for p in yaml.safe_load((K8S / "base" / "grafana-dashboard.json").read_text())["panels"])
    for topic in ["Ingest rate", "rejects", "lag", "Batch", "Inference", "ClickHouse insert", "API latency", "API errors", "WebSocket"]:
        assert topic in titles, f"dashboard lacks a {topic} panel"


@pytest.fixture
def k8s_copy(tmp_path):
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    return root


def promote(root, *args):
    return subprocess.run(["python3", str(root / "promote.py"), *args], capture_output=True, text=True)


def overlay_digests(root, env):
    text = (root / "overlays" / env / "kustomization.yaml").read_text()
    return dict(re.findall(r"name: pulse/([a-z-]+)\n    newName: [^\n]+\n    digest: (sha256:[0-9a-f]{64})", text))


def test_promotion_refuses_uncertified_digests(k8s_copy):
    new = "sha256:" + "ab" * 32
    prd_before = overlay_digests(k8s_copy, "prd")
    assert promote(k8s_copy, "set", "uat", "ingest", new).returncode == 1, "builds enter dev only"
    assert promote(k8s_copy, "set", "dev", "ingest", new).returncode == 0
    assert overlay_digests(k8s_copy, "dev")["ingest"] == new

    refused = promote(k8s_copy, "promote", "dev", "uat")
    assert refused.returncode == 1 and "not certified in dev" in refused.stderr
    assert overlay_digests(k8s_copy, "uat")["ingest"] != new
    assert promote(k8s_copy, "promote", "dev", "prd").returncode == 1, "no skipping UAT"

    assert promote(k8s_copy, "certify", "dev").returncode == 0
    assert promote(k8s_copy, "promote", "dev", "uat").returncode == 0
    assert overlay_digests(k8s_copy, "uat")["ingest"] == new

    refused = promote(k8s_copy, "promote", "uat", "prd")
    assert refused.returncode == 1 and "not certified in uat" in refused.stderr
    assert overlay_digests(k8s_copy, "prd") == prd_before, "PRD unchanged by a refused promotion"

    assert promote(k8s_copy, "certify", "uat").returncode == 0
    assert promote(k8s_copy, "promote", "uat", "prd").returncode == 0
    assert overlay_digests(k8s_copy, "prd")["ingest"] == new
    assert render("prd", k8s_copy), "the promoted overlay still renders"


def test_committed_overlays_are_certified_where_they_came_from():
    for source, target in [("dev", "uat"), ("uat", "prd")]:
        certified = {tuple(l.split()[:2]) for l in (K8S / "promotion" / f"{source}.certified").read_text().splitlines()
                     if l.strip() and not l.startswith("#")}
        for service, digest in overlay_digests(K8S, target).items():
            assert (service, digest) in certified, f"{target} runs {service} {digest}, never certified in {source}"
