"""The Python reference pipeline Pulse's processor is measured against.

It does the processor's work the way a team would glue it together from the
usual Python parts: confluent-kafka to consume Avro events in the Confluent
wire format, fastavro to decode them (writer schemas fetched from the
registry by id), the same per-device rolling features and retry dedup,
onnxruntime to score each batch with the same model, clickhouse-connect to
insert the rows into the same table layout, and the scored events published
as JSON on a results topic before the consumer offsets are committed.

It gives up what the processor guarantees: no transactions, so a crash
between insert and commit stores a batch twice.

    python benches/reference/pipeline.py --topic PREFIX.telemetry --events N ...
"""

import argparse
import dataclasses
import io
import json
import resource
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import clickhouse_connect
import fastavro
import numpy as np
import onnxruntime as ort
from clickhouse_connect.driver import client as cc_client
from clickhouse_connect.driver._backend import orchestration
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "processor/model"))
from features import Device  # noqa: E402  the processor's own feature definitions

COLUMNS = {
    "tenant_id": "String",
    "source_id": "String",
    "event_id": "String",
    "kind": "String",
    "event_time": "DateTime('UTC')",
    "event_time_ms": "Int64",
    "schema_id": "UInt32",
    "reading_names": "Array(String)",
    "reading_values": "Array(Float64)",
    "event_type": "String",
    "properties_json": "String",
    "firmware_version": "String",
    "score": "Float32",
    "is_anomaly": "UInt8",
    "model_version": "String",
    "processed_ms": "Int64",
    "source_topic": "String",
    "source_partition": "Int32",
    "source_offset": "Int64",
    "device_seq": "UInt64",
    "feature_names": "Array(String)",
    "feature_values": "Array(Float64)",
}


def clickhouse_18_compatible():
    """clickhouse-connect reads system.settings.readonly when it connects; the
    ClickHouse 18.16 server used here has no such column, so that one query
    asks for a constant instead."""
    execute = cc_client.Client._execute_operation

    def patched(self, op):
        if isinstance(op, orchestration.QueryOp) and "readonly FROM system.settings" in op.text:
            op = dataclasses.replace(
                op, text="SELECT name, value, 0 AS readonly FROM system.settings LIMIT 10000"
            )
        return execute(self, op)

    cc_client.Client._execute_operation = patched


class Pipeline:
    def __init__(self, args):
        self.args = args
        self.schemas = {}
        self.devices = {}
        self.session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.features = meta["features"].split(",")
        self.threshold = float(meta["threshold"])
        self.model_version = meta.get("model_version", "unknown")
        clickhouse_18_compatible()
        self.ch = clickhouse_connect.get_client(
            host=args.clickhouse_host, port=args.clickhouse_port, compress=False
        )
        self.ch.command(f"CREATE DATABASE IF NOT EXISTS {args.database}")
        for ddl in sorted((ROOT / "schemas/clickhouse").glob("0*.sql")):
            self.ch.command(ddl.read_text().replace("{db}", args.database))
        self.consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": args.group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        # The processor's producer settings (its default compression included),
        # so that both hand the broker the same work.
        self.producer = Producer(
            {
                "bootstrap.servers": args.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )

    def schema(self, schema_id):
        if schema_id not in self.schemas:
            url = f"{self.args.registry}/schemas/ids/{schema_id}"
            with urllib.request.urlopen(url, timeout=10) as r:
                text = json.load(r)["schema"]
            self.schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        return self.schemas[schema_id]

    def run(self):
        self.consumer.subscribe([self.args.topic])
        stored = 0
        while stored < self.args.events:
            messages = self.consumer.consume(num_messages=self.args.batch, timeout=0.05)
            messages = [m for m in messages if m.error() is None]
            if messages:
                stored += self.process(messages)
        return stored

    def process(self, messages):
        events = []
        for m in messages:
            payload = m.value()
            schema_id = int.from_bytes(payload[1:5], "big")
            record = fastavro.schemaless_reader(io.BytesIO(payload[5:]), self.schema(schema_id))
            t = record["event_time"]
            t_ms = int(t.timestamp() * 1000) if isinstance(t, datetime) else int(t)
            device = self.devices.setdefault((record["tenant_id"], record["source_id"]), Device())
            readings = record.get("readings") or {}
            features = device.observe(str(record["event_id"]), t_ms, readings)
            if features is not None:
                events.append((m, schema_id, record, t_ms, readings, features, device.seq))
        x = np.array(
            [
                [r.get(f, f_.get(f, np.nan)) for f in self.features]
                for (_, _, _, _, r, f_, _) in events
            ],
            dtype=np.float32,
        ).reshape(len(events), len(self.features))
        scores = self.session.run(["score"], {"features": x})[0] if events else []
        processed_ms = int(time.time() * 1000)
        rows = []
        for (m, schema_id, rec, t_ms, readings, features, seq), score in zip(events, scores):
            kept = {k: v for k, v in sorted(features.items()) if v == v}
            row = {
                "tenant_id": rec["tenant_id"],
                "source_id": rec["source_id"],
                "event_id": str(rec["event_id"]),
                "kind": "telemetry",
                "event_time": datetime.fromtimestamp(t_ms // 1000, tz=timezone.utc),
                "event_time_ms": t_ms,
                "schema_id": schema_id,
                "reading_names": list(readings),
                "reading_values": list(readings.values()),
                "event_type": "",
                "properties_json": "{}",
                "firmware_version": rec.get("firmware_version") or "",
                "score": float(score),
                "is_anomaly": int(score > self.threshold),
                "model_version": self.model_version,
                "processed_ms": processed_ms,
                "source_topic": m.topic(),
                "source_partition": m.partition(),
                "source_offset": m.offset(),
                "device_seq": seq,
                "feature_names": list(kept),
                "feature_values": list(kept.values()),
            }
            rows.append(row)
        if rows:
            self.ch.insert(
                f"{self.args.database}.events",
                [list(r.values()) for r in rows],
                column_names=list(COLUMNS),
                column_type_names=list(COLUMNS.values()),
            )
            for r in rows:
                result = dict(r, event_time=r["event_time_ms"] // 1000)
                self.producer.produce(
                    self.args.results_topic,
                    key=f"{r['tenant_id']}/{r['source_id']}",
                    value=json.dumps(result),
                )
                self.producer.poll(0)
            self.producer.flush()
        self.consumer.commit(asynchronous=False)
        return len(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--results-topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--clickhouse-host", default="127.0.0.1")
    p.add_argument("--clickhouse-port", type=int, default=18123)
    p.add_argument("--model", default=str(ROOT / "processor/model/anomaly.onnx"))
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args()
    started = time.monotonic()
    stored = Pipeline(args).run()
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "events": stored,
                "seconds": seconds,
                "events_per_second": stored / seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
