"""What the Python tests share: Pulse's own binaries, each started on a free
loopback port, waited for on `/readyz`, and at the end stopped with SIGTERM,
after which it must exit 0 (a clean drain)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    """The binaries one test module started, stopped together."""

    def __init__(self):
        self.running = []

    free_port = staticmethod(free_port)

    def start(self, binary, port, ready_within=60, **settings):
        """Starts `binary` from `$PULSE_BIN_DIR` with the environment plus
        `settings`, and returns its URL on `port` once `/readyz` is 200."""
        proc = subprocess.Popen(
            [os.path.join(os.environ["PULSE_BIN_DIR"], binary)],
            env=dict(os.environ, **settings),
        )
        self.running.append((binary, proc))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_within
        while True:
            assert proc.poll() is None, f"{binary} exited during start"
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return url
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"{binary} not ready within {ready_within} s"
            time.sleep(0.1)

    def stop_all(self):
        for _, proc in self.running:
            proc.terminate()
        for binary, proc in reversed(self.running):
            assert proc.wait(timeout=30) == 0, f"{binary} did not shut down cleanly"
        self.running.clear()


@pytest.fixture(scope="module")
def services():
    started = Services()
    yield started
    started.stop_all()


@pytest.fixture(scope="session")
def schemathesis():
    """Runs Schemathesis with every check and a fixed seed against the
    OpenAPI document at `url`, authenticated with `credential`, and asserts
    that it found nothing."""

    def run(url, credential, max_examples=150, seed=20261201, exclude_paths=(), config=None):
        """`config`, if given, is the path of a schemathesis.toml (known ids
        for path parameters, so that the fuzzer reaches more than 404s)."""
        binary = Path(sys.executable).with_name("schemathesis")
        done = subprocess.run(
            [
                str(binary), *(("--config-file", str(config)) if config else ()),
                "run", url, "--checks", "all",
                "--max-examples", str(max_examples), "--seed", str(seed),
                "-H", f"Authorization: Bearer {credential}",
                *(arg for path in exclude_paths for arg in ("--exclude-path", path)),
            ],
            capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert "No issues found" in done.stdout, done.stdout[-3000:]
        # How many cases it ran, for `pytest -s`.
        print(url, next((l.strip() for l in done.stdout.splitlines() if "generated" in l), ""))

    return run
