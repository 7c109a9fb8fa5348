"""Schemathesis against ingest's own OpenAPI document, with all checks and a
fixed seed: every request the document calls valid is accepted, every one it
calls invalid is refused, every answer is documented, and no input makes a
server error. Afterwards a marker event is still accepted. Run through
`./dev test`."""

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

KEY = "schemathesis-key-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, env, port):
    proc = subprocess.Popen([os.path.join(os.environ["PULSE_BIN_DIR"], binary)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{binary} exited during start"
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{binary} not ready within 60 s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ingest_url(tmp_path_factory):
    prefix = f"st{uuid.uuid4().hex[:12]}."
    registry_port, metrics_port, ingest_port = free_port(), free_port(), free_port()
    registry, registry_url = start(
        "pulse-registry",
        dict(
            os.environ,
            PULSE_REGISTRY_LISTEN=f"127.0.0.1:{registry_port}",
            PULSE_REGISTRY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
            PULSE_REGISTRY_TOPIC=f"{prefix}_schemas",
        ),
        registry_port,
    )
    credentials = tmp_path_factory.mktemp("ingest") / "credentials.toml"
    credentials.write_text(
        "[[api_keys]]\nname = \"schemathesis\"\ntenant = \"acme\"\n"
        f"sha256 = \"{hashlib.sha256(KEY.encode()).hexdigest()}\"\n"
        "events_per_second = 1000000\nburst = 1000000\n"
    )
    ingest, url = start(
        "pulse-ingest",
        dict(
            os.environ,
            PULSE_INGEST_LISTEN=f"127.0.0.1:{ingest_port}",
            PULSE_TOPIC_PREFIX=prefix,
            PULSE_REGISTRY_URL=registry_url,
            PULSE_INGEST_CREDENTIALS=str(credentials),
            # Event times bounded only by the contract: the gateway's own
            # window moves with its clock between the document and a request.
            PULSE_INGEST_MAX_EVENT_AGE_S="0",
            PULSE_INGEST_MAX_CLOCK_SKEW_S="0",
        ),
        ingest_port,
    )
    yield url
    for proc in (ingest, registry):
        proc.terminate()
        assert proc.wait(timeout=30) == 0, "did not shut down cleanly"


def test_schemathesis_finds_nothing(ingest_url):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis), "run", f"{ingest_url}/openapi.json",
            "--checks", "all", "--max-examples", "150", "--seed", "20261201",
            "-H", f"Authorization: Bearer {KEY}",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout, run.stdout[-3000:]

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
