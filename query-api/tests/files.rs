//! Files end to end on both backends, the filesystem and the stack's S3
//! server: uploaded to ingest (streamed, checked by size, content and
//! credential, stored once per idempotency key) and downloaded from the
//! query API (tenant-scoped, Range, ETag and 304), every bad upload
//! refused whole with nothing stored, and a gigabyte uploaded with the
//! gateway's memory bounded. On S3 also: uploads a client sends itself to
//! presigned URLs, and downloads redirected to one. Run through
//! `./dev test`.

use pulse_testkit::query_api as support;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use pulse_testkit::{
    peak_rss_kib, poll_until, start_ingest, start_registry, unique, Backend, Objects, Service,
    Stack,
};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What a bad upload is, its credential, headers and body, and the status
/// and error it gets.
type BadUpload<'a> = (
    &'a str,
    Option<&'a str>,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

const ACME_KEY: &str = "acme-ingest-key-0001";
const GLOBEX_KEY: &str = "globex-ingest-key-0001";

/// A directory of the test's own, removed with what it holds when the
/// guard is dropped: ingest's credentials, and a filesystem store.
fn setup(backend: Backend) -> (tempfile::TempDir, Objects, PathBuf) {
    let guard = tempfile::Builder::new()
        .prefix("pulse-files-")
        .tempdir()
        .expect("temp dir");
    let dir = guard.path().to_path_buf();
    let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    let credentials = dir.join("credentials.toml");
    std::fs::write(
        &credentials,
        format!(
            "[[api_keys]]\nname = \"acme\"\ntenant = \"acme\"\nsha256 = \"{}\"\n\n\
             [[api_keys]]\nname = \"globex\"\ntenant = \"globex\"\nsha256 = \"{}\"\n",
            sha(ACME_KEY),
            sha(GLOBEX_KEY)
        ),
    )
    .expect("credentials written");
    let objects = Objects::new(backend, &dir.join("objects"));
    (guard, objects, credentials)
}

/// A registry and an ingest gateway storing files in `objects`.
async fn ingest_over(
    stack: &Stack,
    objects: &Objects,
    credentials: &Path,
    max_file: u64,
) -> (Service, Service) {
    let prefix = unique("files") + ".";
    let registry = start_registry(stack, &prefix).await;
    let mut env = objects.env();
    env.extend([
        (
            "PULSE_INGEST_CREDENTIALS",
            credentials.display().to_string(),
        ),
        ("PULSE_INGEST_MAX_FILE_BYTES", max_file.to_string()),
        ("PULSE_EVENT_PARTITIONS", "1".into()),
    ]);
    let ingest = start_ingest(stack, &prefix, &registry.url, &env).await;
    (registry, ingest)
}

