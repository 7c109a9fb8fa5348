//! Streaming export of a tenant's events as CSV or NDJSON. ClickHouse
//! formats the rows and the API passes its response through chunk by chunk,
//! so an export of any size holds only a few chunks in the API's memory.
//! The rows are counted as they pass, for the audit trail, which records an
//! export once its stream has ended. CSV text cells that would read as a
//! spreadsheet formula get a leading `'` (`crate::csv_guard`).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::oneshot;
use utoipa::IntoParams;

use crate::audit::{Ending, RowsLater, Streamed};
use crate::{csv_guard, parquet_export};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Params, Reader};
use crate::routes::range_of;
use crate::store::EventStore;

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated, with a header row; text cells that begin like a
    /// spreadsheet formula (`=`, `+`, `-`, `@`, tab, carriage return) begin
    /// with `'`, numbers never.
    #[default]
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// An Apache Parquet file (Snappy-compressed row groups of 32,768 rows).
    Parquet,
}

impl Format {
    /// ClickHouse's name for the format.
    fn clickhouse(self) -> &'static str {
        match self {
            Format::Csv => "CSVWithNames",
            Format::Ndjson | Format::Parquet => "JSONEachRow",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now). A range that ends before it starts is empty.
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    to_ms: Option<i64>,
    /// Only this source (device).
    source_id: Option<String>,
    /// `csv` (default), `ndjson` or `parquet`.
    format: Option<Format>,
}

/// The caller's tenant's events in a time range, oldest first, streamed as
/// CSV, NDJSON or Parquet however large.
#[utoipa::path(get, path = "/v1/export", tag = "events", params(ExportQuery),
    responses(
        (status = 200, description = "The events, streamed in the requested format",
            content(
                (String = "text/csv"),
                (String = "application/x-ndjson"),
                (String = "application/vnd.apache.parquet"),
            )),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn export(
    State(store): State<EventStore>,
    Reader(caller): Reader,
    Params(q): Params<ExportQuery>,
) -> Result<Response, ApiError> {
    let range = range_of(q.from_ms, q.to_ms)?;
    let format = q.format.unwrap_or_default();
    let rows = store.export(
        &caller.tenant,
        q.source_id.as_deref(),
        range,
        format.clickhouse(),
    )?;
    let filename = format!(
        "attachment; filename=\"events-{}-{}.{}\"",
        range.0,
        range.1,
        format.extension()
    );
    let (counted, rows_later) = Counted::new(rows, format);
    let body = match format {
        Format::Parquet => Body::from_stream(parquet_export::from_ndjson(counted)),
        Format::Csv => Body::from_stream(csv_guard::guarded(counted)),
        Format::Ndjson => Body::from_stream(counted),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        body,
    )
        .into_response();
    response.extensions_mut().insert(rows_later);
    Ok(response)
}

/// Counts the rows of CSV or NDJSON text fed to it in chunks of any size:
/// line ends outside quoted CSV fields (NDJSON escapes its line breaks).
#[derive(Debug, Default)]
struct RowCounter {
    csv: bool,
    in_quotes: bool,
    lines: u64,
}

impl RowCounter {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                // A doubled quote inside a field toggles twice: no change.
                b'"' if self.csv => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.lines += 1,
                _ => {}
            }
        }
    }

    /// Data rows: CSV's first line is the header.
    fn rows(&self) -> u64 {
        if self.csv {
            self.lines.saturating_sub(1)
        } else {
            self.lines
        }
    }
}

/// The export's byte stream, counting rows, and telling the count and how
/// the stream ended when it ends, fails, or is dropped unfinished (the
/// client went away).
struct Counted<S> {
    inner: S,
    counter: RowCounter,
    done: Option<oneshot::Sender<Streamed>>,
}

impl<S> Counted<S> {
    fn new(inner: S, format: Format) -> (Self, RowsLater) {
        let (tx, rx) = oneshot::channel();
        let counter = RowCounter {
            csv: matches!(format, Format::Csv),
            ..RowCounter::default()
        };
        let counted = Self {
            inner,
            counter,
            done: Some(tx),
        };
        (counted, RowsLater::new(rx))
    }

    fn finish(&mut self, ending: Ending) {
        if let Some(tx) = self.done.take() {
            let streamed = Streamed {
                rows: self.counter.rows(),
                ending,
            };
            // The audit middleware may be gone during shutdown; nothing to tell.
            let _ = tx.send(streamed);
        }
    }
}

impl<S, E> Stream for Counted<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => self.counter.feed(chunk),
            Poll::Ready(None) => self.finish(Ending::Complete),
            Poll::Ready(Some(Err(_))) => self.finish(Ending::Failed),
            Poll::Pending => {}
        }
        polled
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.finish(Ending::ClientGone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunk(text: &str) -> Result<Bytes, std::io::Error> {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }

    async fn told(rows: RowsLater) -> Streamed {
        rows.take_for_test().await.expect("told")
    }

    #[tokio::test]
    async fn an_export_tells_its_rows_and_how_it_ended() {
        let (counted, rows) = Counted::new(
            futures::stream::iter(vec![chunk("a\n1\n"), chunk("2\n")]),
            Format::Csv,
        );
        assert_eq!(counted.collect::<Vec<_>>().await.len(), 2);
        let complete = Streamed {
            rows: 2,
            ending: Ending::Complete,
        };
        assert_eq!(told(rows).await, complete);

        let failing = vec![
            chunk("{}\n"),
            Err(std::io::Error::other("ClickHouse went away")),
        ];
        let (counted, rows) = Counted::new(futures::stream::iter(failing), Format::Ndjson);
        assert_eq!(counted.collect::<Vec<_>>().await.len(), 2);
        let failed = Streamed {
            rows: 1,
            ending: Ending::Failed,
        };
        assert_eq!(told(rows).await, failed);

        let (mut counted, rows) = Counted::new(
            futures::stream::iter(vec![chunk("{}\n"), chunk("{}\n")]),
            Format::Ndjson,
        );
        assert!(counted.next().await.is_some());
        drop(counted);
        let gone = Streamed {
            rows: 1,
            ending: Ending::ClientGone,
        };
        assert_eq!(told(rows).await, gone);
    }

    fn count(csv: bool, chunks: &[&str]) -> u64 {
        let mut c = RowCounter {
            csv,
            ..RowCounter::default()
        };
        for chunk in chunks {
            c.feed(chunk.as_bytes());
        }
        c.rows()
    }

    #[test]
    fn rows_are_counted_across_chunks_and_quoted_line_breaks() {
        let csv = "\"id\",\"note\"\n\"a\",\"x\"\n\"b\",\"two\nlines \"\"quoted\"\"\"\n";
        for split in 0..csv.len() {
            assert_eq!(
                count(true, &[&csv[..split], &csv[split..]]),
                2,
                "split at {split}"
            );
        }
        assert_eq!(count(true, &["\"id\"\n"]), 0);
        assert_eq!(count(false, &["{\"a\":\"x\\ny\"}\n{\"a\"", ":1}\n"]), 2);
        assert_eq!(count(false, &[]), 0);
    }
}
