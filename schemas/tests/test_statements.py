"""Every ClickHouse statement Pulse issues runs on both ClickHouse versions.

The processor's migrations (schemas/clickhouse/0*.sql), the query API's
audit table (schemas/clickhouse/audit.sql) and the statements of
schemas/clickhouse/queries/ are run in order on the local ClickHouse server
(18.16) and in-process on current ClickHouse (chdb-core, 26.9), in a fresh
database each, with the example values each query file gives in its
`-- params:` line bound in place of its `?`. Sample events are inserted
first, so the queries return rows, and both versions must return the same
rows.
"""

import json
import os
import re
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import chdb.session
import pytest

SCHEMAS = Path(__file__).resolve().parent.parent / "clickhouse"
QUERIES = SCHEMAS / "queries"
SERVER = os.environ.get("PULSE_CLICKHOUSE_URL", "http://127.0.0.1:18123")

# The order migrations.rs applies them in.
SETUP = ["create_database", "schema_migrations_table"]

SAMPLE_EVENTS = [
    {
        "tenant_id": "acme",
        "source_id": "device-00001",
        "event_id": "6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11",
        "kind": "telemetry",
        "event_time": 1_763_856_000,
        "event_time_ms": 1_763_856_000_123,
        "schema_id": 1,
        "reading_names": ["temperature_c"],
        "reading_values": [21.5],
        "event_type": "",
        "properties_json": "{}",
        "firmware_version": "",
        "score": 0.25,
        "is_anomaly": 1,
        "model_version": "pca-ae-1",
        "processed_ms": 1_763_856_000_500,
        "source_topic": "pulse.telemetry",
        "source_partition": 0,
        "source_offset": 41,
        "device_seq": 1,
        "feature_names": ["temperature_c.ewma"],
        "feature_values": [21.5],
    },
    {
        "tenant_id": "acme",
        "source_id": "device-00002",
        "event_id": "0b0e2f5e-9b44-4c7a-8d43-2d1f3c4b5a69",
        "kind": "telemetry",
        "event_time": 1_763_856_001,
        "event_time_ms": 1_763_856_001_000,
        "schema_id": 2,
        "reading_names": ["temperature_c", "battery_v"],
        "reading_values": [19.0, 3.9],
        "event_type": "",
        "properties_json": "{}",
        "firmware_version": "2.1.0",
        "score": 0.01,
        "is_anomaly": 0,
        "model_version": "pca-ae-1",
        "processed_ms": 1_763_856_001_200,
        "source_topic": "pulse.telemetry",
        "source_partition": 0,
        "source_offset": 42,
        "device_seq": 7,
        "feature_names": [],
        "feature_values": [],
    },
]


def migrations():
    return sorted(SCHEMAS.glob("0*.sql"))


def queries():
    return sorted(p for p in QUERIES.glob("*.sql") if p.stem not in SETUP)


def bind(path: Path, db: str) -> str:
    """The statement of `path` for database `db` with its example values bound."""
    text = path.read_text()
    params = []
    for line in text.splitlines():
        m = re.match(r"--\s*params:\s*(.*)$", line)
        if m:
            params = [p.strip() for p in m.group(1).split(",")]
    body = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("--"))
    body = body.replace("{db}", db).replace("?fields", "*")
    holes = body.count("?")
    assert holes == len(params), f"{path.name}: {holes} placeholders, {len(params)} params"
    for p in params:
        body = body.replace("?", p, 1)
    return body


class Server:
    """The local ClickHouse server, over its HTTP interface."""

    def __init__(self, db):
        self.db = db

    def run(self, sql, database=None):
        params = {"query": sql}
        if database:
            params["database"] = database
        url = SERVER + "/?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"server rejected: {sql}\n{e.read().decode()}") from e


class Chdb:
    """Current ClickHouse, in process."""

    def __init__(self, path):
        self.session = chdb.session.Session(str(path))

    def run(self, sql, database=None):
        if database:
            self.session.query(f"USE {database}")
        try:
            return str(self.session.query(sql, "TabSeparated"))
        except Exception as e:  # chdb raises its own error type
            raise AssertionError(f"chdb rejected: {sql}\n{e}") from e


