"""docker-compose.kafka.yml runs every service docs/operations.md lists, with pinned
image versions."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def readme_services():
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Running with Docker", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))


def test_compose_runs_every_service_the_readme_lists():
    compose = yaml.safe_load((REPO / "docker-compose.kafka.yml").read_text())
    listed = readme_services()
    assert {"kafka", "registry", "clickhouse", "mosquitto", "ingest", "processor", "query-api"} <= listed
    assert set(compose["services"]) == listed


def test_compose_images_are_pinned():
    compose = yaml.safe_load((REPO / "docker-compose.kafka.yml").read_text())
    dockerfile = (REPO / "Dockerfile").read_text()
    for name, svc in compose["services"].items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert re.match(r"^\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a version"
        if "build" in svc:
            assert f"AS {svc['build']['target']}\n" in dockerfile, f"{name}: no Dockerfile target {svc['build']['target']}"
        for dep in svc.get("depends_on", {}):
            assert dep in compose["services"], f"{name} depends on unknown {dep}"
