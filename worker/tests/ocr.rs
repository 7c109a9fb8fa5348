//! OCR jobs end to end: meter snapshots rendered with known text, stored
//! as a tenant's files, read by `pulse-worker` through the query API, each
//! meter value published as the camera's telemetry and stored by the
//! processor. Checks the text and value read, bad images failing with
//! their reasons while the worker goes on, another tenant seeing none of
//! it, archives read entry by entry within their limits, and a job of
//! 1,000 snapshots through three SIGKILLs reading each
//! snapshot once and storing each reading's event once. Run through
//! `./dev test`.

use std::path::Path;
use std::time::Duration;

use image::ImageFormat;
use pulse_common::files::{FileId, FileStore, StorageArgs, UploadLimits};
use pulse_testkit::meters::{encode, png_claiming, Kind, Renderer};
use pulse_testkit::query_api::Api;
use pulse_testkit::{
    free_port, poll_until, start_processor, start_registry, unique, Service, Stack,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;

mod shared;

use shared::{api_over, state, worker_with, Client};

const LIMITS: UploadLimits = UploadLimits {
    max_bytes: 64 << 20,
    tenant_quota_bytes: 1 << 40,
};

/// A registry and a processor of `api`'s topics, so that the readings a
/// worker publishes are stored as events, in a database of the
/// processor's own making (the API's was made without its migrations'
/// record); answers a client of it.
async fn pipeline_of(api: &Api) -> (Service, Service, clickhouse::Client) {
    let stack = Stack::from_env();
    let registry = start_registry(&stack, &api.topic_prefix).await;
    let database = unique("ocr_events_");
    let processor = start_processor(
        &stack,
        &api.topic_prefix,
        &registry.url,
        &database,
        free_port(),
        &[],
    )
    .await;
    let events = pulse_testkit::clickhouse(&stack.clickhouse_url, &database);
    (registry, processor, events)
}

/// `(count, distinct ids)` of `source`'s stored events, once `want`
/// distinct ids are there.
async fn stored_events(events: &clickhouse::Client, source: &str, want: u64) -> (u64, u64) {
    poll_until("the readings stored", Duration::from_secs(120), || async {
        let (count, ids): (u64, u64) = events
            .query("SELECT count(), uniqExact(event_id) FROM events FINAL WHERE tenant_id = 'acme' AND source_id = ?")
            .bind(source)
            .fetch_one()
            .await
            .ok()?;
        (ids == want).then_some((count, ids))
    })
    .await
}

async fn ocr_worker(
    api: &Api,
    objects: &Path,
    registry: &Service,
    extra: &[(&'static str, &str)],
) -> Service {
    let mut settings = vec![
        ("PULSE_OBJECT_STORE_URL", objects.display().to_string()),
        ("PULSE_REGISTRY_URL", registry.url.clone()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    worker_with(api, &unique("worker"), settings).await
}

fn store(objects: &Path) -> FileStore {
    FileStore::open(&StorageArgs {
        object_store_url: objects.display().to_string(),
    })
    .expect("store")
}

/// Stores `bytes` as `tenant`'s file of `content_type`; answers its id.
async fn upload(
    files: &FileStore,
    tenant: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Result<String, String> {
    let id = FileId::random();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    files
        .upload(tenant, &id, content_type, body, LIMITS)
        .await
        .map(|(meta, _)| meta.file_id)
        .map_err(|e| e.to_string())
}

/// The text of each line of a read, top first.
fn texts(read: &Value) -> Vec<&str> {
    read["lines"]
        .as_array()
        .map(|lines| lines.iter().filter_map(|l| l["text"].as_str()).collect())
        .unwrap_or_default()
}

fn ocr_job(source: &str, inputs: &[String]) -> Value {
    json!({"kind": "ocr", "params": {"source_id": source}, "inputs": inputs})
}

async fn ended(client: &Client, job_id: &str, within: Duration) -> Value {
    client
        .job_when(job_id, within, |j| {
            !matches!(state(j), "queued" | "running")
        })
        .await
}

async fn submit(client: &Client, body: &Value) -> String {
    let (status, queued) = client.submit(body, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    queued["job_id"].as_str().expect("job id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meter_snapshot_is_read_published_and_kept_from_other_tenants() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let api = api_over(&objects).await;
    let (registry, _processor, events) = pipeline_of(&api).await;
    let _worker = ocr_worker(
        &api,
        &objects,
        &registry,
        &[("PULSE_OCR_MAX_PIXELS", "2000000")],
    )
    .await;
    let files = store(&objects);
    let acme = Client::new(&api, "acme");
    let globex = Client::new(&api, "globex");

    let renderer = Renderer::from_env().expect("font");
    let mut rng = StdRng::seed_from_u64(21);
    let shot = renderer.render(&mut rng, Kind::Meter, 1280, 720);
    let jpeg = encode(&shot.image, ImageFormat::Jpeg).expect("jpeg");
    let snapshot = upload(&files, "acme", "image/jpeg", jpeg)
        .await
        .expect("stored");
    let job_id = submit(&acme, &ocr_job("cam-1", std::slice::from_ref(&snapshot))).await;
    let done = ended(&acme, &job_id, Duration::from_secs(120)).await;
    assert_eq!(state(&done), "succeeded", "{done}");

    // Every drawn line read exactly, and the reading as the value.
    let (status, reads) = acme.get(&format!("/v1/jobs/{job_id}/reads")).await;
    assert_eq!(status, StatusCode::OK, "{reads}");
    let read = &reads["reads"][0];
    assert_eq!(texts(read), shot.lines, "{read}");
    let expected: f64 = shot
        .reading
        .as_deref()
        .expect("a meter's reading")
        .parse()
        .expect("number");
    assert_eq!(read["value"].as_f64(), Some(expected), "{read}");
    assert_eq!(read["file_id"], snapshot.as_str());
    for line in read["lines"].as_array().expect("lines") {
        assert!(line["confidence"].as_f64() > Some(0.5), "{line}");
        let corners = line["box"].as_array().expect("box");
        assert_eq!(corners.len(), 4, "{line}");
    }
    // The job's file holds the same read.
    let file = done["result_file_id"].as_str().expect("result file");
    let (status, document) = acme.get(&format!("/v1/files/{file}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (document["snapshots"].as_u64(), document["failed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(document["reads"][0]["value"], read["value"]);
    // The reading is a telemetry event of the camera, stored once.
    let event_id = read["event_id"].as_str().expect("event id").to_string();
    assert_eq!(stored_events(&events, "cam-1", 1).await, (1, 1));
    let (stored_id, value): (String, f64) = events
        .query("SELECT event_id, reading_values[indexOf(reading_names, 'meter_value')] FROM events FINAL WHERE source_id = 'cam-1'")
        .fetch_one()
        .await
        .expect("the event");
    assert_eq!((stored_id.as_str(), value), (event_id.as_str(), expected));
    let (_, latest) = acme.get("/v1/snapshots").await;
    assert_eq!(
        latest["snapshots"][0]["file_id"],
        snapshot.as_str(),
        "{latest}"
    );

    // Another tenant: the job, its reads, its files and the snapshot are
    // no more to globex than ids that do not exist.
    for path in [
        format!("/v1/jobs/{job_id}"),
        format!("/v1/jobs/{job_id}/reads"),
        format!("/v1/files/{file}"),
        format!("/v1/files/{snapshot}"),
    ] {
        let (status, body) = globex.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, theirs) = globex.get("/v1/snapshots").await;
    assert_eq!(theirs["snapshots"], json!([]), "{theirs}");
    let (status, body) = globex
        .submit(&ocr_job("cam-1", std::slice::from_ref(&snapshot)), None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("inputs")),
        "{body}"
    );

    // Bad images: text passed off as a JPEG is refused when stored; each
    // other fails its job with its reason, and the worker goes on.
    let refused = upload(&files, "acme", "image/jpeg", b"METER 0042 kWh".to_vec()).await;
    assert!(refused.is_err(), "text stored as a JPEG: {refused:?}");
    let small = renderer.render(&mut rng, Kind::Nameplate, 960, 540);
    let png = encode(&small.image, ImageFormat::Png).expect("png");
    let jpeg = encode(&small.image, ImageFormat::Jpeg).expect("jpeg");
    let wide = renderer.render(&mut rng, Kind::Meter, 2000, 1100);
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("image/jpeg", jpeg[..jpeg.len() / 2].to_vec(), "truncated"),
        (
            "image/png",
            png_claiming(&png, 0, 0),
            "header cannot be read",
        ),
        (
            "image/png",
            png_claiming(&png, 60_000, 60_000),
            "60000x60000 (3600000000 pixels), over the limit",
        ),
        (
            "image/png",
            png_claiming(&png, 640, 480),
            "PNG cannot be decoded",
        ),
        (
            "image/png",
            encode(&wide.image, ImageFormat::Png).expect("png"),
            "2000x1100 (2200000 pixels), over the limit of 2000000",
        ),
        (
            "application/json",
            b"{\"meter\": 42}".to_vec(),
            "not a JPEG or PNG image",
        ),
    ];
    for (content_type, bytes, reason) in bad {
        let id = upload(&files, "acme", content_type, bytes)
            .await
            .expect("stored");
        let job = submit(&acme, &ocr_job("cam-1", &[id])).await;
        let failed = ended(&acme, &job, Duration::from_secs(60)).await;
        assert_eq!(state(&failed), "failed", "{failed}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{reason}: {error}");
    }
    // A marker job after them all: one good snapshot and one bad, read.
    let good = upload(&files, "acme", "image/png", png)
        .await
        .expect("stored");
    let broken = upload(
        &files,
        "acme",
        "image/png",
        png_claiming(
            &encode(&small.image, ImageFormat::Png).expect("png"),
            640,
            480,
        ),
    )
    .await
    .expect("stored");
    let marker = submit(&acme, &ocr_job("cam-2", &[good, broken])).await;
    let done = ended(&acme, &marker, Duration::from_secs(60)).await;
    assert_eq!(state(&done), "succeeded", "{done}");
    let (_, reads) = acme.get(&format!("/v1/jobs/{marker}/reads")).await;
    assert_eq!(texts(&reads["reads"][0]), small.lines, "{reads}");
    assert!(
        reads["reads"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("PNG")),
        "{reads}"
    );
}

/// A zip of `entries` (name, bytes), each deflated and dated `modified`.
fn zipped(entries: &[(&str, &[u8])], modified: zip::DateTime) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.add_directory("snapshots/", zip::write::SimpleFileOptions::default())
        .expect("directory");
    for (name, bytes) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(modified);
        zip.start_file(*name, options).expect("entry");
        zip.write_all(bytes).expect("entry bytes");
    }
    zip.finish().expect("zip").into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_is_read_entry_by_entry_and_one_beyond_the_limits_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let api = api_over(&objects).await;
    let (registry, _processor, events) = pipeline_of(&api).await;
    // A worker of OCR jobs only: a report queued first is left for others.
    let settings = [
        ("PULSE_OCR_ARCHIVE_MAX_ENTRIES", "5"),
        ("PULSE_WORKER_KINDS", "ocr"),
    ];
    let _worker = ocr_worker(&api, &objects, &registry, &settings).await;
    let files = store(&objects);
    let acme = Client::new(&api, "acme");
    let report = submit(
        &acme,
        &json!({"kind": "report", "params": {"format": "csv", "from_ms": 0, "to_ms": 1000}}),
    )
    .await;
    let modified = zip::DateTime::from_date_and_time(2026, 11, 30, 12, 0, 0).expect("date");
    let modified_ms = chrono::NaiveDate::from_ymd_opt(2026, 11, 30)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("date")
        .and_utc()
        .timestamp_millis();

    // Refused whole, each with its reason: too many entries, a bomb (8 MiB
    // of zeros deflate a thousandfold), and bytes that only start like one.
    let six: Vec<(String, Vec<u8>)> = (0..6).map(|i| (format!("{i}.jpg"), vec![i; 10])).collect();
    let six: Vec<(&str, &[u8])> = six
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let zeros = vec![0u8; 8 << 20];
    let refusals = [
        (
            zipped(&six, modified),
            "the archive has more than 5 entries".to_string(),
        ),
        (
            zipped(&[("bomb.jpg", &zeros)], modified),
            "entry bomb.jpg is compressed".into(),
        ),
        (
            b"PK\x03\x04 and then nothing of a zip".to_vec(),
            "not a readable zip archive".into(),
        ),
    ];
    for (bytes, reason) in refusals {
        let id = upload(&files, "acme", "application/zip", bytes)
            .await
            .expect("stored");
        let job = submit(&acme, &ocr_job("cam-zip", &[id])).await;
        let failed = ended(&acme, &job, Duration::from_secs(60)).await;
        assert_eq!(state(&failed), "failed", "{failed}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(error.contains(&reason), "{reason}: {error}");
    }

    // Three meters and a note: each meter read and published, the note a
    // read with its reason.
    let renderer = Renderer::from_env().expect("font");
    let mut rng = StdRng::seed_from_u64(33);
    let shots: Vec<_> = (0..3)
        .map(|_| renderer.render(&mut rng, Kind::Meter, 1280, 720))
        .collect();
    let jpegs: Vec<Vec<u8>> = shots
        .iter()
        .map(|s| encode(&s.image, ImageFormat::Jpeg).expect("jpeg"))
        .collect();
    let archive = zipped(
        &[
            ("snapshots/a.jpg", &jpegs[0]),
            ("snapshots/notes.txt", b"meter 3 was cleaned"),
            ("snapshots/b.jpg", &jpegs[1]),
            ("snapshots/c.jpg", &jpegs[2]),
        ],
        modified,
    );
    let archive = upload(&files, "acme", "application/zip", archive)
        .await
        .expect("stored");
    // An archive is its job's only input.
    let single = upload(&files, "acme", "image/jpeg", jpegs[0].clone())
        .await
        .expect("stored");
    let (status, body) = acme
        .submit(&ocr_job("cam-zip", &[archive.clone(), single]), None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("inputs")),
        "{body}"
    );
    let job_id = submit(&acme, &ocr_job("cam-zip", std::slice::from_ref(&archive))).await;
    let done = ended(&acme, &job_id, Duration::from_secs(120)).await;
    assert_eq!(state(&done), "succeeded", "{done}");
    let (_, reads) = acme.get(&format!("/v1/jobs/{job_id}/reads")).await;
    let reads = reads["reads"].as_array().expect("reads").clone();
    assert_eq!(reads.len(), 4, "{reads:?}");
    assert!(
        reads[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("entry snapshots/notes.txt is not a JPEG or PNG image")),
        "{:?}",
        reads[1]
    );
    for (read, (shot, jpeg)) in [&reads[0], &reads[2], &reads[3]]
        .into_iter()
        .zip(shots.iter().zip(&jpegs))
    {
        assert_eq!(texts(read), shot.lines, "{read}");
        assert_eq!(read["taken_ms"].as_i64(), Some(modified_ms), "{read}");
        // The entry is a file of its own, of the entry's bytes.
        let file = read["file_id"].as_str().expect("file id");
        let (sha, len) = acme.digest(&format!("/v1/files/{file}")).await;
        let want = hex::encode(sha2::Sha256::digest(jpeg));
        assert_eq!((sha, len), (want, jpeg.len() as u64), "{read}");
    }
    assert_eq!(stored_events(&events, "cam-zip", 3).await, (3, 3));
    // Every OCR job after it ran; the report did not.
    let (_, left) = acme.get(&format!("/v1/jobs/{report}")).await;
    assert_eq!(state(&left), "queued", "{left}");
}

const CRASH_SNAPSHOTS: usize = 1000;

#[tokio::test(flavor = "multi_thread")]
async fn a_job_of_a_thousand_snapshots_survives_three_worker_kills() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let api = api_over(&objects).await;
    let (registry, _processor, events) = pipeline_of(&api).await;
    // Small snapshots at a small detector side: the test is of the job's
    // bookkeeping, so each read must be cheap, not exact.
    let settings = [("PULSE_OCR_DET_SIDE", "320"), ("PULSE_OCR_IN_FLIGHT", "8")];
    let mut worker = ocr_worker(&api, &objects, &registry, &settings).await;
    let files = store(&objects);
    let acme = Client::new(&api, "acme");
    let renderer = Renderer::from_env().expect("font");
    let mut rng = StdRng::seed_from_u64(5);
    let mut inputs = Vec::with_capacity(CRASH_SNAPSHOTS);
    for _ in 0..CRASH_SNAPSHOTS {
        let shot = renderer.render(&mut rng, Kind::Meter, 480, 270);
        let jpeg = encode(&shot.image, ImageFormat::Jpeg).expect("jpeg");
        inputs.push(
            upload(&files, "acme", "image/jpeg", jpeg)
                .await
                .expect("stored"),
        );
    }
    let job_id = submit(&acme, &ocr_job("cam-crash", &inputs)).await;
    let mut last_progress = 0.0;
    for kill in 1..=3u64 {
        // Killed once this attempt has stored more than the one before.
        let seen = acme
            .job_when(&job_id, Duration::from_secs(300), |j| {
                state(j) == "running"
                    && j["attempts"].as_u64() == Some(kill)
                    && j["progress"].as_f64().unwrap_or(0.0) > last_progress + 0.05
            })
            .await;
        last_progress = seen["progress"].as_f64().unwrap_or(0.0);
        worker.kill();
        worker = ocr_worker(&api, &objects, &registry, &settings).await;
    }
    let done = ended(&acme, &job_id, Duration::from_secs(600)).await;
    assert_eq!(state(&done), "succeeded", "{done}");
    assert_eq!(done["attempts"].as_u64(), Some(4), "{done}");
    println!("progress at the last kill: {last_progress}");

    // Every snapshot has exactly one read, in input order.
    let mut reads = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/v1/jobs/{job_id}/reads?limit=1000&after={a}"),
            None => format!("/v1/jobs/{job_id}/reads?limit=1000"),
        };
        let (status, page) = acme.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        reads.extend(page["reads"].as_array().expect("reads").clone());
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let items: Vec<u64> = reads.iter().filter_map(|r| r["item"].as_u64()).collect();
    assert_eq!(items, (0..CRASH_SNAPSHOTS as u64).collect::<Vec<_>>());
    let files_read: Vec<&str> = reads.iter().filter_map(|r| r["file_id"].as_str()).collect();
    assert_eq!(
        files_read,
        inputs.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let stored_rows: u64 = api
        .clickhouse
        .query("SELECT uniqExact(item) FROM ocr_reads WHERE job_id = ?")
        .bind(&job_id)
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(stored_rows, CRASH_SNAPSHOTS as u64);
    // Each value read is one stored event of the camera.
    let valued = reads.iter().filter(|r| r["event_id"].is_string()).count() as u64;
    assert!(
        valued > 0,
        "no meter value was read off the small snapshots"
    );
    assert_eq!(
        stored_events(&events, "cam-crash", valued).await,
        (valued, valued)
    );
    println!("{CRASH_SNAPSHOTS} snapshots, {valued} readings stored once each");
}