def set_up(engine, db):
    for name in SETUP:
        engine.run(bind(QUERIES / f"{name}.sql", db))
    for m in migrations():
        engine.run(m.read_text().replace("{db}", db))
    # The query API's own table, which it creates at start-up.
    engine.run((SCHEMAS / "audit.sql").read_text().replace("{db}", db))
    engine.run((SCHEMAS / "jobs.sql").read_text().replace("{db}", db))
    engine.run((SCHEMAS / "schedules.sql").read_text().replace("{db}", db))
    engine.run((SCHEMAS / "ocr_reads.sql").read_text().replace("{db}", db))
    rows = "\n".join(json.dumps(e) for e in SAMPLE_EVENTS)
    # Listing the columns, as the processor does, makes 18.16 compute the
    # DEFAULT ones (event_date) instead of zero-filling them.
    columns = ", ".join(SAMPLE_EVENTS[0])
    engine.run(f"INSERT INTO {db}.events ({columns}) FORMAT JSONEachRow\n{rows}")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    db = "stmt_" + uuid.uuid4().hex[:12]
    server = Server(db)
    local = Chdb(tmp_path_factory.mktemp("chdb"))
    for e in (server, local):
        set_up(e, db)
    yield db, server, local
    server.run(f"DROP DATABASE IF EXISTS {db}")


# Where each service names the statements it sends: the processor its
# migrations' and stored offsets', the query API the rest.
CATALOGS = [
    "processor/src/sink/migrations.rs",
    "processor/src/sink/delivery.rs",
    "query-api/src/sql.rs",
    "common/src/jobs/ledger.rs",
    "common/src/jobs/reads.rs",
    "worker/src/report.rs",
]


def test_every_statement_file_is_used_by_the_code():
    root = Path(__file__).resolve().parents[2]
    catalog = "".join((root / c).read_text() for c in CATALOGS)
    for p in list(QUERIES.glob("*.sql")) + [SCHEMAS / "audit.sql", SCHEMAS / "jobs.sql", SCHEMAS / "schedules.sql", SCHEMAS / "ocr_reads.sql"]:
        assert f'statement!("{p.stem}")' in catalog or f'/{p.name}")' in catalog, f"{p.name} is in none of {CATALOGS}"


def test_code_sends_no_sql_outside_the_catalog():
    root = Path(__file__).resolve().parents[2]
    inline = re.compile(r'\.query\(\s*(&format!\(|")')
    offenders = [
        str(p.relative_to(root))
        for crate in ("common", "ingest", "processor", "query-api", "worker")
        for p in (root / crate / "src").rglob("*.rs")
        if p.name != "testkit.rs" and inline.search(p.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize("path", queries(), ids=lambda p: p.stem)
def test_query_runs_alike_on_both_versions(engines, path):
    db, server, local = engines
    sql = bind(path, db)
    if sql.lstrip().upper().startswith("INSERT"):
        # Written to both; the read below must then agree.
        server.run(sql, db)
        local.run(sql, db)
        sql = f"SELECT count() FROM {db}.schema_migrations"
    assert server.run(sql, db) == local.run(sql, db)


def test_queries_see_the_sample_rows(engines):
    db, server, local = engines
    sql = bind(QUERIES / "events_page.sql", db)
    for engine in (server, local):
        out = engine.run(sql, db)
        ids = [line.split("\t")[2] for line in out.splitlines()]
        assert ids == [SAMPLE_EVENTS[1]["event_id"], SAMPLE_EVENTS[0]["event_id"]]


def test_rollup_view_agrees(engines):
    db, server, local = engines
    sql = (
        f"SELECT source_id, countMerge(events), sumMerge(anomalies), maxMerge(score_max) "
        f"FROM {db}.device_minute GROUP BY tenant_id, source_id ORDER BY source_id"
    )
    expected = "device-00001\t1\t1\t0.25\ndevice-00002\t1\t0\t0.01\n"
    assert server.run(sql) == expected
    assert local.run(sql) == expected
