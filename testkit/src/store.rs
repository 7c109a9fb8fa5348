//! ClickHouse as the tests read it: a client of a database, and what
//! the events table holds.

/// A ClickHouse client of `database` on the server at `url`.
pub fn clickhouse(url: &str, database: &str) -> clickhouse::Client {
    pulse_common::clickhouse::client(&pulse_common::config::ClickHouseArgs {
        url: url.to_string(),
        database: database.to_string(),
        user: "default".into(),
        password: String::new(),
        cluster: None,
    })
}

/// `count()` and `uniqExact(event_id)` of the events table.
pub async fn event_counts(client: &clickhouse::Client) -> Option<(u64, u64)> {
    client
        .query("SELECT count(), uniqExact(event_id) FROM events")
        .fetch_one::<(u64, u64)>()
        .await
        .ok()
}

/// Devices in the events table, and how many of them have a sequence that
/// is not exactly 1..n (a number repeated or skipped: state lost or an
/// event counted twice).
pub async fn device_sequences(client: &clickhouse::Client) -> Option<(u64, u64)> {
    client
        .query(
            "SELECT count(), countIf(top != n OR distinct_seqs != n) FROM \
             (SELECT tenant_id, source_id, max(device_seq) AS top, count() AS n, \
                     uniqExact(device_seq) AS distinct_seqs \
              FROM events GROUP BY tenant_id, source_id)",
        )
        .fetch_one::<(u64, u64)>()
        .await
        .ok()
}
