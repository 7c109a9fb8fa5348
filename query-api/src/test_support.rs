//! What the router tests share: an authenticator configured as an operator
//! would (an HS256 secret file, the test RS256 public key, an API keys
//! file), the test kit's tokens for any tenant and role, and requests sent
//! through `oneshot`, without a server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::auth::{AuthArgs, Authenticator};

/// The authenticator of the settings the integration tests start the API
/// with (`pulse_testkit::query_api::auth_env`).
pub(crate) fn authenticator() -> Arc<Authenticator> {
    // Files of each authenticator's own: the tests run in parallel.
    static DIRS: AtomicUsize = AtomicUsize::new(0);
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let settings = pulse_testkit::query_api::auth_env(&format!(
        "pulse-router-test-{}-{n}",
        std::process::id()
    ));
    let file = |name: &str| {
        settings
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.into())
    };
    let args = AuthArgs {
        jwt_hs256_secret_file: file("PULSE_JWT_HS256_SECRET_FILE"),
        jwt_rs256_public_key_file: file("PULSE_JWT_RS256_PUBLIC_KEY_FILE"),
        jwt_jwks_file: None,
        jwt_jwks_url: None,
        jwt_jwks_refresh_s: 300,
        jwt_issuer: None,
        jwt_audience: None,
        api_keys_file: file("PULSE_QUERY_API_KEYS_FILE"),
    };
    Arc::new(Authenticator::from_args(&args).expect("authenticator"))
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A GET of `path` with `token` as its bearer credential and `headers`.
pub(crate) async fn send(
    app: &Router,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::get(path);
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("answered");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

/// A GET of `path`: its status and JSON body.
pub(crate) async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let answer = send(app, path, token, &[]).await;
    (answer.status, answer.json())
}
