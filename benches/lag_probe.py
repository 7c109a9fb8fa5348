"""Measures, while a steady load runs, how long events take from their event
time to (a) a row visible in ClickHouse and (b) a result on the results
topic. Rows are found by polling ClickHouse for rows newer than the last
poll, so (a) is an upper bound with the poll interval as resolution; results
are timed as they arrive (read_committed, so only committed results count).

    python benches/lag_probe.py --seconds 70 --skip-s 10 ...
"""

import argparse
import json
import threading
import time
import urllib.parse
import urllib.request

from confluent_kafka import Consumer


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(len(values) * p + 0.5) - 1))]


def poll_clickhouse(args, stop, lags, since_ms):
    last = 0
    url = f"{args.clickhouse}/?database={urllib.parse.quote(args.database)}"
    while not stop.is_set():
        sql = f"SELECT processed_ms, event_time_ms FROM events WHERE processed_ms > {last} FORMAT TSV"
        try:
            with urllib.request.urlopen(url, data=sql.encode(), timeout=10) as r:
                body = r.read().decode()
        except Exception:  # the table may not exist yet
            body = ""
        seen = time.time() * 1000
        for line in body.splitlines():
            processed, event_time = map(int, line.split("\t"))
            last = max(last, processed)
            if event_time >= since_ms:
                lags.append(seen - event_time)
        time.sleep(args.interval_ms / 1000)


def consume_results(args, stop, lags, since_ms):
    c = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"lag-probe-{time.time_ns()}",
            "auto.offset.reset": "latest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([args.results_topic])
    while not stop.is_set():
        for m in c.consume(num_messages=1000, timeout=0.1):
            if m.error():
                continue
            now = time.time() * 1000
            event_time = json.loads(m.value())["event_time_ms"]
            if event_time >= since_ms:
                lags.append(now - event_time)
    c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--results-topic", required=True)
    p.add_argument("--clickhouse", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--skip-s", type=float, default=10, help="warm-up not measured")
    p.add_argument("--interval-ms", type=float, default=50)
    args = p.parse_args()
    since_ms = time.time() * 1000 + args.skip_s * 1000
    stop = threading.Event()
    ch, results = [], []
    threads = [
        threading.Thread(target=poll_clickhouse, args=(args, stop, ch, since_ms)),
        threading.Thread(target=consume_results, args=(args, stop, results, since_ms)),
    ]
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    out = {
        name: {"events": len(v), "p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99), "max_ms": max(v, default=0)}
        for name, v in [("clickhouse_visible", ch), ("results_topic", results)]
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
