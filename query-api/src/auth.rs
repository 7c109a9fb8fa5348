//! Who is asking: JWT bearer tokens (HS256 with a shared secret; RS256 with
//! public keys from a PEM file, a JWKS file or a JWKS URL) and API keys. Every caller
//! belongs to one tenant and has one role; the tenant comes from the
//! credential, never from a request parameter.
//!
//! Tokens carry `sub` (who), `tenant`, `role` (`analyst`, `dashboard` or
//! `admin`) and `exp`. With an issuer configured (which then needs an
//! audience too), `iss` and `aud` must be present and match: a token of the
//! same provider minted for another service is refused. The
//! algorithm a token names must be one configured here, so a token cannot
//! pick a weaker check (`none`, or HS256 keyed with an RSA public key).
//!
//! The API keys file holds SHA-256 digests of the keys, never the keys:
//!
//! ```toml
//! [[api_keys]]
//! name = "acme-reports"
//! tenant = "acme"
//! role = "analyst"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pulse_common::credentials::{digest_of, parse_digest, Digest};
use serde::Deserialize;

use crate::error::ApiError;
use crate::jwks::{keys_of, KeyList, RemoteKeys};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// HTTP queries and exports.
    Analyst,
    /// Live streams and the reads a dashboard makes.
    Dashboard,
    /// Everything, and the audit trail.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Dashboard => "dashboard",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// When the credential stops being valid (a token's `exp`, seconds since
    /// the epoch); API keys do not expire. A stream ends then.
    pub expires_at_s: Option<i64>,
}

impl Caller {
    /// Ok when the caller's role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Denied> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Denied::Role {
                role: self.role,
                allowed: roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

/// Why a request was refused before anything was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing credentials: send 'Authorization: Bearer <token or API key>'")]
    Missing,
    #[error("token algorithm {0} is not accepted here")]
    Algorithm(String),
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("unknown API key")]
    UnknownKey,
    #[error("role {} may not use this route (allowed: {allowed})", role.as_str())]
    Role { role: Role, allowed: String },
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Role { .. } => ApiError::Forbidden(d.to_string()),
            _ => ApiError::Unauthenticated(d.to_string()),
        }
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The outcome of authenticating a request, left for the layers and
/// handlers after [`middleware`].
#[derive(Debug, Clone)]
pub struct Authenticated(pub Result<Caller, Denied>);

/// Authenticates every request once, before the audit trail records it and
/// the rate limit counts it; the refusal itself is left to the route, so
/// that refused requests are recorded and limited too.
pub async fn middleware(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let outcome = match credential(request.headers(), request.uri()) {
        Some(c) => auth.authenticate(&c),
        None => Err(Denied::Missing),
    };
    request.extensions_mut().insert(Authenticated(outcome));
    next.run(request).await
}

/// How callers are authenticated; at least one way must be configured.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// File holding the shared secret of HS256 tokens.
    #[arg(long, env = "PULSE_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// PEM file with the RSA public key of RS256 tokens.
    #[arg(long, env = "PULSE_JWT_RS256_PUBLIC_KEY_FILE")]
    pub jwt_rs256_public_key_file: Option<PathBuf>,
    /// JWKS file (JSON Web Key Set) with the RSA public keys of RS256 tokens, chosen by `kid`.
    #[arg(long, env = "PULSE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// URL of a JWKS (an identity provider's) with the RSA public keys of RS256 tokens, chosen by `kid`.
    #[arg(long, env = "PULSE_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// Seconds between fetches of the JWKS URL; a token naming an unknown `kid` triggers one sooner.
    #[arg(long, env = "PULSE_JWT_JWKS_REFRESH_S", default_value_t = 300)]
    pub jwt_jwks_refresh_s: u64,
    /// Required `iss` of tokens, when set; then `iss` and `aud` must be present, and the audience must be set too.
    #[arg(long, env = "PULSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens, when set (then tokens without `aud` are refused).
    #[arg(long, env = "PULSE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// TOML file of API keys (name, tenant, role, sha256 of the key).
    #[arg(long, env = "PULSE_QUERY_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    tenant: String,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    api_keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    tenant: String,
    role: Role,
    sha256: String,
}

