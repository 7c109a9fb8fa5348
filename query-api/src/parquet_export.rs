//! Parquet export: ClickHouse's NDJSON rows re-encoded as a Parquet file
//! while they stream. Rows are decoded into Arrow batches and written in row
//! groups of `ROW_GROUP` rows; each finished row group goes to the client at
//! once, so memory holds about one row group whatever the export's size.

use std::sync::Arc;

use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use axum::body::Bytes;
use futures::{Stream, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;

/// Rows per row group: large enough for good compression, small enough
/// that the API holds little of an export at a time.
const ROW_GROUP: usize = 32 * 1024;
/// Rows per Arrow batch decoded from the NDJSON.
const BATCH: usize = 8 * 1024;

/// The columns of `export_events.sql`, typed.
pub fn schema() -> SchemaRef {
    let strings = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    let floats = || DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    Arc::new(Schema::new(vec![
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("event_time_ms", DataType::Int64, false),
        Field::new("reading_names", strings(), false),
        Field::new("reading_values", floats(), false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("properties_json", DataType::Utf8, false),
        Field::new("firmware_version", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("is_anomaly", DataType::UInt8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("device_seq", DataType::UInt64, false),
        Field::new("feature_names", strings(), false),
        Field::new("feature_values", floats(), false),
    ]))
}

type Chunk = Result<Bytes, std::io::Error>;

/// `ndjson`, an export's rows as ClickHouse's JSONEachRow (64-bit integers
/// unquoted), as the bytes of a Parquet file.
pub fn from_ndjson<S, E>(ndjson: S) -> impl Stream<Item = Chunk>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    // Two row groups in flight at most: a slow client holds the export back.
    let (tx, rx) = mpsc::channel::<Chunk>(2);
    tokio::spawn(async move {
        if let Err(e) = encode(ndjson, &tx).await {
            tracing::warn!(error = %e, "Parquet export cut short");
            let _ = tx.send(Err(e)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

async fn encode<S, E>(mut ndjson: S, tx: &mpsc::Sender<Chunk>) -> Result<(), std::io::Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let schema = schema();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH)
        .build_decoder()
        .map_err(io_error)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(io_error)?;
    while let Some(chunk) = ndjson.next().await {
        let chunk = chunk.map_err(io_error)?;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let used = decoder.decode(rest).map_err(io_error)?;
            rest = &rest[used..];
            // The decoder stops short only when its batch is full (and
            // never part way through a row, which flush would refuse).
            if !rest.is_empty() {
                write_batch(&mut decoder, &mut writer)?;
                send_written(&mut writer, tx).await?;
            }
        }
    }
    write_batch(&mut decoder, &mut writer)?;
    writer.finish().map_err(io_error)?;
    send_written(&mut writer, tx).await
}

fn write_batch(
    decoder: &mut Decoder,
    writer: &mut ArrowWriter<Vec<u8>>,
) -> Result<(), std::io::Error> {
    if let Some(batch) = decoder.flush().map_err(io_error)? {
        writer.write(&batch).map_err(io_error)?;
    }
    Ok(())
}

/// Sends what the writer has put out so far (whole row groups, then the
/// footer). Taking the bytes leaves the writer's own count of the file's
/// length, which the footer's offsets use, as it is.
async fn send_written(
    writer: &mut ArrowWriter<Vec<u8>>,
    tx: &mpsc::Sender<Chunk>,
) -> Result<(), std::io::Error> {
    let written = std::mem::take(writer.inner_mut());
    if written.is_empty() {
        return Ok(());
    }
    tx.send(Ok(Bytes::from(written)))
        .await
        .map_err(|_| io_error("the client went away"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn line(i: u64) -> String {
        format!(
            r#"{{"tenant_id":"acme","source_id":"d{}","event_id":"e{i}","kind":"telemetry","event_time_ms":{},"reading_names":["temperature_c"],"reading_values":[{}],"event_type":"","properties_json":"{{}}","firmware_version":"","score":0.5,"is_anomaly":0,"model_version":"m","device_seq":{i},"feature_names":[],"feature_values":[]}}"#,
            i % 7,
            1_763_856_000_000 + i,
            20.0 + i as f64 / 10.0
        ) + "\n"
    }

    #[tokio::test]
    async fn rows_split_anywhere_become_one_readable_file() {
        let text: String = (0..70_000).map(line).collect();
        // Chunks of an awkward size, splitting rows mid-way.
        let chunks: Vec<Result<Bytes, std::io::Error>> = text
            .as_bytes()
            .chunks(7_777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let parts: Vec<Chunk> = from_ndjson(futures::stream::iter(chunks)).collect().await;
        assert!(
            parts.len() >= 3,
            "{} parts: row groups are not streamed: {:?}",
            parts.len(),
            parts.iter().find(|p| p.is_err())
        );
        let file: Vec<u8> = parts
            .into_iter()
            .flat_map(|p| p.map(|b| b.to_vec()).unwrap_or_default())
            .collect();
        let reader = SerializedFileReader::new(Bytes::from(file)).expect("a Parquet file");
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 70_000);
        assert_eq!(meta.num_row_groups(), 3);
        let fields: Vec<String> = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        assert!(fields.contains(&"event_time_ms".to_string()), "{fields:?}");
    }

    #[tokio::test]
    async fn a_bad_row_ends_the_file_with_an_error() {
        let chunks = vec![Ok::<_, std::io::Error>(Bytes::from(
            line(1) + "{\"tenant_id\": 5}\n",
        ))];
        let parts: Vec<Chunk> = from_ndjson(futures::stream::iter(chunks)).collect().await;
        assert!(parts.last().is_some_and(|p| p.is_err()), "{parts:?}");
    }
}
