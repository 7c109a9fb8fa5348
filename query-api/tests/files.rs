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

use pulse_testkit::sample_csv as csv;

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
    let audited = file_reads(&api, 8).await;
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

/// The file reads in `api`'s audit trail (tenant, status), oldest first,
/// once there are at least `count`.
async fn file_reads(api: &support::Api, count: usize) -> Vec<(String, u16)> {
    poll_until("the file reads in the audit trail", Duration::from_secs(20), || async {
        let rows: Vec<(String, u16)> = api
            .clickhouse
            .query("SELECT tenant, status FROM audit WHERE route = '/v1/files/{file_id}' ORDER BY time_ms")
            .fetch_all()
            .await
            .ok()?;
        (rows.len() >= count).then_some(rows)
    })
    .await
}

/// A JSON request to ingest as acme (or `key`), answered with its status
/// and body.
async fn ask(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, url).bearer_auth(key);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("ingest answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `bytes` to a grant's part URLs, as a client does, and answers
/// the parts' ETags in part order.
async fn send_parts(http: &reqwest::Client, grant: &Value, bytes: &[u8]) -> Vec<String> {
    let part_bytes = grant["part_bytes"].as_u64().expect("part size") as usize;
    let parts = grant["parts"].as_array().expect("parts");
    let mut etags = Vec::new();
    for (part, chunk) in parts.iter().zip(bytes.chunks(part_bytes)) {
        let url = part["url"].as_str().expect("a part URL");
        let response = http
            .put(url)
            .body(chunk.to_vec())
            .send()
            .await
            .expect("the store answers");
        assert!(response.status().is_success(), "{:?}", response.status());
        let etag = response.headers()[header::ETAG]
            .to_str()
            .expect("an ETag")
            .to_string();
        etags.push(etag);
    }
    etags
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn presigned_uploads_become_files_only_when_their_bytes_pass() {
    let stack = Stack::from_env();
    let http = reqwest::Client::new();
    // A filesystem store signs no URLs: the client is told where to go.
    let (_fs_dir, fs_objects, fs_credentials) = setup(Backend::Filesystem);
    let (_fs_registry, fs_ingest) =
        ingest_over(&stack, &fs_objects, &fs_credentials, 64 << 20).await;
    let (status, body) = ask(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/uploads", fs_ingest.url),
        ACME_KEY,
        &[],
        Some(json!({"content_type": "text/csv", "size": 100})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert_eq!(body["error"], "presigned_uploads_unavailable");
    let upload = format!("{}/v1/uploads/{}", fs_ingest.url, "0".repeat(32));
    for (method, url, body) in [
        (
            reqwest::Method::POST,
            format!("{upload}/complete"),
            Some(json!({"parts": []})),
        ),
        (reqwest::Method::DELETE, upload.clone(), None),
    ] {
        let (status, answer) = ask(&http, method, url, ACME_KEY, &[], body).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{answer}");
        assert_eq!(answer["error"], "presigned_uploads_unavailable");
    }
    assert_eq!(fs_objects.keys().await, Vec::<String>::new());
    drop((fs_ingest, _fs_registry));

    let (_dir, objects, credentials) = setup(Backend::S3);
    let (_registry, ingest) = ingest_over(&stack, &objects, &credentials, 64 << 20).await;
    let uploads = format!("{}/v1/uploads", ingest.url);
    let grant = |key: &'static str, headers: Vec<(&'static str, &'static str)>, body: Value| {
        let http = http.clone();
        let url = uploads.clone();
        async move { ask(&http, reqwest::Method::POST, url, key, &headers, Some(body)).await }
    };
    let complete = |key: &'static str, upload_id: String, etags: Vec<String>| {
        let http = http.clone();
        let url = format!("{uploads}/{upload_id}/complete");
        async move {
            ask(
                &http,
                reqwest::Method::POST,
                url,
                key,
                &[],
                Some(json!({"parts": etags})),
            )
            .await
        }
    };

    // Grants refused whole: nothing started, nothing stored.
    let refused: [(Value, StatusCode, &str); 5] = [
        (
            json!({"content_type": "text/csv", "size": 0}),
            StatusCode::BAD_REQUEST,
            "empty_file",
        ),
        (
            json!({"content_type": "text/csv", "size": (64u64 << 20) + 1}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            json!({"content_type": "application/x-msdownload", "size": 10}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            json!({"content_type": "text/csv"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_upload",
        ),
        (
            json!({"content_type": "text/csv", "size": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_upload",
        ),
    ];
    for (body, status, error) in refused {
        let (got, answer) = grant(ACME_KEY, vec![], body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(error)),
            "{body}: {answer}"
        );
        assert_eq!(objects.keys().await, Vec::<String>::new(), "{body}");
    }

    // 20 MiB of CSV in three parts, sent straight to the store.
    let bytes = csv(20 << 20);
    let sha = hex::encode(Sha256::digest(&bytes));
    let keyed = vec![("idempotency-key", "camera-7-2026-12-03")];
    let body = json!({"content_type": "text/csv", "size": bytes.len()});
    let (status, granted) = grant(ACME_KEY, keyed.clone(), body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{granted}");
    assert_eq!(
        granted["parts"].as_array().map(Vec::len),
        Some(3),
        "{granted}"
    );
    let upload_id = granted["upload_id"].as_str().expect("an id").to_string();
    let file_id = granted["file_id"].as_str().expect("an id").to_string();
    let etags = send_parts(&http, &granted, &bytes).await;
    // Not a file before it is completed.
    assert!(
        !objects.keys().await.iter().any(|k| k.contains("/files/")),
        "{:?}",
        objects.keys().await
    );
    // Another tenant cannot complete it; wrong ETags leave it to try again.
    let (status, _) = complete(GLOBEX_KEY, upload_id.clone(), etags.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = complete(ACME_KEY, upload_id.clone(), etags[..2].to_vec()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_parts"))
    );
    let wrong = vec!["\"0\"".to_string(); 3];
    let (status, answer) = complete(ACME_KEY, upload_id.clone(), wrong).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_parts")),
        "{answer}"
    );
    let (status, meta) = complete(ACME_KEY, upload_id.clone(), etags.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    assert_eq!(
        (
            meta["file_id"].as_str(),
            meta["sha256"].as_str(),
            meta["size"].as_u64()
        ),
        (Some(file_id.as_str()), Some(sha.as_str()), Some(20 << 20))
    );
    // A retried completion and a retried grant find the same file.
    let (status, again) = complete(ACME_KEY, upload_id.clone(), etags.clone()).await;
    assert_eq!((status, &again), (StatusCode::OK, &meta));
    let (status, again) = grant(ACME_KEY, keyed.clone(), body).await;
    assert_eq!((status, &again), (StatusCode::OK, &meta));
    let expected = vec![
        format!("tenants/acme/files/{file_id}.json"),
        format!("tenants/acme/objects/{sha}"),
        format!("tenants/acme/uploads/{upload_id}.json"),
    ];
    assert_eq!(objects.keys().await, expected);

    // Bytes that are not what was granted are refused on completion, and
    // neither they nor the grant stay.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let lies: [(&str, Vec<u8>, usize, &str); 2] = [
        ("image/png", csv(4096), 4096, "content_mismatch"),
        ("image/png", png.clone(), png.len() + 10, "size_mismatch"),
    ];
    for (content_type, sent, declared, error) in lies {
        let (status, granted) = grant(
            ACME_KEY,
            vec![],
            json!({"content_type": content_type, "size": declared}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{granted}");
        let etags = send_parts(&http, &granted, &sent).await;
        let id = granted["upload_id"].as_str().expect("an id").to_string();
        let (status, answer) = complete(ACME_KEY, id.clone(), etags.clone()).await;
        assert!(status.is_client_error(), "{error}: {status} {answer}");
        assert_eq!(answer["error"], error, "{answer}");
        let (status, _) = complete(ACME_KEY, id, etags).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{error}: the grant is gone");
        assert_eq!(objects.keys().await, expected, "{error}");
    }
    // An abandoned upload, aborted: nothing of it stays.
    let (_, granted) = grant(
        ACME_KEY,
        vec![],
        json!({"content_type": "image/png", "size": 20}),
    )
    .await;
    send_parts(&http, &granted, &[png.clone(), vec![0; 3]].concat()).await;
    let id = granted["upload_id"].as_str().expect("an id");
    let (status, _) = ask(
        &http,
        reqwest::Method::DELETE,
        format!("{uploads}/{id}"),
        ACME_KEY,
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(objects.keys().await, expected);

    // Downloads redirected to the store: the API checks the tenant and
    // audits, the store serves the bytes, Range included.
    let api = api_over(&objects, &[("PULSE_FILES_REDIRECT_TTL_S", "60".into())]).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let path = format!("{}/v1/files/{file_id}", api.url);
    let acme = support::hs256("acme", "analyst");
    let redirect = no_follow
        .get(&path)
        .bearer_auth(&acme)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        redirect.headers()[header::CACHE_CONTROL],
        "private, no-store"
    );
    let location = redirect.headers()[header::LOCATION]
        .to_str()
        .expect("a location")
        .to_string();
    let part = http
        .get(&location)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("the store answers");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()[header::CONTENT_TYPE], "text/csv");
    assert_eq!(part.bytes().await.expect("bytes"), &bytes[1000..2000]);
    let cached = no_follow
        .get(&path)
        .bearer_auth(&acme)
        .header("if-none-match", format!("\"{sha}\""))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let other = no_follow
        .get(&path)
        .bearer_auth(support::hs256("globex", "analyst"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let audited = file_reads(&api, 3).await;
    assert_eq!(
        audited,
        [
            ("acme".to_string(), 307),
            ("acme".to_string(), 304),
            ("globex".to_string(), 404)
        ]
    );
}
