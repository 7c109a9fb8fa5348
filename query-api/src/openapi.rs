//! The API's OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`, and a plain docs page rendered from it at
//! `/docs` (no scripts or assets from elsewhere, so it works offline).

use std::fmt::Write;

use axum::response::Html;
use axum::Json;
use pulse_common::scored::ScoredEvent;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes::{DeviceList, EventsPage, Series};
use crate::store::{Bucket, Device};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pulse query API",
        description = "Scored events for analysts (HTTP) and dashboards (WebSocket). Every route \
            needs `Authorization: Bearer <JWT or API key>`; the caller's tenant comes from the \
            credential and scopes every query. Only `/v1/stream` also takes the token as its \
            `access_token` query parameter (browsers cannot set headers on a WebSocket); on any \
            other route a token in the query string does not authenticate (401)."
    ),
    paths(
        crate::routes::events,
        crate::routes::event,
        crate::routes::anomalies,
        crate::routes::devices,
        crate::routes::series,
        crate::aggregates::aggregates,
        crate::stream::upgrade,
        crate::admin::audit,
        crate::export::export,
        crate::files::file,
        crate::jobs::submit,
        crate::jobs::list,
        crate::jobs::job,
        crate::jobs::cancel,
        crate::reads::of_job,
        crate::reads::snapshots,
        crate::schedules::set,
        crate::schedules::list,
        crate::schedules::remove,
    ),
    components(schemas(
        ScoredEvent,
        EventsPage,
        DeviceList,
        Device,
        Series,
        Bucket,
        crate::aggregates::Aggregates,
        crate::aggregates::Group,
        crate::aggregates::GroupBy,
        ErrorBody,
        crate::admin::AuditTrail,
        crate::audit::AuditRecord,
        crate::export::Format,
        crate::jobs::SubmitDoc,
        crate::jobs::SubmitReport,
        crate::jobs::SubmitOcr,
        crate::jobs::JobView,
        crate::jobs::JobList,
        crate::schedules::SetSchedule,
        crate::schedules::ScheduleParams,
        crate::schedules::ScheduleView,
        crate::schedules::ScheduleList,
        pulse_common::jobs::JobState,
        pulse_common::jobs::ReportParams,
        pulse_common::jobs::OcrParams,
        pulse_common::jobs::Line,
        crate::jobs::Kind,
        crate::schedules::ScheduledKind,
        crate::reads::ReadView,
        crate::reads::ReadList,
        crate::reads::SnapshotList,
        pulse_common::jobs::ReportFormat
    )),
    modifiers(&BearerAuth, &CommonAnswers, &WebSocketUpgrade),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT or API key")
                        .build(),
                ),
            );
        }
    }
}

/// What any route may answer besides its own: a bad query string (400),
/// a missing or wrong credential (401), a role that may not (403), the
/// tenant's rate limit (429) and storage that is down (503), each with an
/// `ErrorBody`. Added here once rather than on every handler.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let answers = [
            (
                "400",
                "A parameter is unknown or out of bounds (`field` names it)",
            ),
            ("401", "No credential, or one that is wrong or expired"),
            ("403", "The credential's role may not use this route"),
            (
                "429",
                "The tenant's rate limit (`--rate-limit`); retry after `Retry-After` seconds",
            ),
            ("503", "Storage or the live feed is unavailable; retry"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                for (code, description) in answers {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error_answer(description));
                }
            }
        }
    }
}

fn error_answer(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The headers of a WebSocket opening handshake (RFC 6455), as parameters
/// of `/v1/stream`: a request without them is refused with 400.
struct WebSocketUpgrade;

impl Modify for WebSocketUpgrade {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(op) = openapi
            .paths
            .paths
            .get_mut("/v1/stream")
            .and_then(|item| item.get.as_mut())
        else {
            return;
        };
        let header = |name: &str, schema: ObjectBuilder, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema.schema_type(Type::String)))
                .build()
        };
        let headers = [
            header(
                "Connection",
                ObjectBuilder::new().enum_values(Some(["Upgrade"])),
                "`Upgrade`",
            ),
            header(
                "Upgrade",
                ObjectBuilder::new().enum_values(Some(["websocket"])),
                "`websocket`",
            ),
            header(
                "Sec-WebSocket-Version",
                ObjectBuilder::new().enum_values(Some(["13"])),
                "`13`",
            ),
            header(
                "Sec-WebSocket-Key",
                ObjectBuilder::new().pattern(Some("^[A-Za-z0-9+/]{22}==$")),
                "16 random bytes, base64",
            ),
        ];
        op.parameters.get_or_insert_with(Vec::new).extend(headers);
    }
}

