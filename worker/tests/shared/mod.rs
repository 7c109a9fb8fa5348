// Each test binary uses some of these helpers.
#![allow(dead_code)]

//! What the worker's integration tests share: a query API over a store of
//! the test's own, workers of its topics, and a tenant's API client.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use pulse_testkit::query_api::{self as support, Api};
use pulse_testkit::{free_port, poll_until, Service, Stack};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub(crate) async fn api_over(objects: &Path) -> Api {
    let url = objects.display().to_string();
    support::start_api_with(&[], &[("PULSE_OBJECT_STORE_URL", &url)]).await
}

/// A worker of `api`'s topics and database, in consumer group `group`.
pub(crate) async fn worker(api: &Api, objects: &Path, group: &str) -> Service {
    let store = ("PULSE_OBJECT_STORE_URL", objects.display().to_string());
    worker_with(api, group, vec![store]).await
}

/// As [`worker`], with the store and any other settings in `settings`.
pub(crate) async fn worker_with(
    api: &Api,
    group: &str,
    settings: Vec<(&'static str, String)>,
) -> Service {
    let stack = Stack::from_env();
    let port = free_port();
    let mut env = vec![
        ("PULSE_WORKER_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", api.topic_prefix.clone()),
        ("PULSE_CLICKHOUSE_DATABASE", api.database.clone()),
        ("PULSE_WORKER_GROUP", group.to_string()),
        ("PULSE_WORKER_SESSION_TIMEOUT_MS", "6000".into()),
        ("PULSE_JOB_PARTITIONS", "2".into()),
    ];
    env.extend(settings);
    Service::start(&stack, "pulse-worker", port, &[], &env).await
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) token: String,
}

impl Client {
    pub(crate) fn new(api: &Api, tenant: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: api.url.clone(),
            token: support::hs256(tenant, "analyst"),
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub(crate) async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = req.send().await.expect("API answers");
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn submit(&self, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.request(reqwest::Method::POST, "/v1/jobs").json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        Self::answer(req).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::answer(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn cancel(&self, job_id: &str) -> (StatusCode, Value) {
        let path = format!("/v1/jobs/{job_id}/cancel");
        Self::answer(self.request(reqwest::Method::POST, &path)).await
    }

    /// The job once `done` holds of it.
    pub(crate) async fn job_when(
        &self,
        job_id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_until("the job's state", within, || async {
            let (status, job) = self.get(&format!("/v1/jobs/{job_id}")).await;
            (status == StatusCode::OK && done(&job)).then_some(job)
        })
        .await
    }

    /// SHA-256 and length of the body at `path`, streamed.
    pub(crate) async fn digest(&self, path: &str) -> (String, u64) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("API answers");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let mut body = r.bytes_stream();
        let (mut sha, mut len) = (Sha256::new(), 0u64);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("body streams");
            len += chunk.len() as u64;
            sha.update(&chunk);
        }
        (hex::encode(sha.finalize()), len)
    }
}

pub(crate) fn state(job: &Value) -> &str {
    job["state"].as_str().unwrap_or_default()
}
