"""Schemathesis against the query API's own OpenAPI document, with all
checks and a fixed seed, over a database of known events: every request the
document calls valid is answered 200 (`/v1/stream`, a WebSocket, aside), every one it calls invalid is refused
with a documented status and body, and nothing makes a server error.
Afterwards a known event is still read back exactly. Run through
`./dev test`."""

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest
import requests

KEY = "schemathesis-admin-key-0123456789"
# The example id of `/v1/files/{file_id}` in the document: a file of acme's
# is stored under it, so that the examples reach a file.
FILE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FILE = b"time_ms,temperature_c\n1,21.5\n"
EVENTS = 500
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"


def clickhouse(sql, database="default"):
    r = requests.post(
        os.environ["PULSE_CLICKHOUSE_URL"], params={"database": database}, data=sql, timeout=30
    )
    assert r.status_code == 200, f"{sql[:200]}: {r.text}"
    return r.text


@pytest.fixture(scope="module")
def database():
    """A fresh database with the project's tables and EVENTS events of
    tenant acme, the last one a millisecond before now."""
    name = f"st_{uuid.uuid4().hex[:12]}"
    clickhouse(f"CREATE DATABASE {name}")
    for migration in sorted(SCHEMAS.glob("*.sql")):
        clickhouse(migration.read_text().replace("{db}", name))
    end_ms = int(time.time() * 1000) - 1
    clickhouse(
        "INSERT INTO events (tenant_id, source_id, event_id, kind, event_time, event_time_ms, "
        "reading_names, reading_values, properties_json, model_version, processed_ms, "
        "device_seq, score, is_anomaly) "
        "SELECT 'acme', concat('device-', toString(number % 10)), "
        "concat('evt-', toString(number)), 'telemetry', "
        f"toDateTime(intDiv({end_ms} - number * 1000, 1000)), {end_ms} - number * 1000, "
        "['temperature_c'], [20.5 + number % 7], '{}', 'pca-ae-2', "
        f"{end_ms} - number * 1000 + 5, intDiv(number, 10) + 1, (number % 100) / 100, number % 50 = 0 "
        f"FROM system.numbers LIMIT {EVENTS}",
        name,
    )
    yield name
    clickhouse(f"DROP DATABASE {name}")


@pytest.fixture(scope="module")
def api_url(database, services, tmp_path_factory):
    # `database` first, so that it is dropped only once the API has stopped.
    keys = tmp_path_factory.mktemp("query-api") / "api-keys.toml"
    keys.write_text(
        '[[api_keys]]\nname = "schemathesis"\ntenant = "acme"\nrole = "admin"\n'
        f'sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
    )
    # acme's file, laid out as ingest's uploads store one.
    objects = tmp_path_factory.mktemp("objects")
    sha = hashlib.sha256(FILE).hexdigest()
    (objects / "tenants/acme/objects").mkdir(parents=True)
    (objects / "tenants/acme/files").mkdir(parents=True)
    (objects / "tenants/acme/objects" / sha).write_bytes(FILE)
    (objects / "tenants/acme/files" / f"{FILE_ID}.json").write_text(json.dumps({
        "file_id": FILE_ID, "tenant": "acme", "size": len(FILE), "sha256": sha,
        "content_type": "text/csv", "created_ms": 1_764_547_200_000,
    }))
    port = services.free_port()
    return services.start(
        "pulse-query-api",
        port,
        PULSE_QUERY_LISTEN=f"127.0.0.1:{port}",
        PULSE_TOPIC_PREFIX=f"st{uuid.uuid4().hex[:12]}.",
        PULSE_RESULT_PARTITIONS="1",
        PULSE_CLICKHOUSE_DATABASE=database,
        PULSE_QUERY_API_KEYS_FILE=str(keys),
        PULSE_OBJECT_STORE_URL=str(objects),
        # Schemathesis sends thousands of requests; the rate limit has a
        # test of its own.
        PULSE_QUERY_RATE_LIMIT="1000000",
        PULSE_QUERY_RATE_BURST="1000000",
    )


@pytest.fixture(scope="module")
def known_ids(api_url, tmp_path_factory):
    """A schemathesis.toml that gives the job routes a job of acme's half
    the time: without it every generated job id is 404, and Schemathesis
    warns that those routes were never reached."""
    r = requests.post(
        f"{api_url}/v1/jobs",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"kind": "report", "params": {"format": "csv", "from_ms": 0, "to_ms": 1000}},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    r = requests.get(f"{api_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert (r.status_code, r.json()["state"]) == (200, "queued"), r.text
    config = tmp_path_factory.mktemp("schemathesis") / "schemathesis.toml"
    config.write_text(
        f'[dictionaries.jobs]\nvalues = ["{job_id}"]\n\n'
        '[parameters]\n"path.job_id" = { dictionary = "jobs", probability = 0.5 }\n'
    )
    return config


def test_schemathesis_finds_nothing(api_url, known_ids, schemathesis):
    # An HTTP fuzzer cannot complete a WebSocket handshake (it takes the
    # 101 for a failure); the stream's answers are tested in
    # stream_guards.rs and live.rs.
    # A schedule's crontab expression means more than JSON Schema can say
    # (a sixth field, a 31st of February, two occurrences a minute apart):
    # worker/tests/jobs.rs covers its refusals field by field.
    schemathesis(f"{api_url}/openapi.json", KEY, exclude_paths=["/v1/stream", "/v1/schedules/{name}"],
                 config=known_ids)

    r = requests.get(
        f"{api_url}/v1/events/evt-7", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    event = r.json()
    assert (
        event["event_id"], event["source_id"], event["reading_names"], event["reading_values"]
    ) == ("evt-7", "device-7", ["temperature_c"], [20.5]), event
    assert requests.get(f"{api_url}/readyz", timeout=5).status_code == 200
    r = requests.get(f"{api_url}/v1/files/{FILE_ID}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert (r.status_code, r.content) == (200, FILE)
