//! What the API writes down about a request (its audit record, its log
//! spans) never holds a credential. The only one a URL may carry is the
//! `access_token` of a WebSocket upgrade (`crate::auth::QUERY_TOKEN_ROUTE`);
//! it is replaced by `(redacted)` before the query string or URI is kept
//! anywhere, on every route, since a client may send one anywhere.

use axum::http::{Request, Uri};
use tracing::Span;

/// The query string without the token a WebSocket client may carry in it.
pub fn query(query: &str) -> String {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let v = if k == "access_token" {
                "(redacted)".into()
            } else {
                v
            };
            (k, v)
        })
        .fold(
            url::form_urlencoded::Serializer::new(String::new()),
            |mut s, (k, v)| {
                s.append_pair(&k, &v);
                s
            },
        )
        .finish()
}

/// The path and the redacted query string of `uri`.
pub fn uri(uri: &Uri) -> String {
    match uri.query() {
        Some(q) => format!("{}?{}", uri.path(), query(q)),
        None => uri.path().to_string(),
    }
}

/// The span `tower_http`'s `TraceLayer` opens for a request: its default
/// one (method, URI, version, at debug level, under tower_http's target so
/// that `RUST_LOG=tower_http=debug` still shows it), with the URI redacted.
pub fn request_span<B>(request: &Request<B>) -> Span {
    tracing::debug_span!(
        target: "tower_http::trace::make_span",
        "request",
        method = %request.method(),
        uri = %uri(request.uri()),
        version = ?request.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_the_audit_trail_or_the_logs() {
        assert_eq!(
            query("min_score=0.5&access_token=eyJ.abc.def"),
            "min_score=0.5&access_token=%28redacted%29"
        );
        assert_eq!(query("limit=5&source_id=a%20b"), "limit=5&source_id=a+b");
        let with_token: Uri = "/v1/stream?access_token=eyJ.abc.def&min_score=1"
            .parse()
            .expect("a URI");
        assert_eq!(
            uri(&with_token),
            "/v1/stream?access_token=%28redacted%29&min_score=1"
        );
        let plain: Uri = "/v1/events".parse().expect("a URI");
        assert_eq!(uri(&plain), "/v1/events");
    }
}
