//! Jobs end to end: submitted to the query API, run by `pulse-worker`
//! processes, their reports downloaded as files. Checks the lifecycle and
//! its idempotency, bad submissions refused with nothing queued, a report
//! of a million events equal to `/v1/export` in the worker's bounded
//! memory through three SIGKILLs, and a cancel of a running report. Run
//! through `./dev test`.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use pulse_common::files::{FileId, FileStore, StorageArgs, UploadLimits};
use pulse_testkit::query_api::{self as support, Api};
use pulse_testkit::{files_under, peak_rss_kib, poll_until, unique, Backend, Objects};
use reqwest::StatusCode;
use serde_json::{json, Value};

mod shared;

use shared::{api_over, state, worker, worker_with, Client};

/// The end of the generated events' range.
const END_MS: i64 = 1_764_000_000_000;

fn report(format: &str, from_ms: i64, to_ms: i64) -> Value {
    json!({"kind": "report", "params": {"format": format, "from_ms": from_ms, "to_ms": to_ms}})
}

/// `files` of acme's files stored, and nothing left staged.
fn assert_stored(objects: &Path, files: usize) {
    let stored = files_under(&objects.join("tenants/acme"));
    let metadata = stored.iter().filter(|f| f.starts_with("files/")).count();
    assert_eq!(metadata, files, "{stored:?}");
    let staged = stored.iter().any(|f| f.starts_with("staging/"));
    assert!(!staged, "{stored:?}");
}

