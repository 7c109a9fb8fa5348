//! The API's OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`, and a plain docs page rendered from it at
//! `/docs` (no scripts or assets from elsewhere, so it works offline).

use std::fmt::Write;

use axum::response::Html;
use axum::Json;
use pulse_common::scored::ScoredEvent;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};

use crate::routes::{DeviceList, ErrorBody, EventsPage, Series};
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
        crate::audit::AuditRecord
    )),
    modifiers(&BearerAuth),
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
                "/v1/stream",
            ]
        );
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
                "resume"
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
