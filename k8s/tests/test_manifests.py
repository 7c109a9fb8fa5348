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
SERVICES = ["pulse-registry", "pulse-ingest", "pulse-processor", "pulse-query-api", "pulse-worker"]


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


@pytest.mark.parametrize("deployment, provider_var", [
    ("pulse-processor", "PULSE_EXECUTION_PROVIDER"),
    ("pulse-worker", "PULSE_OCR_EXECUTION_PROVIDER"),
])
def test_models_run_on_a_gpu_in_production_only(rendered, deployment, provider_var):
    env, objects = rendered
    spec = by_name(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    resources = container["resources"]
    env_vars = {e["name"]: e.get("value") for e in container["env"]}
    # One image in every environment, so that what PRD runs is what UAT
    # certified; it runs on CPU where no GPU is requested.
    assert container["image"].startswith(f"ghcr.io/pulse-pipeline/{deployment.removeprefix('pulse-')}-gpu@sha256:")
    if env == "prd":
        assert resources["limits"]["nvidia.com/gpu"] >= 1
        assert resources["requests"]["nvidia.com/gpu"] >= 1
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        assert env_vars[provider_var] == "cuda"
    else:
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert "nodeSelector" not in spec
        assert provider_var not in env_vars


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
    # Workers scale on the jobs waiting: to zero in dev, a floor in prd.
    workers = by_name(objects, "ScaledObject", "pulse-worker")
    assert workers["spec"]["scaleTargetRef"]["name"] == "pulse-worker"
    prefix = settings(objects)["PULSE_TOPIC_PREFIX"]
    group = from_code("worker/src/main.rs", r'env = "PULSE_WORKER_GROUP", default_value = "([^"]+)"')
    concurrency = from_code("worker/src/main.rs", r'env = "PULSE_WORKER_CONCURRENCY", default_value_t = (\d+)')
    # A trigger for each kind's requests, each wanting a worker for as
    # many jobs as one runs at once.
    triggers = [t["metadata"] for t in workers["spec"]["triggers"]]
    assert [(t["consumerGroup"], t["topic"], t["lagThreshold"]) for t in triggers] == [
        (group, prefix + "jobs", concurrency), (group, prefix + "ocr-jobs", concurrency)]
    assert workers["spec"]["minReplicaCount"] == {"dev": 0, "uat": 1, "prd": 2}[env]


def kafka_topics(objects):
    return {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in of_kind(objects, "KafkaTopic")}


def test_topics_and_users(rendered):
    _, objects = rendered
    topics = kafka_topics(objects)
    assert set(topics) == {"pulse.telemetry", "pulse.app-events", "pulse.results", "pulse.alerts",
                           "pulse.dead-letter", "pulse-processor-state-telemetry", "pulse-processor-state-app",
                           "_pulse_schemas", "pulse.jobs", "pulse.ocr-jobs", "pulse.job-control", "pulse.job-events"}
    assert topics["pulse.job-control"]["partitions"] == 1, "every worker reads every cancel order"
    assert topics["_pulse_schemas"]["config"]["cleanup.policy"] == "compact"
    assert topics["_pulse_schemas"]["partitions"] == 1
    # Compacted topics keep each key's latest record however old; the others expire.
    assert all("retention.ms" in t["config"] for t in topics.values() if t["config"].get("cleanup.policy") != "compact")
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    assert users == set(SERVICES)


# --- Credentials, ClickHouse users, JWT claims, Kafka ACLs, the registry ---

def container(objects, deployment):
    return by_name(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def settings(objects):
    """pulse-settings as the services see it (its name carries kustomize's hash)."""
    name = container(objects, "pulse-ingest")["envFrom"][0]["configMapRef"]["name"]
    return by_name(objects, "ConfigMap", name)["data"]


def external_secret_keys(objects):
    """Secret name -> the keys its ExternalSecret fills."""
    return {o["spec"]["target"]["name"]: {d["secretKey"] for d in o["spec"]["data"]}
            for o in of_kind(objects, "ExternalSecret")}


def secret_env(objects, c, name):
    """(secret, key) that env `name` of container `c` is read from, checked to exist."""
    e = env_of(c).get(name)
    assert e, f'{c["name"]} lacks {name}'
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    assert ref, f'{c["name"]}: {name} is not read from a Secret'
    keys = external_secret_keys(objects).get(ref["name"], set())
    assert ref["key"] in keys, f'{c["name"]}: {name} reads {ref["name"]}/{ref["key"]}, which no ExternalSecret fills'
    return ref["name"], ref["key"]


def secret_file(objects, deployment, env_name):
    """(secret, key) behind the file that env `env_name` of `deployment` names:
    the path must lie in a mounted volume backed by a Secret that has the key."""
    spec = by_name(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    path = env_of(c).get(env_name, {}).get("value")
    assert path, f"{deployment} does not set {env_name}"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        mount = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(mount):
            continue
        secret = volumes[m["name"]].get("secret")
        assert secret, f"{deployment}: {path} is in volume {m['name']}, not backed by a Secret"
        relative = path[len(mount):]
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        key = items.get(relative, relative) if items else relative
        keys = external_secret_keys(objects).get(secret["secretName"], set())
        assert key in keys, f"{deployment}: {path} is key {key} of {secret['secretName']}, which no ExternalSecret fills"
        return secret["secretName"], key
    raise AssertionError(f"{deployment}: {env_name}={path} lies in no mounted volume")


def test_object_store_credentials_come_from_a_secret(rendered):
    _, objects = rendered
    assert settings(objects)["PULSE_OBJECT_STORE_URL"].startswith("s3://")
    for deployment in ["pulse-ingest", "pulse-query-api", "pulse-worker"]:
        c = container(objects, deployment)
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
            assert secret_env(objects, c, name)[0] == "pulse-object-store"


def test_ingest_authenticates_with_a_credentials_file_from_a_secret(rendered):
    _, objects = rendered
    secret_file(objects, "pulse-ingest", "PULSE_INGEST_CREDENTIALS")


def clickhouse_users(objects):
    """ClickHouse user -> its settings, and profile -> its settings, from the
    Altinity operator's flat `user/setting` keys."""
    conf = by_name(objects, "ClickHouseInstallation", "pulse")["spec"]["configuration"]

    def nest(flat):
        out = {}
        for key, value in (flat or {}).items():
            name, setting = key.split("/", 1)
            out.setdefault(name, {})[setting] = value
        return out
    return nest(conf.get("users")), nest(conf.get("profiles"))


def grants(user):
    """(privileges, target) of each of a user's grants (GRANT p[, p] ON db.table)."""
    out = []
    for q in user.get("grants/query", []):
        m = re.fullmatch(r"GRANT\s+([A-Z ,]+?)\s+ON\s+(\S+)", q.strip())
        assert m, f"cannot read grant {q!r}"
        out.append(({p.strip() for p in m[1].split(",")}, m[2]))
    return out


def table_of(ddl):
    sql = (REPO / "schemas" / "clickhouse" / ddl).read_text()
    return re.search(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", sql)[1]


def audit_table(objects):
    database = settings(objects)["PULSE_CLICKHOUSE_DATABASE"]
    return f"{database}.{table_of('audit.sql')}"


def test_clickhouse_users_match_what_each_service_does(rendered):
    _, objects = rendered
    users, profiles = clickhouse_users(objects)
    api = container(objects, "pulse-query-api")
    api_env = env_of(api)
    reader = api_env["PULSE_CLICKHOUSE_USER"]["value"]
    writer = env_of(container(objects, "pulse-processor"))["PULSE_CLICKHOUSE_USER"]["value"]

    # The API sends per-query settings: readonly 2 allows them, 1 refuses them.
    profile = users[reader].get("profile", "default")
    assert str(profiles.get(profile, {}).get("readonly")) == "2", f"{reader}'s profile {profile} is not readonly 2"
    assert all(privileges == {"SELECT"} for privileges, _ in grants(users[reader])), f"{reader} may do more than SELECT"

    auditor = api_env.get("PULSE_AUDIT_CLICKHOUSE_USER", {}).get("value")
    assert auditor == "pulse_audit_writer", f"the query API writes its audit trail as {auditor}"
    assert auditor in users, f"ClickHouse has no user {auditor}"
    assert len({reader, writer, auditor}) == 3, "the API reads, the processor writes, the audit trail inserts: three users"
    # The API creates its audit, job and schedule tables (ON CLUSTER, hence CLUSTER) and inserts into them, nothing else.
    database = settings(objects)["PULSE_CLICKHOUSE_DATABASE"]
    jobs = f"{database}.{table_of('jobs.sql')}"
    schedules = f"{database}.{table_of('schedules.sql')}"
    reads = f"{database}.{table_of('ocr_reads.sql')}"
    assert grants(users[auditor]) == [({"INSERT", "CREATE TABLE"}, audit_table(objects)),
                                      ({"INSERT", "CREATE TABLE"}, jobs),
                                      ({"INSERT", "CREATE TABLE"}, schedules),
                                      ({"CREATE TABLE"}, reads), ({"CLUSTER"}, "*.*")], \
        f"{auditor} may only create and INSERT into the audit, job and schedule tables (and create the reads')"
    # The worker reads events and jobs, and writes jobs only.
    worker = env_of(container(objects, "pulse-worker"))["PULSE_CLICKHOUSE_USER"]["value"]
    assert worker not in {reader, writer, auditor}
    assert grants(users[worker]) == [({"SELECT"}, f"{database}.events"), ({"SELECT", "INSERT", "CREATE TABLE"}, jobs),
                                     ({"SELECT", "INSERT", "CREATE TABLE"}, reads),
                                     ({"CLUSTER"}, "*.*")], f"{worker} may do more than its jobs need"
    assert users[auditor].get("profile", "default") not in {p for p, s in profiles.items() if str(s.get("readonly")) in {"1", "2"}}

    # Each service's password is the one its ClickHouse user is given.
    for deployment, user_env, password_env in [
        ("pulse-processor", "PULSE_CLICKHOUSE_USER", "PULSE_CLICKHOUSE_PASSWORD"),
        ("pulse-query-api", "PULSE_CLICKHOUSE_USER", "PULSE_CLICKHOUSE_PASSWORD"),
        ("pulse-query-api", "PULSE_AUDIT_CLICKHOUSE_USER", "PULSE_AUDIT_CLICKHOUSE_PASSWORD"),
        ("pulse-worker", "PULSE_CLICKHOUSE_USER", "PULSE_CLICKHOUSE_PASSWORD"),
    ]:
        c = container(objects, deployment)
        user = env_of(c)[user_env]["value"]
        secret, key = secret_env(objects, c, password_env)
        assert users[user]["k8s_secret_password"] == f"pulse/{secret}/{key}", f"{deployment}: {user}'s password"


def test_query_api_requires_issuer_and_audience(rendered):
    _, objects = rendered
    env = env_of(container(objects, "pulse-query-api"))
    for name in ["PULSE_JWT_ISSUER", "PULSE_JWT_AUDIENCE"]:
        assert env.get(name, {}).get("value", "").strip(), f"query API does not require {name}"


def test_each_environment_trusts_only_its_own_issuer():
    issuers = {env: env_of(container(render(env), "pulse-query-api")).get("PULSE_JWT_ISSUER", {}).get("value")
               for env in ENVIRONMENTS}
    assert all(issuers.values()), f"an environment accepts tokens of any issuer: {issuers}"
    assert len(set(issuers.values())) == len(ENVIRONMENTS), f"a token of one environment is valid in another: {issuers}"


def from_code(path, pattern):
    """The first group of `pattern` in a source file: the names the services
    use, read where they are defined rather than copied here."""
    m = re.search(pattern, (REPO / path).read_text())
    assert m, f"{path} no longer matches {pattern!r}: update the ACL table to the code"
    return m[1]


def kind_names(fn):
    body = from_code("common/src/schemas.rs", r"(?s)fn " + fn + r"\(self\)[^{]*\{(.*?)\n    \}")
    return re.findall(r'EventKind::\w+ => "([^"]+)"', body)


def needed_acls(objects):
    """(user, resource type, name, pattern, operation) every service needs."""
    prefix = settings(objects)["PULSE_TOPIC_PREFIX"]
    topic = lambda fn: prefix + from_code("common/src/config.rs", r"fn " + fn + r'\(&self\) -> String \{\s*format!\("\{\}([a-z.-]+)", self\.prefix\)')
    events = [prefix + s for s in kind_names("topic_suffix")]
    results, alerts, dead_letter = topic("results"), topic("alerts"), topic("dead_letter")
    jobs, ocr_jobs = topic("jobs"), topic("ocr_jobs")
    job_control, job_events = topic("job_control"), topic("job_events")
    worker_group = from_code("worker/src/main.rs", r'env = "PULSE_WORKER_GROUP", default_value = "([^"]+)"')
    control_group = from_code("worker/src/cancels.rs", r'"group\.id", "([^"]+)"')

    processor_env = env_of(container(objects, "pulse-processor"))
    group = processor_env.get("PULSE_PROCESSOR_GROUP", {}).get("value") or \
        from_code("processor/src/main.rs", r'env = "PULSE_PROCESSOR_GROUP", default_value = "([^"]+)"')
    from_code("processor/src/main.rs", r'(format!\("\{group\}-)')  # transactional.id = <group>-...
    state = from_code("processor/src/source/topics.rs", r'format!\("\{\}(-state-)\{\}", self\.group, kind\.as_str\(\)\)')
    changelogs = [group + state + k for k in kind_names("as_str")]
    restore_group = from_code("processor/src/state/changelog.rs", r'"group\.id", "([^"]+)"')
    api_group = from_code("query-api/src/fanout.rs", r'"group\.id", "([^"]+)"')
    registry_topic = from_code("registry/src/main.rs", r'env = "PULSE_REGISTRY_TOPIC", default_value = "([^"]+)"')
    registry_group = from_code("registry/src/store.rs", r'"group\.id", "([^"]+)"')
    registry_txn = from_code("registry/src/store.rs", r'format!\("([a-z-]+)\{\}", self\.config\.topic\)')

    need = []
    def add(user, kind, names, ops, pattern="literal"):
        need.extend((user, kind, n, pattern, op) for n in names for op in ops)
    # Ingest produces events and (the MQTT bridge) dead letters, and creates
    # those topics at start (ingest/src/main.rs).
    add("pulse-ingest", "topic", events + [dead_letter], ["Describe", "Write", "Create"])
    add("pulse-ingest", "cluster", ["kafka-cluster"], ["IdempotentWrite"])
    # The processor reads events; writes results, alerts, dead letters and
    # state in transactions; reads its state back; creates what it writes
    # (processor/src/source/topics.rs).
    add("pulse-processor", "topic", events, ["Describe", "Read"])
    add("pulse-processor", "topic", [results, alerts, dead_letter], ["Describe", "Write", "Create"])
    add("pulse-processor", "topic", changelogs, ["Describe", "Read", "Write", "Create"])
    add("pulse-processor", "group", [group], ["Read"])
    add("pulse-processor", "group", [restore_group], ["Describe"])
    add("pulse-processor", "transactionalId", [group + "-"], ["Describe", "Write"], "prefix")
    add("pulse-processor", "cluster", ["kafka-cluster"], ["IdempotentWrite"])
    # The query API reads results with assigned partitions and creates the topic if missing.
    add("pulse-query-api", "topic", [results], ["Describe", "Read", "Create"])
    add("pulse-query-api", "group", [api_group], ["Describe"])
    # It queues jobs and cancel orders and records what it changes of them
    # (pulse_common::jobs), creating the topics if missing.
    add("pulse-query-api", "topic", [jobs, ocr_jobs, job_control, job_events], ["Describe", "Write", "Create"])
    add("pulse-query-api", "cluster", ["kafka-cluster"], ["IdempotentWrite"])
    # The worker takes jobs in its group, reads every cancel order with
    # assigned partitions, and records transitions.
    add("pulse-worker", "topic", [jobs, ocr_jobs, job_control], ["Describe", "Read", "Create"])
    add("pulse-worker", "group", [worker_group], ["Read"])
    add("pulse-worker", "group", [control_group], ["Describe"])
    add("pulse-worker", "topic", [job_events], ["Describe", "Write", "Create"])
    # It publishes meter values read by OCR jobs as telemetry (worker/src/telemetry.rs).
    add("pulse-worker", "topic", [e for e in events if e.endswith(".telemetry")], ["Describe", "Write"])
    add("pulse-worker", "cluster", ["kafka-cluster"], ["IdempotentWrite"])
    # The registry keeps its state in its topic, written in transactions.
    add("pulse-registry", "topic", [registry_topic], ["Describe", "Read", "Write", "Create"])
    add("pulse-registry", "group", [registry_group], ["Describe"])
    add("pulse-registry", "transactionalId", [registry_txn], ["Describe", "Write"], "prefix")
    add("pulse-registry", "cluster", ["kafka-cluster"], ["IdempotentWrite"])
    return need


# Kafka's implied operations: Read, Write, Delete or Alter allow Describe.
IMPLIES_DESCRIBE = {"Describe", "Read", "Write", "Delete", "Alter", "All"}


def granted_acls(objects):
    out = []
    for u in of_kind(objects, "KafkaUser"):
        for acl in u["spec"]["authorization"]["acls"]:
            r = acl["resource"]
            ops = acl.get("operations") or [acl["operation"]]
            name = r.get("name", "kafka-cluster")
            out += [(u["metadata"]["name"], r["type"], name, r.get("patternType", "literal"), op) for op in ops]
    return out


def covers(grant, need):
    user, kind, name, pattern, op = need
    g_user, g_kind, g_name, g_pattern, g_op = grant
    if (g_user, g_kind) != (user, kind):
        return False
    if g_op != op and not (op == "Describe" and g_op in IMPLIES_DESCRIBE) and g_op != "All":
        return False
    if g_pattern == "literal":
        return pattern == "literal" and g_name == name
    return name.startswith(g_name)  # a prefix grant covers names (and prefixes) it starts


def test_kafka_acls_allow_what_each_service_does(rendered):
    _, objects = rendered
    granted = granted_acls(objects)
    missing = [n for n in needed_acls(objects) if not any(covers(g, n) for g in granted)]
    assert not missing, "KafkaUsers lack: " + "; ".join(" ".join(m) for m in missing)
    # Nothing beyond: no wildcard, no All, and writes only where a service writes.
    needed_writes = {(u, k, n) for u, k, n, _, op in needed_acls(objects) if op == "Write"}
    for user, kind, name, pattern, op in granted:
        assert name != "*" and op != "All", f"{user} has {op} on {kind} {name}"
        if op == "Write":
            assert (user, kind, name) in needed_writes, f"{user} may write {kind} {name}, which it never writes"


def test_every_topic_a_service_uses_exists_replicated(rendered):
    _, objects = rendered
    topics = kafka_topics(objects)
    for user, kind, name, _, op in needed_acls(objects):
        if kind != "topic":
            continue
        assert name in topics, f"{user} uses topic {name}, which has no KafkaTopic"
        if op == "Write":
            spec = topics[name]
            assert spec["replicas"] == 3, f"{name} has {spec['replicas']} replicas"
            assert str(spec["config"]["min.insync.replicas"]) == "2", f"{name}: min.insync.replicas"
    # The state of event partition N lives in changelog partition N.
    group = by_name(objects, "ScaledObject", "pulse-processor")["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    prefix = settings(objects)["PULSE_TOPIC_PREFIX"]
    for kind, suffix in zip(kind_names("as_str"), kind_names("topic_suffix")):
        changelog = topics[f"{group}-state-{kind}"]
        assert changelog["config"]["cleanup.policy"] == "compact"
        assert changelog["partitions"] == topics[prefix + suffix]["partitions"], f"{group}-state-{kind}"


def listen_port(c, name):
    address = env_of(c).get(name, {}).get("value")
    assert address, f'{c["name"]} does not set {name}'
    return int(address.rsplit(":", 1)[1])


def test_registry_requires_credentials_and_serves_metrics_apart(rendered):
    _, objects = rendered
    secret_file(objects, "pulse-registry", "PULSE_REGISTRY_CREDENTIALS")
    # Its clients: ingest registers schemas, the processor reads them, each as its own user.
    names = {}
    for deployment in ["pulse-ingest", "pulse-processor"]:
        c = container(objects, deployment)
        names[deployment] = env_of(c).get("PULSE_REGISTRY_USERNAME", {}).get("value")
        assert names[deployment], f"{deployment} has no PULSE_REGISTRY_USERNAME"
        secret_env(objects, c, "PULSE_REGISTRY_PASSWORD")
    assert names["pulse-ingest"] != names["pulse-processor"], "the processor must not use ingest's (write) registry user"

    registry = container(objects, "pulse-registry")
    api, metrics = listen_port(registry, "PULSE_REGISTRY_LISTEN"), listen_port(registry, "PULSE_REGISTRY_METRICS_LISTEN")
    assert api != metrics, "the registry's metrics share its API port"
    ports = {p["name"]: p["containerPort"] for p in registry["ports"]}
    assert ports.get("http") == api and metrics in ports.values()


def test_prometheus_scrapes_each_service_where_it_serves_metrics(rendered):
    _, objects = rendered
    metrics_env = {"pulse-registry": "PULSE_REGISTRY_METRICS_LISTEN", "pulse-ingest": "PULSE_INGEST_LISTEN",
                   "pulse-processor": "PULSE_PROCESSOR_LISTEN", "pulse-query-api": "PULSE_QUERY_LISTEN"}
    monitors = of_kind(objects, "ServiceMonitor")
    policies = of_kind(objects, "NetworkPolicy")
    for name, env_name in metrics_env.items():
        c = container(objects, name)
        port = listen_port(c, env_name)
        container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        service = by_name(objects, "Service", name)
        labels = service["metadata"]["labels"]
        scraped = set()
        for m in monitors:
            sel = m["spec"]["selector"]
            if not matches(sel.get("matchLabels", {}), labels):
                continue
            if not all(labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []) if e["operator"] == "In"):
                continue
            for e in m["spec"]["endpoints"]:
                sp = [p for p in service["spec"]["ports"] if p["name"] == e["port"]]
                target = sp and sp[0]["targetPort"]
                scraped.add(container_ports.get(target, target) if sp else None)
        assert scraped == {port}, f"{name} serves /metrics on {port}, scraped on {scraped}"
        # The monitoring namespace may reach that port.
        pod_labels = by_name(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        allowed = any(
            matches(p["spec"]["podSelector"].get("matchLabels", {}), pod_labels)
            and any(f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
                    for f in rule.get("from", []))
            and any(q.get("port") == port for q in rule.get("ports", []))
            for p in policies for rule in p["spec"].get("ingress", []))
        assert allowed, f"no NetworkPolicy lets Prometheus reach {name}:{port}"


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