async fn job_rows(api: &Api) -> u64 {
    api.clickhouse
        .query("SELECT count() FROM jobs")
        .fetch_one()
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_run_once_per_key_and_bad_jobs_are_refused_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let api = api_over(&objects).await;
    api.generate_events("acme", 5_000, END_MS, 40).await;
    api.generate_events("globex", 10, END_MS, 0).await;
    let _worker = worker(&api, &objects, &unique("worker")).await;
    let acme = Client::new(&api, "acme");

    // Bad submissions: each refused with its field, none recorded.
    let globex_file = FileStore::open(&StorageArgs {
        object_store_url: objects.display().to_string(),
    })
    .expect("store");
    let limits = UploadLimits {
        max_bytes: 1 << 20,
        tenant_quota_bytes: 1 << 20,
    };
    let id = FileId::random();
    let bytes = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"a,b\n1,2\n",
    ))]);
    globex_file
        .upload("globex", &id, "text/csv", bytes, limits)
        .await
        .expect("globex's file stored");
    let range = |from: i64, to: i64| json!({"format": "csv", "from_ms": from, "to_ms": to});
    let bad: Vec<(Value, &str)> = vec![
        (json!({"kind": "transcode", "params": {}}), "kind"),
        (
            json!({"kind": "report", "params": {"format": "csv", "from_ms": 0, "to_ms": 1, "source_id": ""}}),
            "params.source_id",
        ),
        (
            json!({"kind": "report", "params": range(-1, 5)}),
            "params.from_ms",
        ),
        (
            json!({"kind": "report", "params": {"format": "xlsx", "from_ms": 0, "to_ms": 1}}),
            "params",
        ),
        (
            json!({"kind": "report", "params": range(0, 1), "extra": 1}),
            "body",
        ),
        (json!("report"), "body"),
        // A report reads no files; an OCR job reads at least one.
        (
            json!({"kind": "report", "params": range(0, 1), "inputs": [id.as_str()]}),
            "inputs",
        ),
        (json!({"kind": "ocr", "inputs": []}), "inputs"),
        (
            json!({"kind": "ocr", "params": {"reading": "9x"}, "inputs": [id.as_str()]}),
            "params.reading",
        ),
    ];
    for (body, field) in &bad {
        let (status, answer) = acme.submit(body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], *field, "{body}: {answer}");
    }
    // Another tenant's file reads as no file at all, as does a malformed id.
    for input in [id.as_str(), "../../globex"] {
        let body = json!({"kind": "ocr", "inputs": [input]});
        let (status, answer) = acme.submit(&body, None).await;
        let refused = (status, answer["field"].as_str());
        assert_eq!(refused, (StatusCode::NOT_FOUND, Some("inputs")), "{answer}");
    }
    let (status, answer) = acme.submit(&report("csv", 0, 1), Some("")).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("idempotency-key"))
    );
    assert_eq!(job_rows(&api).await, 0, "a refused job was recorded");

    // A dashboard's live stream, with job transitions.
    let stream = format!(
        "{}/v1/stream?jobs=true&access_token={}",
        api.url.replacen("http://", "ws://", 1),
        support::hs256("acme", "dashboard")
    );
    let (mut live, _) = tokio_tungstenite::connect_async(stream)
        .await
        .expect("stream opens");

    // A report, retried with its key: one job, one file, the export's bytes.
    let from_ms = END_MS - 4_000;
    let body = report("csv", from_ms, END_MS + 1);
    let (status, queued) = acme.submit(&body, Some("monthly-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(state(&queued), "queued");
    let job_id = queued["job_id"].as_str().expect("job id").to_string();
    let (status, again) = acme.submit(&body, Some("monthly-1")).await;
    assert!(
        status == StatusCode::OK && again["job_id"] == job_id.as_str(),
        "{again}"
    );
    let (status, other) = acme
        .submit(&report("parquet", 0, 1), Some("monthly-1"))
        .await;
    assert_eq!(
        (status, other["field"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency-key"))
    );

    let done = acme
        .job_when(&job_id, Duration::from_secs(60), |j| {
            state(j) == "succeeded"
        })
        .await;
    assert_eq!(
        (done["attempts"].as_u64(), done["progress"].as_f64()),
        (Some(1), Some(1.0)),
        "{done}"
    );
    // Every transition was pushed, in order.
    let pushed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut states = Vec::new();
        while let Some(Ok(message)) = live.next().await {
            let Ok(text) = message.into_text() else {
                continue;
            };
            let note: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if note["type"] == "job" && note["job"]["job_id"] == job_id.as_str() {
                states.push(state(&note["job"]).to_string());
                if states.last().map(String::as_str) == Some("succeeded") {
                    return states;
                }
            }
        }
        states
    })
    .await
    .expect("the transitions within 30 s");
    assert_eq!(
        pushed.first().map(String::as_str),
        Some("queued"),
        "{pushed:?}"
    );
    assert!(pushed.iter().any(|s| s == "running"), "{pushed:?}");
    assert_eq!(
        pushed.last().map(String::as_str),
        Some("succeeded"),
        "{pushed:?}"
    );
    let file = done["result_file_id"].as_str().expect("result file");
    let report_digest = acme.digest(&format!("/v1/files/{file}")).await;
    let export_digest = acme
        .digest(&format!(
            "/v1/export?format=csv&from_ms={from_ms}&to_ms={}",
            END_MS + 1
        ))
        .await;
    assert_eq!(report_digest, export_digest);
    assert!(report_digest.1 > 4_000 * 100, "{report_digest:?}");

    // Parquet too, and the job list pages by state and kind.
    let (_, parquet) = acme
        .submit(&report("parquet", from_ms, END_MS + 1), None)
        .await;
    let parquet_id = parquet["job_id"].as_str().expect("job id");
    let done = acme
        .job_when(parquet_id, Duration::from_secs(60), |j| {
            state(j) == "succeeded"
        })
        .await;
    let file = done["result_file_id"].as_str().expect("result file");
    assert_eq!(
        acme.digest(&format!("/v1/files/{file}")).await,
        acme.digest(&format!(
            "/v1/export?format=parquet&from_ms={from_ms}&to_ms={}",
            END_MS + 1
        ))
        .await
    );
    let (_, page) = acme
        .get("/v1/jobs?state=succeeded&kind=report&limit=1")
        .await;
    assert_eq!(page["jobs"][0]["job_id"], parquet_id, "{page}");
    let next = page["next"].as_str().expect("a next page");
    let (_, page) = acme
        .get(&format!("/v1/jobs?state=succeeded&limit=1&after={next}"))
        .await;
    assert_eq!(page["jobs"][0]["job_id"], job_id.as_str(), "{page}");
    let (status, _) = acme.get("/v1/jobs?state=paused").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another tenant sees none of it; an ended job cannot be canceled.
    let globex = Client::new(&api, "globex");
    assert_eq!(
        globex.get(&format!("/v1/jobs/{job_id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(globex.cancel(&job_id).await.0, StatusCode::NOT_FOUND);
    let (_, page) = globex.get("/v1/jobs").await;
    assert_eq!(page["jobs"], json!([]));
    assert_eq!(acme.cancel(&job_id).await.0, StatusCode::CONFLICT);
    // Two jobs' files, and nothing left staged.
    assert_stored(&objects, 2);
}

/// A million events of about 400 bytes of CSV each.
const AT_SIZE: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_report_at_size_survives_three_worker_kills_and_equals_the_export() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let api = api_over(&objects).await;
    api.generate_events("acme", AT_SIZE, END_MS, 160).await;
    let group = unique("worker");
    let mut worker_now = worker(&api, &objects, &group).await;
    let acme = Client::new(&api, "acme");
    let from_ms = END_MS - AT_SIZE as i64;
    let (status, queued) = acme
        .submit(&report("csv", from_ms, END_MS + 1), Some("big"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let job_id = queued["job_id"].as_str().expect("job id").to_string();

    for kill in 1..=3u64 {
        // Killed once its attempt has written some of the report.
        acme.job_when(&job_id, Duration::from_secs(120), |j| {
            state(j) == "running"
                && j["attempts"].as_u64() == Some(kill)
                && j["progress"].as_f64() > Some(0.0)
        })
        .await;
        worker_now.kill();
        worker_now = worker(&api, &objects, &group).await;
    }
    let done = acme
        .job_when(&job_id, Duration::from_secs(300), |j| {
            state(j) != "running" && state(j) != "queued"
        })
        .await;
    assert_eq!(state(&done), "succeeded", "{done}");
    assert_eq!(done["attempts"].as_u64(), Some(4), "{done}");
    let peak_kib = peak_rss_kib(worker_now.pid()).expect("worker's peak memory");
    println!(
        "worker peak RSS over the last attempt: {} MB",
        peak_kib / 1024
    );
    assert!(peak_kib < 200 * 1024, "worker peak RSS {peak_kib} KiB");

    let file = done["result_file_id"].as_str().expect("result file");
    let report_digest = acme.digest(&format!("/v1/files/{file}")).await;
    let export_digest = acme
        .digest(&format!(
            "/v1/export?format=csv&from_ms={from_ms}&to_ms={}",
            END_MS + 1
        ))
        .await;
    println!("report of {AT_SIZE} events: {} bytes", report_digest.1);
    assert_eq!(report_digest, export_digest);
    assert!(report_digest.1 > 400_000_000, "{report_digest:?}");
    // One job row standing, one file, one object, nothing staged.
    let stored = files_under(&objects.join("tenants/acme"));
    assert_eq!(
        stored.iter().filter(|f| f.starts_with("files/")).count(),
        1,
        "{stored:?}"
    );
    assert_eq!(
        stored.iter().filter(|f| f.starts_with("objects/")).count(),
        1,
        "{stored:?}"
    );
    assert!(
        !stored.iter().any(|f| f.starts_with("staging/")),
        "{stored:?}"
    );
    let ended: u64 = api
        .clickhouse
        .query("SELECT count() FROM jobs WHERE state = 'succeeded'")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(ended, 1);

    // Canceled while it runs: canceled within 5 s, nothing left of it.
    let (_, queued) = acme
        .submit(&report("csv", from_ms, END_MS + 1), Some("to-cancel"))
        .await;
    let cancel_id = queued["job_id"].as_str().expect("job id").to_string();
    acme.job_when(&cancel_id, Duration::from_secs(120), |j| {
        state(j) == "running" && j["progress"].as_f64() > Some(0.0)
    })
    .await;
    let asked = std::time::Instant::now();
    let (status, _) = acme.cancel(&cancel_id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let canceled = acme
        .job_when(&cancel_id, Duration::from_secs(5), |j| {
            state(j) == "canceled"
        })
        .await;
    println!(
        "canceled {} ms after the request",
        asked.elapsed().as_millis()
    );
    assert!(canceled["result_file_id"].is_null(), "{canceled}");
    assert_stored(&objects, 1);
    // The worker goes on: a small report after the cancel succeeds.
    let (_, queued) = acme
        .submit(&report("csv", END_MS - 10, END_MS + 1), None)
        .await;
    let marker = queued["job_id"].as_str().expect("job id");
    acme.job_when(marker, Duration::from_secs(60), |j| state(j) == "succeeded")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_schedule_queues_each_occurrence_once_across_api_instances() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("objects");
    let url = objects.display().to_string();
    // A tick a second and minutely schedules allowed, so an occurrence
    // falls within the test.
    let mut settings = vec![
        ("PULSE_OBJECT_STORE_URL", url.as_str()),
        ("PULSE_SCHEDULE_TICK_S", "1"),
        ("PULSE_SCHEDULE_MIN_INTERVAL_S", "60"),
    ];
    let api = support::start_api_with(&[], &settings).await;
    settings.extend([
        ("PULSE_TOPIC_PREFIX", api.topic_prefix.as_str()),
        ("PULSE_CLICKHOUSE_DATABASE", api.database.as_str()),
    ]);
    // A second instance over the same topics and tables: both schedule.
    let twin = support::start_api_with(&[], &settings).await;
    let _worker = worker(&api, &objects, &unique("worker")).await;
    // One event a millisecond around now, so the minute a report covers is full.
    let now = pulse_common::clock::now_ms();
    api.generate_events("acme", 240_000, now + 120_000, 0).await;
    let admin = Client {
        token: support::hs256("acme", "admin"),
        ..Client::new(&api, "acme")
    };
    let analyst = Client::new(&api, "acme");
    let put = |client: &Client, name: &str, body: Value| {
        let req = client
            .request(reqwest::Method::PUT, &format!("/v1/schedules/{name}"))
            .json(&body);
        Client::answer(req)
    };
    let minutely = json!({"kind": "report", "cron": "* * * * *", "params": {"format": "csv"}});

    // Refused whole, each naming its field; nothing stored.
    let bad: [(&str, Value, StatusCode, &str); 6] = [
        (
            "m",
            json!({"kind": "report", "cron": "* * * * * *", "params": {"format": "csv"}}),
            StatusCode::BAD_REQUEST,
            "cron",
        ),
        (
            "m",
            json!({"kind": "report", "cron": "nonsense", "params": {"format": "csv"}}),
            StatusCode::BAD_REQUEST,
            "cron",
        ),
        (
            "m",
            json!({"kind": "report", "cron": "* * * * *", "params": {"format": "csv", "from_ms": 0}}),
            StatusCode::BAD_REQUEST,
            "params.from_ms",
        ),
        (
            "m",
            json!({"kind": "ocr", "cron": "* * * * *", "params": {}}),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        ("a%20b", minutely.clone(), StatusCode::BAD_REQUEST, "name"),
        (
            "m",
            json!({"kind": "report", "cron": "* * * * *"}),
            StatusCode::BAD_REQUEST,
            "body",
        ),
    ];
    for (name, body, status, field) in bad {
        let (got, answer) = put(&admin, name, body.clone()).await;
        assert_eq!(
            (got, answer["field"].as_str()),
            (status, Some(field)),
            "{body}: {answer}"
        );
    }
    let (status, _) = put(&analyst, "minutely", minutely.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins set schedules");
    let (_, listed) = analyst.get("/v1/schedules").await;
    assert_eq!(listed["schedules"], json!([]));

    let (status, set) = put(&admin, "minutely", minutely.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{set}");
    let next = set["next_ms"].as_i64().expect("a next time");
    assert_eq!(next % 60_000, 0);
    assert!(
        next > set["updated_ms"].as_i64().unwrap_or(i64::MAX),
        "{set}"
    );
    let (_, listed) = analyst.get("/v1/schedules").await;
    assert_eq!(listed["schedules"][0]["cron"], "* * * * *", "{listed}");

    // The occurrence at `next` covers the minute before it, once.
    let (from_ms, to_ms) = (next - 60_000, next);
    let done = poll_until("the scheduled report", Duration::from_secs(120), || async {
        let (_, page) = analyst.get("/v1/jobs?kind=report&state=succeeded").await;
        let jobs = page["jobs"].as_array()?.clone();
        jobs.into_iter().find(|j| j["params"]["to_ms"] == to_ms)
    })
    .await;
    assert_eq!(
        done["params"],
        json!({"format": "csv", "from_ms": from_ms, "to_ms": to_ms}),
        "{done}"
    );
    assert_eq!(done["attempts"], 1, "{done}");
    let file = done["result_file_id"].as_str().expect("result file");
    let report_digest = analyst.digest(&format!("/v1/files/{file}")).await;
    let export = format!("/v1/export?format=csv&from_ms={from_ms}&to_ms={to_ms}");
    assert_eq!(report_digest, analyst.digest(&export).await);
    assert!(report_digest.1 > 60_000 * 50, "{report_digest:?}");
    // Both instances saw it due: one job, which ran once.
    let of_occurrence: (u64, u64) = api
        .clickhouse
        .query(
            "SELECT uniqExact(job_id), toUInt64(max(attempts)) FROM jobs \
             WHERE visitParamExtractInt(params, 'to_ms') = ?",
        )
        .bind(to_ms)
        .fetch_one()
        .await
        .expect("jobs counted");
    assert_eq!(of_occurrence, (1, 1));
    let mut queued = 0.0;
    for instance in [api.service(), twin.service()] {
        queued += instance
            .metric("pulse_query_scheduled_jobs_total")
            .await
            .unwrap_or(0.0);
    }
    assert!(queued >= 1.0, "{queued}");

    // Ended: listed no more, and a second end is 404.
    let end = |client: &Client| {
        Client::answer(client.request(reqwest::Method::DELETE, "/v1/schedules/minutely"))
    };
    assert_eq!(end(&analyst).await.0, StatusCode::FORBIDDEN);
    assert_eq!(end(&admin).await.0, StatusCode::NO_CONTENT);
    let (_, listed) = analyst.get("/v1/schedules").await;
    assert_eq!(listed["schedules"], json!([]));
    assert_eq!(end(&admin).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_store_that_refuses_every_attempt_fails_the_job_after_its_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = Objects::new(Backend::S3, &dir.path().join("objects"));
    let api = api_over(&dir.path().join("unused")).await;
    api.generate_events("acme", 1_000, END_MS, 0).await;
    // The right store with the wrong secret: every upload is refused.
    let mut settings = objects.env();
    settings.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    settings.extend([
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_string()),
        ("PULSE_WORKER_MAX_ATTEMPTS", "2".to_string()),
    ]);
    let worker = worker_with(&api, &unique("worker"), settings).await;
    let acme = Client::new(&api, "acme");
    let (status, job) = acme.submit(&report("csv", 0, END_MS + 1), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_str().expect("job id");
    let failed = acme
        .job_when(job_id, Duration::from_secs(60), |j| state(j) == "failed")
        .await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("gave up after 2 attempts: object storage"),
        "{error}"
    );
    assert!(failed["result_file_id"].is_null(), "{failed}");
    assert_eq!(objects.keys().await, Vec::<String>::new());
    assert_eq!(
        worker
            .metric("pulse_worker_attempts_total{kind=\"report\",outcome=\"error\"}")
            .await,
        Some(2.0)
    );
    // The worker is still there for the next job, which fails alike, not stuck.
    let (_, next) = acme.submit(&report("csv", 0, 10), None).await;
    let next_id = next["job_id"].as_str().expect("job id");
    let next = acme
        .job_when(next_id, Duration::from_secs(60), |j| state(j) == "failed")
        .await;
    assert_eq!(next["attempts"], 2, "{next}");
}