pub async fn json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn docs() -> Html<String> {
    Html(render(&ApiDoc::openapi()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every route with its parameters and responses, as one HTML page.
fn render(doc: &utoipa::openapi::OpenApi) -> String {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title>\
         <style>body{{font:15px system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}\
         code{{background:#f3f3f3;padding:0 .2em}}td,th{{text-align:left;padding:.2em .6em;border-bottom:1px solid #ddd}}\
         table{{border-collapse:collapse}}</style></head><body><h1>{0}</h1><p>{1}</p>\
         <p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>",
        escape(&doc.info.title),
        escape(doc.info.description.as_deref().unwrap_or_default()),
    );
    for (path, item) in &doc.paths.paths {
        let operations: [(&str, &Option<Operation>); 2] =
            [("GET", &item.get), ("POST", &item.post)];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            let _ = write!(
                html,
                "<h2><code>{method} {}</code></h2><p>{}</p>",
                escape(path),
                escape(
                    op.description
                        .as_deref()
                        .or(op.summary.as_deref())
                        .unwrap_or_default()
                ),
            );
            let params = op.parameters.as_deref().unwrap_or_default();
            if !params.is_empty() {
                html.push_str(
                    "<table><tr><th>parameter</th><th>in</th><th>required</th><th>what</th></tr>",
                );
                for p in params {
                    let place = match p.parameter_in {
                        ParameterIn::Path => "path",
                        ParameterIn::Query => "query",
                        ParameterIn::Header => "header",
                        ParameterIn::Cookie => "cookie",
                    };
                    let _ =
                        write!(
                        html,
                        "<tr><td><code>{}</code></td><td>{place}</td><td>{}</td><td>{}</td></tr>",
                        escape(&p.name),
                        if p.required == Required::True { "yes" } else { "no" },
                        escape(p.description.as_deref().unwrap_or_default()),
                    );
                }
                html.push_str("</table>");
            }
            html.push_str("<p>Responses: ");
            let codes: Vec<String> = op
                .responses
                .responses
                .iter()
                .map(|(code, r)| match r {
                    RefOr::T(r) if !r.description.is_empty() => {
                        format!("{} ({})", escape(code), escape(&r.description))
                    }
                    _ => escape(code),
                })
                .collect();
            html.push_str(&codes.join(", "));
            html.push_str("</p>");
        }
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_and_its_parameters() {
        let doc = ApiDoc::openapi();
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/v1/aggregates",
                "/v1/anomalies",
                "/v1/audit",
                "/v1/devices",
                "/v1/devices/{source_id}/series",
                "/v1/events",
                "/v1/events/{event_id}",
                "/v1/export",
                "/v1/files/{file_id}",
                "/v1/jobs",
                "/v1/jobs/{job_id}",
                "/v1/jobs/{job_id}/cancel",
                "/v1/jobs/{job_id}/reads",
                "/v1/schedules",
                "/v1/schedules/{name}",
                "/v1/snapshots",
                "/v1/stream",
            ]
        );
        assert_eq!(
            param_names(&doc, "/v1/jobs/{job_id}/reads"),
            ["job_id", "after", "limit"]
        );
        assert_eq!(param_names(&doc, "/v1/snapshots"), ["source_id", "limit"]);
        assert_eq!(
            param_names(&doc, "/v1/events"),
            ["source_id", "from_ms", "to_ms", "limit", "cursor"]
        );
        assert_eq!(
            param_names(&doc, "/v1/aggregates"),
            [
                "metric",
                "group_by",
                "source_id",
                "from_ms",
                "to_ms",
                "limit"
            ]
        );
        assert_eq!(
            param_names(&doc, "/v1/stream"),
            [
                "access_token",
                "source_id",
                "event_type",
                "min_score",
                "resume",
                "jobs",
                "Connection",
                "Upgrade",
                "Sec-WebSocket-Version",
                "Sec-WebSocket-Key"
            ]
        );
        // The query-string token is the stream's parameter, no other route's.
        for path in doc.paths.paths.keys().filter(|p| *p != "/v1/stream") {
            assert!(
                !param_names(&doc, path).contains(&"access_token".to_string()),
                "{path}"
            );
        }
        let stream = doc.paths.paths["/v1/stream"]
            .get
            .as_ref()
            .expect("GET /v1/stream");
        assert!(
            stream.responses.responses.contains_key("429"),
            "429 on /v1/stream"
        );
    }

    /// The bounds the document states, so that they cannot drift from
    /// the ones the handlers enforce.
    #[test]
    fn the_document_states_the_bounds_the_handlers_enforce() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("JSON");
        let param = |path: &str, name: &str| -> serde_json::Value {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .map(|p| p["schema"].clone())
                .unwrap_or_else(|| panic!("{path} {name}"))
        };
        let max_time = pulse_common::contract::MAX_EVENT_TIME_MS;
        for path in [
            "/v1/events",
            "/v1/anomalies",
            "/v1/devices/{source_id}/series",
            "/v1/aggregates",
            "/v1/audit",
            "/v1/export",
        ] {
            for name in ["from_ms", "to_ms"] {
                let schema = param(path, name);
                assert_eq!(schema["minimum"], 0, "{path} {name}");
                assert_eq!(schema["maximum"], max_time, "{path} {name}");
            }
        }
        for path in [
            "/v1/events",
            "/v1/anomalies",
            "/v1/devices",
            "/v1/aggregates",
            "/v1/audit",
        ] {
            let schema = param(path, "limit");
            assert_eq!(
                (schema["minimum"].as_u64(), schema["maximum"].as_u64()),
                (Some(1), Some(crate::routes::MAX_LIMIT)),
                "{path}"
            );
        }
        let resolution = param("/v1/devices/{source_id}/series", "resolution_s");
        assert_eq!(
            (
                &resolution["minimum"],
                &resolution["maximum"],
                &resolution["multipleOf"]
            ),
            (
                &serde_json::json!(60),
                &serde_json::json!(86400),
                &serde_json::json!(60)
            )
        );
        // Every $ref resolves.
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1) {
            let name = &name[..name.find('"').unwrap_or(name.len())];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "unresolved {name}"
            );
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let operations = item.as_object().expect("operations");
            for (method, operation) in operations
                .iter()
                .filter(|(m, _)| *m == "get" || *m == "post")
            {
                for code in ["401", "403", "429", "503"] {
                    assert!(
                        operation["responses"][code].is_object(),
                        "{method} {path} {code}"
                    );
                }
            }
        }
        let export = doc["paths"]["/v1/export"]["get"]["responses"]["200"]["content"]
            .as_object()
            .map(|c| c.keys().cloned().collect::<Vec<_>>());
        assert_eq!(
            export,
            Some(vec![
                "application/vnd.apache.parquet".to_string(),
                "application/x-ndjson".to_string(),
                "text/csv".to_string()
            ])
        );
        let upgrade = param("/v1/stream", "Upgrade");
        assert_eq!(upgrade["enum"], serde_json::json!(["websocket"]));
    }

    fn param_names(doc: &utoipa::openapi::OpenApi, path: &str) -> Vec<String> {
        doc.paths.paths[path]
            .get
            .as_ref()
            .and_then(|op| op.parameters.as_ref())
            .map(|ps| ps.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_docs_page_shows_each_route() {
        let html = render(&ApiDoc::openapi());
        for route in [
            "GET /v1/events",
            "GET /v1/devices/{source_id}/series",
            "GET /v1/stream",
        ] {
            assert!(html.contains(route), "{route} missing");
        }
        assert!(html.contains("<code>cursor</code>"));
    }
}