pub struct Authenticator {
    hs256: Option<DecodingKey>,
    /// RS256 keys by `kid`; the PEM key has none and matches any token.
    rs256: KeyList,
    /// RS256 keys from a JWKS URL, kept fresh by `jwks::RemoteKeys::keep_fresh`.
    remote: Option<Arc<RemoteKeys>>,
    issuer: Option<String>,
    audience: Option<String>,
    api_keys: HashMap<Digest, Caller>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

impl Authenticator {
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Self> {
        let hs256 = match &args.jwt_hs256_secret_file {
            Some(p) => {
                let secret = read(p)?;
                let secret = secret.trim_ascii();
                anyhow::ensure!(
                    secret.len() >= 32,
                    "{}: an HS256 secret needs at least 32 bytes",
                    p.display()
                );
                Some(DecodingKey::from_secret(secret))
            }
            None => None,
        };
        let mut rs256 = Vec::new();
        if let Some(p) = &args.jwt_rs256_public_key_file {
            let key = DecodingKey::from_rsa_pem(&read(p)?)
                .map_err(|e| anyhow::anyhow!("{}: not an RSA public key: {e}", p.display()))?;
            rs256.push((None, key));
        }
        if let Some(p) = &args.jwt_jwks_file {
            rs256.extend(keys_of(&read(p)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
        }
        let remote = match &args.jwt_jwks_url {
            Some(url) => Some(Arc::new(RemoteKeys::new(url)?)),
            None => None,
        };
        let api_keys = match &args.api_keys_file {
            Some(p) => parse_api_keys(&String::from_utf8_lossy(&read(p)?))
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            None => HashMap::new(),
        };
        // An issuer's tokens are minted for many services; only the audience
        // says which ones are for this API.
        anyhow::ensure!(
            args.jwt_issuer.is_none() || args.jwt_audience.is_some(),
            "PULSE_JWT_ISSUER is set without PULSE_JWT_AUDIENCE: set the audience this API's tokens name"
        );
        anyhow::ensure!(
            hs256.is_some() || !rs256.is_empty() || remote.is_some() || !api_keys.is_empty(),
            "no way to authenticate callers: set an HS256 secret, RS256 keys or API keys"
        );
        Ok(Self {
            hs256,
            rs256,
            remote,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            api_keys,
        })
    }

    /// The JWKS URL's keys, which `main` loads and keeps fresh.
    pub fn remote_keys(&self) -> Option<Arc<RemoteKeys>> {
        self.remote.clone()
    }

    /// The caller presenting `credential`: a JWT (three dot-separated parts)
    /// or an API key.
    pub fn authenticate(&self, credential: &str) -> Result<Caller, Denied> {
        if credential.split('.').count() != 3 {
            let digest = digest_of(credential);
            return self
                .api_keys
                .get(&digest)
                .cloned()
                .ok_or(Denied::UnknownKey);
        }
        let header =
            jsonwebtoken::decode_header(credential).map_err(|e| Denied::Invalid(e.to_string()))?;
        let remote = self
            .remote
            .as_ref()
            .map(|r| r.current())
            .unwrap_or_default();
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.hs256.iter().collect(),
            Algorithm::RS256 => self
                .rs256
                .iter()
                .chain(remote.iter())
                .filter(|(kid, _)| kid.is_none() || header.kid.is_none() || *kid == header.kid)
                .map(|(_, k)| k)
                .collect(),
            _ => vec![],
        };
        if let (Some(r), Some(kid), Algorithm::RS256) = (&self.remote, &header.kid, header.alg) {
            let in_files = self.rs256.iter().any(|(k, _)| k.as_ref() == Some(kid));
            if !in_files && !r.has(kid) {
                r.want_refetch();
            }
        }
        if keys.is_empty() && header.alg == Algorithm::RS256 && self.remote.is_some() {
            return Err(Denied::Invalid("no key matches the token's kid".into()));
        }
        if keys.is_empty() {
            return Err(Denied::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        // jsonwebtoken checks `iss` and `aud` only when a token has them:
        // a configured one is also required, or leaving it out would pass.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_aud = self.audience.is_some();
        if let Some(a) = &self.audience {
            validation.set_audience(&[a]);
        }
        if let Some(i) = &self.issuer {
            validation.set_issuer(&[i]);
        }
        let mut last = Denied::Invalid("no key matches".into());
        for key in keys {
            match jsonwebtoken::decode::<Claims>(credential, key, &validation) {
                Ok(data) => {
                    let c = data.claims;
                    if c.tenant.is_empty() {
                        return Err(Denied::Invalid("empty tenant claim".into()));
                    }
                    return Ok(Caller {
                        name: c.sub,
                        tenant: c.tenant,
                        role: c.role,
                        expires_at_s: Some(c.exp),
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    return Err(Denied::Expired)
                }
                Err(e) => last = Denied::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

fn parse_api_keys(text: &str) -> anyhow::Result<HashMap<Digest, Caller>> {
    let file: KeysFile = toml::from_str(text)?;
    let mut keys = HashMap::new();
    for e in file.api_keys {
        let digest = parse_digest(&e.name, &e.sha256)?;
        let caller = Caller {
            name: e.name.clone(),
            tenant: e.tenant,
            role: e.role,
            expires_at_s: None,
        };
        anyhow::ensure!(
            keys.insert(digest, caller).is_none(),
            "'{}': the same key is listed twice",
            e.name
        );
    }
    Ok(keys)
}

/// The one route that takes a token in the query string: a WebSocket
/// upgrade, which browsers cannot give headers. Anywhere else a token in a
/// URL would end up in browser history, proxies' logs and `Referer`s, so it
/// is ignored there (the request is as one without credentials).
pub const QUERY_TOKEN_ROUTE: &str = "/v1/stream";

/// The credential of a request: `Authorization: Bearer ...`, or on
/// [`QUERY_TOKEN_ROUTE`] only, `access_token=` in the query string.
pub fn credential(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string());
    let from_query = || {
        if uri.path() != QUERY_TOKEN_ROUTE {
            return None;
        }
        uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
        })
    };
    from_header.or_else(from_query).filter(|s| !s.is_empty())
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = Denied;

    /// The caller as [`middleware`] authenticated it, or, on a route
    /// without it, authenticated here.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(Authenticated(outcome)) = parts.extensions.get::<Authenticated>() {
            return outcome.clone();
        }
        let auth = Arc::<Authenticator>::from_ref(state);
        let credential = credential(&parts.headers, &parts.uri).ok_or(Denied::Missing)?;
        auth.authenticate(&credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn authenticator() -> Authenticator {
        Authenticator {
            hs256: Some(DecodingKey::from_secret(SECRET.as_bytes())),
            rs256: vec![],
            remote: None,
            issuer: None,
            audience: None,
            api_keys: parse_api_keys(&format!(
                "[[api_keys]]\nname = \"reports\"\ntenant = \"acme\"\nrole = \"analyst\"\nsha256 = \"{}\"\n",
                hex::encode(digest_of("key-1"))
            ))
            .unwrap(),
        }
    }

    fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp(offset_s: i64) -> i64 {
        pulse_common::clock::now_ms() / 1000 + offset_s
    }

    #[test]
    fn a_valid_token_names_tenant_and_role() {
        let t = token(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "ann", "tenant": "acme", "role": "dashboard", "exp": exp(60)}),
        );
        assert_eq!(
            authenticator().authenticate(&t),
            Ok(Caller {
                name: "ann".into(),
                tenant: "acme".into(),
                role: Role::Dashboard,
                expires_at_s: Some(exp(60)),
            })
        );
    }

    #[test]
    fn forged_expired_and_other_algorithm_tokens_are_refused() {
        let a = authenticator();
        let claims = json!({"sub": "ann", "tenant": "acme", "role": "admin", "exp": exp(60)});
        let forged = token(
            Algorithm::HS256,
            "another-secret-of-thirty-two-bytes!!",
            claims.clone(),
        );
        assert!(matches!(a.authenticate(&forged), Err(Denied::Invalid(_))));
        let expired = token(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "ann", "tenant": "acme", "role": "admin", "exp": exp(-3600)}),
        );
        assert_eq!(a.authenticate(&expired), Err(Denied::Expired));
        let hs512 = token(Algorithm::HS512, SECRET, claims);
        assert_eq!(
            a.authenticate(&hs512),
            Err(Denied::Algorithm("HS512".into()))
        );
        // An unsigned token ("alg": "none").
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4iLCJ0ZW5hbnQiOiJhY21lIiwicm9sZSI6ImFkbWluIiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        assert!(a.authenticate(none).is_err());
    }

    #[test]
    fn api_keys_are_known_by_digest() {
        let a = authenticator();
        assert_eq!(a.authenticate("key-1").map(|c| c.role), Ok(Role::Analyst));
        assert_eq!(a.authenticate("key-2"), Err(Denied::UnknownKey));
    }

    #[test]
    fn roles_are_enforced() {
        let c = Caller {
            name: "ann".into(),
            tenant: "acme".into(),
            role: Role::Analyst,
            expires_at_s: None,
        };
        assert!(c.require(&[Role::Analyst, Role::Admin]).is_ok());
        assert!(matches!(
            c.require(&[Role::Admin]),
            Err(Denied::Role { .. })
        ));
    }

    #[test]
    fn with_an_issuer_iss_and_aud_must_be_present_and_match() {
        let a = Authenticator {
            issuer: Some("https://id.example".into()),
            audience: Some("pulse-query-api".into()),
            ..authenticator()
        };
        let with = |extra: serde_json::Value| {
            let mut claims =
                json!({"sub": "ann", "tenant": "acme", "role": "admin", "exp": exp(60)});
            if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            a.authenticate(&token(Algorithm::HS256, SECRET, claims))
        };
        let good = with(json!({"iss": "https://id.example", "aud": "pulse-query-api"}));
        assert_eq!(good.map(|c| c.role), Ok(Role::Admin));
        // With both missing, either may be named first.
        for (claims, why) in [
            (json!({}), "Missing required claim: "),
            (
                json!({"iss": "https://id.example"}),
                "Missing required claim: aud",
            ),
            (
                json!({"aud": "pulse-query-api"}),
                "Missing required claim: iss",
            ),
            (
                json!({"iss": "https://other.example", "aud": "pulse-query-api"}),
                "InvalidIssuer",
            ),
            (
                json!({"iss": "https://id.example", "aud": "billing"}),
                "InvalidAudience",
            ),
        ] {
            let refused = with(claims.clone());
            assert!(
                matches!(&refused, Err(Denied::Invalid(m)) if m.starts_with(why)),
                "{claims}: {refused:?}"
            );
        }
    }

    #[test]
    fn an_issuer_without_an_audience_is_refused_at_start() {
        let args = AuthArgs {
            jwt_hs256_secret_file: None,
            jwt_rs256_public_key_file: None,
            jwt_jwks_file: None,
            jwt_jwks_url: None,
            jwt_jwks_refresh_s: 300,
            jwt_issuer: Some("https://id.example".into()),
            jwt_audience: None,
            api_keys_file: None,
        };
        let refused = Authenticator::from_args(&args).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("PULSE_JWT_AUDIENCE")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_query_string_token_counts_on_the_stream_only() {
        let headers = HeaderMap::new();
        let on = |path: &str| credential(&headers, &path.parse::<Uri>().unwrap());
        assert_eq!(
            on("/v1/stream?min_score=1&access_token=t0k"),
            Some("t0k".into())
        );
        for path in [
            "/v1/events?access_token=t0k",
            "/v1/export?access_token=t0k",
            "/v1/stream/x?access_token=t0k",
            "/v1/audit?access_token=t0k",
        ] {
            assert_eq!(on(path), None, "{path}");
        }
    }
}
