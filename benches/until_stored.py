"""Waits until a ClickHouse database's events table holds a number of rows.

    until_stored.py CLICKHOUSE_URL DATABASE EVENTS START

Prints the seconds from START (a Unix time) until then, and the rows/s from
the first rows seen until then: the pipeline's pace once it has started.
One process polling over one kept-alive connection: a shell loop starting
curl twenty times a second costs a fifth of a core, taken from the pipeline
it measures on a two-core machine.
"""

import http.client
import sys
import time
import urllib.parse

POLL_S = 0.05


def main() -> None:
    url, database, events, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    parsed = urllib.parse.urlsplit(url)
    path = f"/?database={urllib.parse.quote(database)}"
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 8123, timeout=10)
    first_at, first_rows = None, 0
    while True:
        rows = count(conn, path)
        if first_at is None and rows > 0:
            first_at, first_rows = time.time(), rows
        if rows >= events:
            break
        time.sleep(POLL_S)
    now = time.time()
    print(now - start, (events - first_rows) / max(now - first_at, 1e-9))


def count(conn: http.client.HTTPConnection, path: str) -> int:
    """The table's row count; 0 while the table does not exist yet."""
    try:
        conn.request("POST", path, body=b"SELECT count() FROM events")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0
    return int(body) if response.status == 200 else 0


if __name__ == "__main__":
    main()
