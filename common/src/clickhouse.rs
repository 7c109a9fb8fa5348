//! ClickHouse client construction.

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
