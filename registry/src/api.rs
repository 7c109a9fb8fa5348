//! The Confluent Schema Registry REST API (the subset for Avro schemas that
//! Confluent's clients and schema_registry_converter use).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::compat::CompatibilityLevel;
use super::error::RegistryError;
use super::limits::Limits;
use super::log::Change;
use super::state::parse_schema;
use super::store::KafkaStore;
use super::version::VersionSpec;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Result<T> = std::result::Result<T, RegistryError>;

/// A JSON body in the registry's content type.
struct RegistryJson(Value);

impl IntoResponse for RegistryJson {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], Json(self.0)).into_response()
    }
}

pub fn router(store: Arc<KafkaStore>) -> Router {
    let body_limit = store.read(|s| s.limits().max_encoded_bytes());
    Router::new()
        .route("/", get(|| async { RegistryJson(json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { RegistryJson(json!(["AVRO"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_against_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_against_all),
        )
        .route(
            "/mode",
            get(|| async { RegistryJson(json!({"mode": "READWRITE"})) }),
        )
        // Refuses a body that cannot hold a schema within the limit before
        // reading it whole ([`Body`] turns the refusal into a 413 of ours).
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(store)
}

/// A request body, refused in the registry's error format when over the limit.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = RegistryError;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(RegistryError::body_too_large())
            }
            Err(e) => Err(RegistryError::bad_request(e.body_text())),
        }
    }
}

/// Boolean query flags. Clients spell them `true`, `True` or `1`; flags the
/// registry does not use (`normalize`, `format`, ...) are ignored.
#[derive(Default)]
struct Flags {
    deleted: bool,
    permanent: bool,
    verbose: bool,
    default_to_global: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Flags {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(RegistryError::bad_request)?;
        let flag = |name: &str| -> Result<bool> {
            match pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_ascii_lowercase())
            {
                None => Ok(false),
                Some(v) if v == "true" || v == "1" => Ok(true),
                Some(v) if v == "false" || v == "0" || v.is_empty() => Ok(false),
                Some(v) => Err(RegistryError::bad_request(format!(
                    "query parameter {name}: expected true or false, got '{v}'"
                ))),
            }
        };
        Ok(Self {
            deleted: flag("deleted")?,
            permanent: flag("permanent")?,
            verbose: flag("verbose")?,
            default_to_global: flag("defaultToGlobal")?,
        })
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Reads a schema from a request body, whatever content type the client
/// sent, refusing one over the size limit before parsing it.
fn schema_body(body: &Bytes, limits: &Limits) -> Result<String> {
    let parsed: SchemaBody = serde_json::from_slice(body).map_err(RegistryError::bad_request)?;
    limits.check_schema(&parsed.schema)?;
    match parsed.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(RegistryError::invalid_schema(format!(
                "schema type {other} is not supported; this registry serves AVRO"
            )))
        }
    }
    if !parsed.references.is_empty() {
        return Err(RegistryError::invalid_schema(
            "schema references are not supported",
        ));
    }
    Ok(parsed.schema)
}

fn limits(store: &KafkaStore) -> Limits {
    store.read(|s| *s.limits())
}

fn parse_id(id: &str) -> Result<u32> {
    id.parse().map_err(|_| RegistryError::schema_not_found())
}

/// Looks up schema `id`, catching up with the log first on a miss, so a
/// schema registered through another instance a moment ago is found.
async fn find_schema(store: &KafkaStore, id: u32) -> Result<Arc<super::state::StoredSchema>> {
    if let Some(s) = store.read(|st| st.schema(id)) {
        return Ok(s);
    }
    store.sync().await?;
    store
        .read(|st| st.schema(id))
        .ok_or_else(RegistryError::schema_not_found)
}

async fn schema_by_id(
    State(store): State<Arc<KafkaStore>>,
    Path(id): Path<String>,
) -> Result<RegistryJson> {
    let schema = find_schema(&store, parse_id(&id)?).await?;
    Ok(RegistryJson(json!({"schema": schema.text})))
}

async fn raw_schema_by_id(
    State(store): State<Arc<KafkaStore>>,
    Path(id): Path<String>,
) -> Result<Response> {
    let schema = find_schema(&store, parse_id(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], schema.text.clone()).into_response())
}

/// The (subject, version) pairs that use schema `id`; 404 for an id the
/// registry does not know.
async fn usages_of(store: &KafkaStore, id: &str, deleted: bool) -> Result<Vec<(String, u32)>> {
    let id = parse_id(id)?;
    find_schema(store, id).await?;
    Ok(store.read(|s| s.usages(id, deleted)))
}

async fn versions_by_id(
    State(store): State<Arc<KafkaStore>>,
    Path(id): Path<String>,
    flags: Flags,
) -> Result<RegistryJson> {
    let usages = usages_of(&store, &id, flags.deleted).await?;
    Ok(RegistryJson(Value::Array(
        usages
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect(),
    )))
}

async fn subjects_by_id(
    State(store): State<Arc<KafkaStore>>,
    Path(id): Path<String>,
    flags: Flags,
) -> Result<RegistryJson> {
    let mut subjects: Vec<String> = usages_of(&store, &id, flags.deleted)
        .await?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    Ok(RegistryJson(json!(subjects)))
}

async fn list_subjects(State(store): State<Arc<KafkaStore>>, flags: Flags) -> RegistryJson {
    RegistryJson(json!(store.read(|s| s.subjects(flags.deleted))))
}

async fn list_versions(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    flags: Flags,
) -> Result<RegistryJson> {
    Ok(RegistryJson(json!(
        store.read(|s| s.versions(&subject, flags.deleted))?
    )))
}

fn version_json(subject: &str, version: u32, id: u32, schema: &str) -> Value {
    json!({"subject": subject, "version": version, "id": id, "schema": schema})
}

