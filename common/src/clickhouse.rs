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
