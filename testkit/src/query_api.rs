//! The query API under test: its credentials (an HS256 secret, the RS256
//! key pair of `query-api/tests/fixtures`, test-only, and an API key)
//! written where it reads them, tokens minted for any tenant and role, and
//! the API started over a fresh database of its own.

use std::path::PathBuf;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pulse_common::clock::now_ms;
use pulse_common::credentials::digest_of;
use pulse_common::scored::ScoredEvent;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{clickhouse, free_port, poll_until, unique, Service, Stack};

pub const HS256_SECRET: &str = "pulse-test-secret-0123456789abcdef0123";
/// API key of tenant `acme`, role analyst.
pub const ACME_ANALYST_KEY: &str = "acme-analyst-key-0001";

/// A test key of `query-api/tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../query-api/tests/fixtures")
        .join(name)
}

/// Writes the secret and key files and returns the API's settings for them.
pub fn auth_env(dir_name: &str) -> Vec<(&'static str, String)> {
    let dir = std::env::temp_dir().join(dir_name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret = dir.join("hs256.secret");
    std::fs::write(&secret, HS256_SECRET).expect("secret written");
    let keys = dir.join("api-keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[api_keys]]\nname = \"acme-reports\"\ntenant = \"acme\"\nrole = \"analyst\"\nsha256 = \"{}\"\n",
            digest_of(ACME_ANALYST_KEY)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    )
    .expect("keys written");
    vec![
        ("PULSE_JWT_HS256_SECRET_FILE", secret.display().to_string()),
        (
            "PULSE_JWT_RS256_PUBLIC_KEY_FILE",
            fixture("rs256-test-public.pem").display().to_string(),
        ),
        ("PULSE_QUERY_API_KEYS_FILE", keys.display().to_string()),
    ]
}

fn claims(tenant: &str, role: &str, expires_in_s: i64) -> serde_json::Value {
    json!({
        "sub": format!("{role}@{tenant}"),
        "tenant": tenant,
        "role": role,
        "exp": now_ms() / 1000 + expires_in_s,
    })
}

/// An HS256 token, valid for an hour.
pub fn hs256(tenant: &str, role: &str) -> String {
    hs256_with(tenant, role, 3600, HS256_SECRET)
}

pub fn hs256_with(tenant: &str, role: &str, expires_in_s: i64, secret: &str) -> String {
    hs256_claims(&claims(tenant, role, expires_in_s), secret)
}

/// An HS256 token of `claims`, e.g. with `iss` and `aud`.
pub fn hs256_claims(claims: &serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// The claims of a token of `tenant` and `role`, valid for `expires_in_s`.
pub fn claims_of(tenant: &str, role: &str, expires_in_s: i64) -> serde_json::Value {
    claims(tenant, role, expires_in_s)
}

/// An RS256 token signed with the test key pair, valid for an hour.
pub fn rs256(tenant: &str, role: &str) -> String {
    let pem = std::fs::read(fixture("rs256-test-private.pem")).expect("test key");
    encode(
        &Header::new(Algorithm::RS256),
        &claims(tenant, role, 3600),
        &EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
    )
    .expect("token")
}

/// An event of a minute ago.
pub fn row(tenant: &str, source: &str, id: &str) -> ScoredEvent {
    row_at(tenant, source, id, now_ms() - 60_000)
}

pub fn row_at(tenant: &str, source: &str, id: &str, time_ms: i64) -> ScoredEvent {
    ScoredEvent {
        tenant_id: tenant.into(),
        source_id: source.into(),
        event_id: id.into(),
        kind: "telemetry".into(),
        event_time: u32::try_from(time_ms / 1000).expect("a recent time"),
        event_time_ms: time_ms,
        schema_id: 1,
        reading_names: vec!["temperature_c".into()],
        reading_values: vec![21.0],
        event_type: String::new(),
        properties_json: "{}".into(),
        firmware_version: String::new(),
        score: 0.1,
        is_anomaly: 0,
        model_version: "test".into(),
        device_seq: 1,
        feature_names: vec![],
        feature_values: vec![],
        processed_ms: time_ms + 500,
        source_topic: "t".into(),
        source_partition: 0,
        source_offset: 0,
    }
}

pub struct Api {
    _service: Service,
    pub url: String,
    /// Prefix of the API's Kafka topics.
    pub topic_prefix: String,
    /// ClickHouse database the API reads, and a client of it.
    pub database: String,
    pub clickhouse: clickhouse::Client,
    http: reqwest::Client,
}

impl Api {
    /// The API's process id, e.g. to read its peak memory.
    pub fn pid(&self) -> u32 {
        self._service.pid()
    }

    /// The API's process, e.g. to poll its `/readyz`.
    pub fn service(&self) -> &Service {
        &self._service
    }

    pub fn service_mut(&mut self) -> &mut Service {
        &mut self._service
    }

    /// `count` telemetry events of `tenant` made by ClickHouse itself: event
    /// n is n milliseconds before `end_ms`, and carries `padding` bytes in
    /// its properties.
    pub async fn generate_events(&self, tenant: &str, count: u64, end_ms: i64, padding: usize) {
        let padding = "x".repeat(padding);
        self.clickhouse
            .query(&format!(
                "INSERT INTO events (tenant_id, source_id, event_id, kind, event_time, event_time_ms, \
                 reading_names, reading_values, properties_json, model_version, processed_ms, \
                 device_seq, feature_names, feature_values) \
                 SELECT '{tenant}', concat('device-', toString(number % 1000)), \
                        concat('evt-', toString(number)), 'telemetry', \
                        toDateTime(intDiv({end_ms} - number, 1000)), {end_ms} - number, \
                        ['temperature_c', 'humidity_pct', 'vibration_g', 'battery_v'], \
                        [20.5, 55.25, 0.2, 3.9], '{{\"note\":\"{padding}\"}}', 'pca-ae-2', \
                        {end_ms} - number + 500, number + 1, \
                        ['temperature_c.ewma', 'temperature_c.z'], [20.5, 0.25] \
                 FROM system.numbers LIMIT {count}"
            ))
            .execute()
            .await
            .expect("rows generated");
    }

    /// Requests in the audit trail by status, once it holds at least `count`.
    pub async fn audit_statuses(&self, count: u64) -> Vec<(u16, u64)> {
        poll_until(
            "every request in the audit table",
            std::time::Duration::from_secs(60),
            || async {
                let rows: Vec<(u16, u64)> = self
                    .clickhouse
                    .query("SELECT status, count() FROM audit GROUP BY status ORDER BY status")
                    .fetch_all()
                    .await
                    .ok()?;
                (rows.iter().map(|(_, n)| n).sum::<u64>() >= count).then_some(rows)
            },
        )
        .await
    }

    /// An export of `query` (e.g. `format=csv`) begun as `token`, its body
    /// left to the caller to read; asserts that it began with 200.
    pub async fn start_export(&self, query: &str, token: &str) -> reqwest::Response {
        let response = self
            .http
            .get(format!("{}/v1/export?{query}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("export starts");
        assert_eq!(response.status(), StatusCode::OK);
        response
    }

    pub async fn get(&self, path: &str, credential: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(c) = credential {
            req = req.bearer_auth(c);
        }
        let r = req.send().await.expect("API answers");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A fresh database holding `rows`, and the API over it.
pub async fn start_api(rows: &[ScoredEvent]) -> Api {
    start_api_with(rows, &[]).await
}

/// As [`start_api`], with more settings for the API.
pub async fn start_api_with(rows: &[ScoredEvent], settings: &[(&'static str, &str)]) -> Api {
    let stack = Stack::from_env();
    start_api_on(&stack.clickhouse_url, rows, settings).await
}

/// As [`start_api_with`], over the ClickHouse server at `clickhouse_url`.
pub async fn start_api_on(
    clickhouse_url: &str,
    rows: &[ScoredEvent],
    settings: &[(&'static str, &str)],
) -> Api {
    start_api_inner(clickhouse_url, rows, settings, Launch::Ready).await
}

/// As [`start_api_with`], not waiting for the API to be ready: for tests
/// of what it waits for.
pub async fn spawn_api(settings: &[(&'static str, &str)]) -> Api {
    let stack = Stack::from_env();
    start_api_inner(&stack.clickhouse_url, &[], settings, Launch::Unready).await
}

/// How a test's API is started.
enum Launch<'a> {
    /// Waited for until ready.
    Ready,
    /// Not waited for.
    Unready,
    /// Waited for, its output written to this file.
    Logging(&'a std::path::Path),
}

/// As [`start_api_with`], writing the API's log (stdout and stderr) to
/// `log`, for a test of what it logs.
pub async fn start_api_logging(settings: &[(&'static str, &str)], log: &std::path::Path) -> Api {
    let stack = Stack::from_env();
    start_api_inner(&stack.clickhouse_url, &[], settings, Launch::Logging(log)).await
}

/// A fresh database with the processor's tables (its numbered migrations),
/// on `clickhouse_url`; the API creates its own audit table when started.
pub async fn migrated_database(clickhouse_url: &str) -> String {
    let database = unique("api_");
    migrate(clickhouse_url, &database).await;
    database
}

/// Creates `database` with the processor's tables, as the processor's
/// migrations do.
pub async fn migrate(clickhouse_url: &str, database: &str) {
    let admin = clickhouse(clickhouse_url, "default");
    let schemas = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/clickhouse");
    admin
        .query(&format!("CREATE DATABASE {database}"))
        .execute()
        .await
        .expect("database created");
    let mut migrations: Vec<_> = std::fs::read_dir(&schemas)
        .expect("schemas")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with('0') && name.ends_with(".sql")
        })
        .collect();
    migrations.sort();
    for m in migrations {
        let sql = std::fs::read_to_string(&m).expect("migration");
        admin
            .query(&sql.replace("{db}", database))
            .execute()
            .await
            .expect("migration applies");
    }
}

async fn start_api_inner(
    clickhouse_url: &str,
    rows: &[ScoredEvent],
    settings: &[(&'static str, &str)],
    launch: Launch<'_>,
) -> Api {
    let stack = Stack::from_env();
    let database = migrated_database(clickhouse_url).await;
    let client = clickhouse(clickhouse_url, &database);
    let mut insert = client
        .insert::<ScoredEvent>("events")
        .await
        .expect("insert");
    for r in rows {
        insert.write(r).await.expect("row");
    }
    insert.end().await.expect("rows stored");

    let port = free_port();
    let topic_prefix = unique("api") + ".";
    let mut env = vec![
        ("PULSE_QUERY_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", topic_prefix.clone()),
        ("PULSE_CLICKHOUSE_URL", clickhouse_url.to_string()),
        ("PULSE_CLICKHOUSE_DATABASE", database.clone()),
        ("PULSE_RESULT_PARTITIONS", "1".into()),
    ];
    env.extend(auth_env(&unique("api-auth")));
    env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
    let service = match launch {
        Launch::Ready => Service::start(&stack, "pulse-query-api", port, &[], &env).await,
        Launch::Unready => Service::spawn(&stack, "pulse-query-api", port, &[], &env),
        Launch::Logging(log) => {
            let mut service = Service::spawn_logged(&stack, "pulse-query-api", port, &env, log);
            service.wait_ready(std::time::Duration::from_secs(60)).await;
            service
        }
    };
    Api {
        clickhouse: clickhouse(clickhouse_url, &database),
        database,
        url: service.url.clone(),
        topic_prefix,
        _service: service,
        http: reqwest::Client::new(),
    }
}
