//! Who may use the registry: HTTP basic authentication, as Confluent's
//! registry offers it, with two roles. `read` may GET; `write` may also
//! POST, PUT and DELETE. The role follows from the method alone, so a route
//! added later is covered without being listed here.
//!
//! The credentials file holds SHA-256 digests of the passwords, never the
//! passwords themselves (`printf %s "$password" | sha256sum`):
//!
//! ```toml
//! [[users]]
//! name = "processor"
//! role = "read"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! [`protect`] wraps the API router only: the probes (/healthz, /readyz)
//! stay open for the orchestrator, and /metrics lives on its own listener.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pulse_common::credentials::{digest_of, parse_digest, same_digest, Digest};
use serde::Deserialize;

use super::error::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
}

impl Role {
    /// The least role a request with `method` needs.
    fn needed_for(method: &Method) -> Role {
        if method == Method::GET || method == Method::HEAD {
            Role::Read
        } else {
            Role::Write
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    sha256: String,
}

struct User {
    role: Role,
    digest: Digest,
}

/// The registry's users, from its credentials file.
pub struct Users {
    by_name: HashMap<String, User>,
}

impl Users {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read credentials {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("credentials {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: UsersFile = toml::from_str(text)?;
        anyhow::ensure!(
            !file.users.is_empty(),
            "no [[users]]: nobody could use the registry"
        );
        let mut by_name = HashMap::new();
        for entry in file.users {
            let digest = parse_digest(&entry.name, &entry.sha256)?;
            anyhow::ensure!(
                !entry.name.contains(':'),
                "'{}': basic authentication cannot carry a ':' in a user name",
                entry.name
            );
            let user = User {
                role: entry.role,
                digest,
            };
            anyhow::ensure!(
                by_name.insert(entry.name.clone(), user).is_none(),
                "'{}' is listed twice",
                entry.name
            );
        }
        Ok(Self { by_name })
    }

    /// Checks a request's `Authorization: Basic` header against `method`:
    /// 401 for missing or wrong credentials, 403 for a role too weak.
    pub fn authorize(&self, headers: &HeaderMap, method: &Method) -> Result<(), RegistryError> {
        let (name, password) =
            basic_credentials(headers).ok_or_else(RegistryError::unauthorized)?;
        let user = self
            .by_name
            .get(&name)
            .ok_or_else(RegistryError::unauthorized)?;
        let digest = digest_of(&password);
        if !same_digest(&digest, &user.digest) {
            return Err(RegistryError::unauthorized());
        }
        if user.role < Role::needed_for(method) {
            return Err(RegistryError::forbidden(&name));
        }
        Ok(())
    }
}

/// Requires credentials for every route of `api`.
pub fn protect(api: Router, users: Arc<Users>) -> Router {
    api.layer(middleware::from_fn_with_state(users, require))
}

async fn require(State(users): State<Arc<Users>>, request: Request, next: Next) -> Response {
    match users.authorize(request.headers(), request.method()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The user name and password of `Authorization: Basic base64(name:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// Standard base64 (RFC 4648 section 4), padding optional: clients differ.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const BASIC: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    base64::Engine::decode(&BASIC, text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use axum::routing::get;

    fn sha(s: &str) -> String {
        hex::encode(digest_of(s))
    }

    fn users() -> Users {
        Users::parse(&format!(
            r#"
            [[users]]
            name = "reader"
            role = "read"
            sha256 = "{}"

            [[users]]
            name = "writer"
            role = "write"
            sha256 = "{}"
            "#,
            sha("r-secret"),
            sha("w-secret")
        ))
        .expect("valid credentials")
    }

    /// The registry's routes and methods, answering 200 once let through.
    fn app() -> Router {
        let ok = || async { "ok" };
        let api = Router::new()
            .route("/subjects", get(ok))
            .route("/subjects/{subject}/versions", get(ok).post(ok))
            .route("/subjects/{subject}", axum::routing::delete(ok).post(ok))
            .route("/config", get(ok).put(ok));
        protect(api, Arc::new(users())).route("/healthz", get(ok))
    }

    /// Serves [`app`] on a port of its own; returns its base URL.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app()).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn each_route_answers_by_method_and_role() {
        let table: &[(Method, &str, Option<&str>, u16)] = &[
            (Method::GET, "/healthz", None, 200),
            (Method::GET, "/subjects", None, 401),
            (Method::GET, "/subjects", Some("reader:wrong"), 401),
            (Method::GET, "/subjects", Some("nobody:r-secret"), 401),
            (Method::GET, "/subjects", Some("reader:r-secret"), 200),
            (Method::GET, "/subjects", Some("writer:w-secret"), 200),
            (
                Method::GET,
                "/subjects/s/versions",
                Some("reader:r-secret"),
                200,
            ),
            (Method::POST, "/subjects/s/versions", None, 401),
            (
                Method::POST,
                "/subjects/s/versions",
                Some("reader:r-secret"),
                403,
            ),
            (
                Method::POST,
                "/subjects/s/versions",
                Some("writer:w-secret"),
                200,
            ),
            (Method::POST, "/subjects/s", Some("reader:r-secret"), 403),
            (Method::DELETE, "/subjects/s", Some("reader:r-secret"), 403),
            (Method::DELETE, "/subjects/s", Some("writer:w-secret"), 200),
            (Method::PUT, "/config", Some("reader:r-secret"), 403),
            (Method::PUT, "/config", Some("writer:w-secret"), 200),
            (Method::GET, "/no-such-route", None, 401),
        ];
        let base = serve().await;
        let http = reqwest::Client::new();
        for (method, route, credentials, status) in table {
            let mut request = http.request(method.clone(), format!("{base}{route}"));
            if let Some((name, password)) = credentials.and_then(|c| c.split_once(':')) {
                request = request.basic_auth(name, Some(password));
            }
            let response = request.send().await.expect("answers");
            let case = format!("{method} {route} as {credentials:?}");
            assert_eq!(response.status().as_u16(), *status, "{case}");
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.text().await.expect("body");
            match *status {
                401 | 403 => {
                    let expected_challenge =
                        (*status == 401).then(|| r#"Basic realm="pulse-registry""#.to_string());
                    assert_eq!(challenge, expected_challenge, "{case}");
                    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
                    let code = if *status == 401 { 40101 } else { 40301 };
                    assert_eq!(body["error_code"], code, "{case}");
                }
                _ => {
                    assert_eq!(challenge, None, "{case}");
                    assert_eq!(body, "ok", "{case}");
                }
            }
        }
    }

    #[test]
    fn bearer_and_garbled_headers_are_no_credentials() {
        let u = users();
        for value in ["Bearer abc", "Basic !!!", "Basic", "Basic cmVhZGVy"] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            let err = u.authorize(&h, &Method::GET).expect_err(value);
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{value}");
        }
    }

    #[test]
    fn base64_decodes_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ];
        for (encoded, plain) in vectors {
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn a_bad_file_is_refused_at_start() {
        let bad = [
            "",
            "[[users]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"00\"",
            "[[users]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"00\"",
            "[[users]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"00\"\npassword = \"x\"",
        ];
        for text in bad {
            assert!(Users::parse(text).is_err(), "{text}");
        }
    }
}
