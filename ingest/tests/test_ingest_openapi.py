"""Schemathesis against ingest's own OpenAPI document, with all checks and a
fixed seed: every request the document calls valid is accepted, every one it
calls invalid is refused, every answer is documented, and no input makes a
server error. Afterwards a marker event is still accepted. Run through
`./dev test`."""

import hashlib
import time
import uuid

import pytest
import requests

KEY = "schemathesis-key-0123456789"


@pytest.fixture(scope="module")
def ingest_url(services, tmp_path_factory):
    prefix = f"st{uuid.uuid4().hex[:12]}."
    registry_port, ingest_port = services.free_port(), services.free_port()
    registry_url = services.start(
        "pulse-registry",
        registry_port,
        PULSE_REGISTRY_LISTEN=f"127.0.0.1:{registry_port}",
        PULSE_REGISTRY_METRICS_LISTEN="127.0.0.1:0",
        PULSE_REGISTRY_TOPIC=f"{prefix}_schemas",
    )
    credentials = tmp_path_factory.mktemp("ingest") / "credentials.toml"
    credentials.write_text(
        "[[api_keys]]\nname = \"schemathesis\"\ntenant = \"acme\"\n"
        f"sha256 = \"{hashlib.sha256(KEY.encode()).hexdigest()}\"\n"
        "events_per_second = 1000000\nburst = 1000000\n"
    )
    return services.start(
        "pulse-ingest",
        ingest_port,
        PULSE_INGEST_LISTEN=f"127.0.0.1:{ingest_port}",
        PULSE_TOPIC_PREFIX=prefix,
        PULSE_REGISTRY_URL=registry_url,
        PULSE_INGEST_CREDENTIALS=str(credentials),
        # Event times bounded only by the contract: the gateway's own
        # window moves with its clock between the document and a request.
        PULSE_INGEST_MAX_EVENT_AGE_S="0",
        PULSE_INGEST_MAX_CLOCK_SKEW_S="0",
    )


def test_schemathesis_finds_nothing(ingest_url, schemathesis):
    schemathesis(f"{ingest_url}/openapi.json", KEY)

    marker = {
        "kind": "telemetry", "event_id": str(uuid.uuid4()), "source_id": "marker",
        "event_time": int(time.time() * 1000), "readings": {"temperature_c": 21.5},
    }
    r = requests.post(
        f"{ingest_url}/v1/events", json=marker,
        headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "event_ids": [marker["event_id"]]}