/// The query API over `objects`, with `extra` settings.
async fn api_over(objects: &Objects, extra: &[(&'static str, String)]) -> support::Api {
    let env: Vec<(&str, String)> = objects
        .env()
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    support::start_api_with(&[], &env).await
}

async fn upload(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: reqwest::Body,
) -> (StatusCode, Value) {
    let mut request = http.post(format!("{url}/v1/files")).body(body);
    if let Some(k) = key {
        request = request.bearer_auth(k);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("ingest answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `n` bytes of CSV, the same every run.
fn csv(n: usize) -> Vec<u8> {
    let mut out = b"time_ms,source_id,temperature_c\n".to_vec();
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{},device-{},{}.{}\n",
                1_700_000_000_000 + i,
                i % 97,
                15 + i % 20,
                i % 10
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn files_are_stored_once_checked_whole_and_served_to_their_tenant_only() {
    files_flow(Backend::Filesystem).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn files_on_s3_are_stored_once_checked_whole_and_served_to_their_tenant_only() {
    files_flow(Backend::S3).await;
}

async fn files_flow(backend: Backend) {
    let stack = Stack::from_env();
    let (_dir, objects, credentials) = setup(backend);
    let (_registry, ingest) = ingest_over(&stack, &objects, &credentials, 4 << 20).await;
    let http = reqwest::Client::new();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let jpeg = [&[0xFFu8, 0xD8, 0xFF, 0xE0][..], &[0u8; 64]].concat();

    // Bad uploads: each refused whole, naming why, and nothing stored.
    let long_key = "k".repeat(300);
    let cases: Vec<BadUpload> = vec![
        (
            "no credential",
            None,
            vec![("content-type", "text/csv")],
            csv(100),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "unknown credential",
            Some("nope"),
            vec![("content-type", "text/csv")],
            csv(100),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "empty",
            Some(ACME_KEY),
            vec![("content-type", "text/csv")],
            vec![],
            StatusCode::BAD_REQUEST,
            "empty_file",
        ),
        (
            "no content type",
            Some(ACME_KEY),
            vec![],
            csv(100),
            StatusCode::BAD_REQUEST,
            "bad_upload",
        ),
        (
            "unsupported type",
            Some(ACME_KEY),
            vec![("content-type", "application/x-msdownload")],
            b"MZ\x90\0".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "lying type",
            Some(ACME_KEY),
            vec![("content-type", "image/jpeg")],
            png.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_mismatch",
        ),
        (
            "binary as text",
            Some(ACME_KEY),
            vec![("content-type", "text/csv")],
            jpeg.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_mismatch",
        ),
        (
            "NUL bytes in text",
            Some(ACME_KEY),
            vec![("content-type", "text/csv")],
            b"a,b\n1,\0\0\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_mismatch",
        ),
        (
            "over the limit",
            Some(ACME_KEY),
            vec![("content-type", "text/csv")],
            csv((4 << 20) + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            "idempotency key too long",
            Some(ACME_KEY),
            vec![("content-type", "text/csv"), ("idempotency-key", &long_key)],
            csv(100),
            StatusCode::BAD_REQUEST,
            "bad_upload",
        ),
    ];
    for (what, key, headers, body, status, error) in cases {
        let (got, body) = upload(&http, &ingest.url, key, &headers, body.into()).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"], error, "{what}: {body}");
        assert!(
            body["errors"][0]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(
            objects.keys().await,
            Vec::<String>::new(),
            "{what}: something was stored"
        );
    }

    // Counted as refused uploads, not as refused events.
    assert_eq!(
        ingest
            .metric("pulse_ingest_files_rejected_total{reason=\"content_mismatch\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        ingest
            .metric("pulse_ingest_events_rejected_total{reason=\"content_mismatch\"}")
            .await,
        None
    );

    // A file, then the same upload retried: stored once.
    let bytes = csv(1 << 20);
    let sha = hex::encode(Sha256::digest(&bytes));
    let headers = [
        ("content-type", "text/csv"),
        ("idempotency-key", "report-2026-11"),
    ];
    let send = || {
        upload(
            &http,
            &ingest.url,
            Some(ACME_KEY),
            &headers,
            bytes.clone().into(),
        )
    };
    let (status, first) = send().await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        (first["size"].as_u64(), first["sha256"].as_str()),
        (Some(1 << 20), Some(sha.as_str()))
    );
    assert_eq!(first["content_type"], "text/csv");
    let (status, again) = send().await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    let id = first["file_id"].as_str().expect("an id").to_string();
    assert_eq!(
        objects.keys().await,
        [
            format!("tenants/acme/files/{id}.json"),
            format!("tenants/acme/objects/{sha}")
        ]
    );
    // The same key of another tenant is another file.
    let (status, other) = upload(
        &http,
        &ingest.url,
        Some(GLOBEX_KEY),
        &[
            ("content-type", "image/png"),
            ("idempotency-key", "report-2026-11"),
        ],
        png.clone().into(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_ne!(other["file_id"], first["file_id"]);

    // Downloads from the query API over the same store.
    let api = api_over(&objects, &[]).await;
    let acme = support::hs256("acme", "analyst");
    let get = |path: String, token: String, headers: Vec<(&'static str, String)>| {
        let mut request = http.get(format!("{}{path}", api.url)).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.expect("the API answers") }
    };
    let path = format!("/v1/files/{id}");
    let whole = get(path.clone(), acme.clone(), vec![]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let etag = format!("\"{sha}\"");
    assert_eq!(whole.headers()[header::ETAG], etag.as_str());
    assert_eq!(whole.headers()[header::CONTENT_TYPE], "text/csv");
    assert_eq!(
        whole.headers()[header::CACHE_CONTROL],
        "private, max-age=31536000, immutable"
    );
    assert_eq!(whole.bytes().await.expect("body"), bytes);

    let cached = get(
        path.clone(),
        acme.clone(),
        vec![("if-none-match", etag.clone())],
    )
    .await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()[header::ETAG], etag.as_str());
    assert!(cached.bytes().await.expect("body").is_empty());

    let part = get(
        path.clone(),
        acme.clone(),
        vec![("range", "bytes=100-199".into())],
    )
    .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()[header::CONTENT_RANGE],
        format!("bytes 100-199/{}", 1 << 20).as_str()
    );
    assert_eq!(part.bytes().await.expect("body"), &bytes[100..200]);
    let past = get(
        path.clone(),
        acme.clone(),
        vec![("range", format!("bytes={}-", 1 << 20))],
    )
    .await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Another tenant's id is not found, and the refusal is in the audit trail.
    let globex = support::hs256("globex", "analyst");
    let refused = get(path.clone(), globex, vec![]).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "0123456789ABCDEF0123456789ABCDEF",
        "x",
    ] {
        let r = get(format!("/v1/files/{bad}"), acme.clone(), vec![]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    let audited = poll_until("the file reads in the audit trail", Duration::from_secs(20), || async {
        let rows: Vec<(String, u16)> = api
            .clickhouse
            .query("SELECT tenant, status FROM audit WHERE route = '/v1/files/{file_id}' ORDER BY time_ms")
            .fetch_all()
            .await
            .ok()?;
        (rows.len() >= 8).then_some(rows)
    })
    .await;
    assert!(
        audited.contains(&("globex".to_string(), 404)),
        "{audited:?}"
    );
    assert_eq!(
        audited
            .iter()
            .filter(|(t, s)| t == "acme" && *s == 200)
            .count(),
        1,
        "{audited:?}"
    );

    // Events still flow through the same gateway.
    let marker = json!({"kind": "telemetry", "tenant_id": "acme", "source_id": "marker-1",
        "event_id": uuid::Uuid::new_v4().to_string(), "event_time": pulse_common::clock::now_ms(),
        "readings": {"temperature_c": 21.0}});
    let r = http
        .post(format!("{}/v1/events", ingest.url))
        .bearer_auth(ACME_KEY)
        .json(&marker)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_gigabyte_upload_streams_through_the_gateway_in_bounded_memory() {
    a_gigabyte_upload(Backend::Filesystem).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_gigabyte_upload_streams_to_s3_in_bounded_memory() {
    a_gigabyte_upload(Backend::S3).await;
}

async fn a_gigabyte_upload(backend: Backend) {
    const SIZE: usize = 1 << 30;
    const CHUNK: usize = 1 << 20;
    const MAX_RSS_KIB: u64 = 100 * 1024;
    let stack = Stack::from_env();
    let (_dir, objects, credentials) = setup(backend);
    let (_registry, ingest) = ingest_over(&stack, &objects, &credentials, 2 << 30).await;
    // The same 1 MiB of CSV again and again, hashed as it is sent.
    let block = axum::body::Bytes::from(csv(CHUNK));
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let hashing = hasher.clone();
    let body = futures::stream::iter(0..SIZE / CHUNK).map(move |_| {
        if let Ok(mut h) = hashing.lock() {
            h.update(&block);
        }
        Ok::<_, std::io::Error>(block.clone())
    });
    let started = std::time::Instant::now();
    let (status, meta) = upload(
        &reqwest::Client::new(),
        &ingest.url,
        Some(ACME_KEY),
        &[("content-type", "text/csv")],
        reqwest::Body::wrap_stream(body),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    let sha = hasher
        .lock()
        .map(|h| hex::encode(h.clone().finalize()))
        .unwrap_or_default();
    assert_eq!(meta["size"].as_u64(), Some(SIZE as u64));
    assert_eq!(meta["sha256"].as_str(), Some(sha.as_str()));
    let peak = peak_rss_kib(ingest.pid()).unwrap_or(u64::MAX);
    eprintln!(
        "{backend:?}: 1 GiB upload in {seconds:.1} s ({:.0} MiB/s), ingest peak RSS {} MiB",
        1024.0 / seconds,
        peak / 1024
    );
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    assert_eq!(
        objects.size(&format!("tenants/acme/objects/{sha}")).await,
        Some(SIZE as u64)
    );
}