async fn get_version(
    State(store): State<Arc<KafkaStore>>,
    Path((subject, version)): Path<(String, String)>,
    flags: Flags,
) -> Result<RegistryJson> {
    let spec = VersionSpec::parse(&version)?;
    let (entry, schema) = store.read(|s| s.version(&subject, spec, flags.deleted))?;
    Ok(RegistryJson(version_json(
        &subject,
        entry.version,
        entry.id,
        &schema.text,
    )))
}

async fn get_version_schema(
    State(store): State<Arc<KafkaStore>>,
    Path((subject, version)): Path<(String, String)>,
    flags: Flags,
) -> Result<Response> {
    let spec = VersionSpec::parse(&version)?;
    let (_, schema) = store.read(|s| s.version(&subject, spec, flags.deleted))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], schema.text.clone()).into_response())
}

async fn register(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    Body(body): Body,
) -> Result<RegistryJson> {
    let text = schema_body(&body, &limits(&store))?;
    parse_schema(&text)?;
    let registered = store
        .write(|s| {
            let r = s.plan_register(&subject, &text)?;
            Ok(((r.id, r.version), r.changes))
        })
        .await?;
    tracing::info!(%subject, id = registered.0, version = registered.1, "schema registered");
    Ok(RegistryJson(
        json!({"id": registered.0, "subject": subject, "version": registered.1}),
    ))
}

async fn lookup(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    flags: Flags,
    Body(body): Body,
) -> Result<RegistryJson> {
    let text = schema_body(&body, &limits(&store))?;
    let (entry, schema) = store.read(|s| s.lookup(&subject, &text, flags.deleted))?;
    Ok(RegistryJson(version_json(
        &subject,
        entry.version,
        entry.id,
        &schema.text,
    )))
}

async fn delete_subject(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    flags: Flags,
) -> Result<RegistryJson> {
    let versions = store
        .write(|s| s.plan_delete_subject(&subject, flags.permanent))
        .await?;
    Ok(RegistryJson(json!(versions)))
}

async fn delete_version(
    State(store): State<Arc<KafkaStore>>,
    Path((subject, version)): Path<(String, String)>,
    flags: Flags,
) -> Result<RegistryJson> {
    let spec = VersionSpec::parse(&version)?;
    let deleted = store
        .write(|s| s.plan_delete_version(&subject, spec, flags.permanent))
        .await?;
    Ok(RegistryJson(json!(deleted)))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn config_body(body: &Bytes) -> Result<CompatibilityLevel> {
    let parsed: ConfigBody = serde_json::from_slice(body).map_err(RegistryError::bad_request)?;
    parsed
        .compatibility
        .parse()
        .map_err(RegistryError::invalid_compatibility)
}

async fn get_global_config(State(store): State<Arc<KafkaStore>>) -> RegistryJson {
    RegistryJson(json!({"compatibilityLevel": store.read(|s| s.global_level())}))
}

async fn put_global_config(
    State(store): State<Arc<KafkaStore>>,
    Body(body): Body,
) -> Result<RegistryJson> {
    let level = config_body(&body)?;
    store
        .write(|_| {
            Ok((
                (),
                vec![Change::PutConfig {
                    subject: None,
                    level,
                }],
            ))
        })
        .await?;
    Ok(RegistryJson(json!({"compatibility": level})))
}

async fn get_subject_config(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    flags: Flags,
) -> Result<RegistryJson> {
    let level = store.read(|s| {
        s.subject_level(&subject)
            .or_else(|| flags.default_to_global.then(|| s.global_level()))
    });
    level
        .map(|l| RegistryJson(json!({"compatibilityLevel": l})))
        .ok_or_else(|| RegistryError::subject_config_not_found(&subject))
}

async fn put_subject_config(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    Body(body): Body,
) -> Result<RegistryJson> {
    let level = config_body(&body)?;
    let change = Change::PutConfig {
        subject: Some(subject),
        level,
    };
    store.write(|_| Ok(((), vec![change.clone()]))).await?;
    Ok(RegistryJson(json!({"compatibility": level})))
}

async fn delete_subject_config(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
) -> Result<RegistryJson> {
    let previous = store
        .write(|s| {
            let level = s
                .subject_level(&subject)
                .ok_or_else(|| RegistryError::subject_config_not_found(&subject))?;
            Ok((
                level,
                vec![Change::RemoveConfig {
                    subject: Some(subject.clone()),
                }],
            ))
        })
        .await?;
    Ok(RegistryJson(json!({"compatibilityLevel": previous})))
}

fn compatibility_json(violations: Vec<String>, verbose: bool) -> RegistryJson {
    let mut body = json!({"is_compatible": violations.is_empty()});
    if verbose {
        body["messages"] = json!(violations);
    }
    RegistryJson(body)
}

async fn check_against_version(
    State(store): State<Arc<KafkaStore>>,
    Path((subject, version)): Path<(String, String)>,
    flags: Flags,
    Body(body): Body,
) -> Result<RegistryJson> {
    let text = schema_body(&body, &limits(&store))?;
    let spec = VersionSpec::parse(&version)?;
    let violations = store.read(|s| s.compatibility_violations(&subject, &text, Some(spec)))?;
    Ok(compatibility_json(violations, flags.verbose))
}

async fn check_against_all(
    State(store): State<Arc<KafkaStore>>,
    Path(subject): Path<String>,
    flags: Flags,
    Body(body): Body,
) -> Result<RegistryJson> {
    let text = schema_body(&body, &limits(&store))?;
    let violations = store.read(|s| s.compatibility_violations(&subject, &text, None))?;
    Ok(compatibility_json(violations, flags.verbose))
}
