//! ClickHouse client construction, and what its errors mean.

use crate::config::ClickHouseArgs;

/// A client that works against ClickHouse 18.16 as well as current releases.
///
/// Validation is off because it relies on RowBinaryWithNamesAndTypes, which
/// old servers lack. `wait_end_of_query` makes the server buffer the result,
/// so an error raised mid-query comes back as an HTTP error instead of being
/// decoded as rows.
pub fn client(args: &ClickHouseArgs) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&args.url)
        .with_user(&args.user)
        .with_password(&args.password)
        .with_database(&args.database)
        .with_compression(clickhouse::Compression::None)
        .with_validation(false)
        .with_setting("wait_end_of_query", "1")
}

/// `statement` for database `db`: the statements Pulse ships name their
/// database `{db}`.
pub fn in_database(statement: &str, db: &str) -> String {
    statement.replace("{db}", db)
}

/// Rewrites a single-server statement for a replicated cluster: the DDL runs
/// ON CLUSTER and MergeTree-family engines become their Replicated kind, with
/// the Keeper path and replica name taken from the servers' macros.
pub fn for_cluster(statement: &str, cluster: Option<&str>) -> String {
    let Some(cluster) = cluster else {
        return statement.to_string();
    };
    let mut out = String::with_capacity(statement.len() + 128);
    let mut rest = statement;
    // ON CLUSTER goes right after the created object's name.
    for keyword in [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE DATABASE IF NOT EXISTS ",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS ",
        "ALTER TABLE ",
    ] {
        if let Some(start) = rest.find(keyword) {
            let name_start = start + keyword.len();
            let name_len = rest[name_start..]
                .find(|c: char| c.is_whitespace() || c == '(')
                .unwrap_or(rest.len() - name_start);
            out.push_str(&rest[..name_start + name_len]);
            out.push_str(&format!(" ON CLUSTER '{cluster}'"));
            rest = &rest[name_start + name_len..];
            break;
        }
    }
    out.push_str(rest);
    let engine = "ENGINE = ";
    if let Some(pos) = out.find(engine) {
        let after = pos + engine.len();
        let name_end = out[after..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(out.len(), |i| after + i);
        let name = out[after..name_end].to_string();
        if name.ends_with("MergeTree") && !name.starts_with("Replicated") {
            let keeper = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'";
            let args = if out[name_end..].starts_with("()") || !out[name_end..].starts_with('(') {
                format!("({keeper})")
            } else {
                format!("({keeper}, ")
            };
            let skip = if out[name_end..].starts_with("()") {
                2
            } else if out[name_end..].starts_with('(') {
                1
            } else {
                0
            };
            out = format!(
                "{}Replicated{name}{args}{}",
                &out[..after],
                &out[name_end + skip..]
            );
        }
    }
    out
}

/// What a ClickHouse error means for whoever sent the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server is down, starting, overloaded or slow: try again later.
    Transient,
    /// The statement can never succeed as it is (an unknown column or
    /// table, a type mismatch, no permission): retrying changes nothing.
    Permanent,
    /// The query ran into one of the caller's own limits.
    Limit(Limit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// TIMEOUT_EXCEEDED (159): `max_execution_time`.
    Time,
    /// TOO_MANY_ROWS (158): `max_rows_to_read`.
    Rows,
}

/// Error codes of statements that cannot succeed however often they are
/// sent: the schema or the credentials are wrong. Codes a body cut short
/// in transit can also cause (CANNOT_READ_ALL_DATA, CANNOT_PARSE_INPUT_*,
/// INCORRECT_DATA) are left transient: retrying those costs a retry.
const PERMANENT: &[u32] = &[
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    70,  // CANNOT_CONVERT_TYPE
    81,  // UNKNOWN_DATABASE
    164, // READONLY
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// Classifies `e` once for every caller: the processor's sink stops on a
/// permanent error instead of retrying forever, the query API answers a
/// limit with 422 or 504 and anything else with 503. Anything not known to
/// be permanent is transient, so that an unfamiliar error costs retries,
/// never data.
pub fn classify(e: &clickhouse::error::Error) -> Failure {
    match e {
        clickhouse::error::Error::BadResponse(text) => match code(text) {
            Some(159) => Failure::Limit(Limit::Time),
            Some(158) => Failure::Limit(Limit::Rows),
            Some(c) if PERMANENT.contains(&c) => Failure::Permanent,
            _ => Failure::Transient,
        },
        _ => Failure::Transient,
    }
}

/// The ClickHouse error code of `e`, when the server answered with one.
pub fn error_code(e: &clickhouse::error::Error) -> Option<u32> {
    match e {
        clickhouse::error::Error::BadResponse(text) => code(text),
        _ => None,
    }
}

/// UNKNOWN_DATABASE: the database is not created yet.
pub const UNKNOWN_DATABASE: u32 = 81;

/// The `Code: N` ClickHouse puts in every error text, old servers and new.
fn code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_server_statements_are_unchanged() {
        let sql = "CREATE TABLE IF NOT EXISTS pulse.t (a UInt8) ENGINE = MergeTree ORDER BY a";
        assert_eq!(for_cluster(sql, None), sql);
    }

    #[test]
    fn cluster_statements_run_on_cluster_with_replicated_engines() {
        assert_eq!(
            for_cluster(
                "CREATE TABLE IF NOT EXISTS pulse.events\n(a UInt8)\nENGINE = ReplacingMergeTree(processed_ms)\nORDER BY a",
                Some("pulse")
            ),
            "CREATE TABLE IF NOT EXISTS pulse.events ON CLUSTER 'pulse'\n(a UInt8)\nENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', processed_ms)\nORDER BY a"
        );
        assert_eq!(
            for_cluster("CREATE TABLE IF NOT EXISTS d.m (v UInt32) ENGINE = MergeTree ORDER BY v", Some("c")),
            "CREATE TABLE IF NOT EXISTS d.m ON CLUSTER 'c' (v UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}') ORDER BY v"
        );
        assert_eq!(
            for_cluster("CREATE DATABASE IF NOT EXISTS pulse", Some("c")),
            "CREATE DATABASE IF NOT EXISTS pulse ON CLUSTER 'c'"
        );
    }

    fn bad(text: &str) -> clickhouse::error::Error {
        clickhouse::error::Error::BadResponse(text.into())
    }

    #[test]
    fn errors_are_told_apart_on_old_and_current_servers() {
        let cases = [
            // ClickHouse 18.16's wording.
            ("Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 1.2 seconds, maximum: 1", Failure::Limit(Limit::Time)),
            ("Code: 158, e.displayText() = DB::Exception: Limit for rows to read exceeded", Failure::Limit(Limit::Rows)),
            ("Code: 16, e.displayText() = DB::Exception: No such column score in table db.events", Failure::Permanent),
            // Current servers'.
            ("Code: 60. DB::Exception: Table db.events does not exist. (UNKNOWN_TABLE)", Failure::Permanent),
            ("Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)", Failure::Permanent),
            ("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)", Failure::Transient),
            ("Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)", Failure::Transient),
            ("502 Bad Gateway", Failure::Transient),
            // As a body cut short in transit can leave it.
            ("Code: 33. DB::Exception: Cannot read all data. (CANNOT_READ_ALL_DATA)", Failure::Transient),
        ];
        for (text, expected) in cases {
            assert_eq!(classify(&bad(text)), expected, "{text}");
        }
        assert_eq!(code("Code: 1590, x"), Some(1590));
        assert_eq!(
            classify(&clickhouse::error::Error::Network("refused".into())),
            Failure::Transient
        );
    }
}
