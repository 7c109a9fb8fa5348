//! Credentials for the query API under test: an HS256 secret, an RS256 key
//! pair (tests/fixtures, test-only) and API keys, written where the API reads
//! them, and tokens minted for any tenant and role.

#![allow(dead_code)]

use std::path::PathBuf;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pulse_common::clock::now_ms;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const HS256_SECRET: &str = "pulse-test-secret-0123456789abcdef0123";
/// API key of tenant `acme`, role analyst.
pub const ACME_ANALYST_KEY: &str = "acme-analyst-key-0001";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
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
            hex::encode(Sha256::digest(ACME_ANALYST_KEY.as_bytes()))
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
    encode(
        &Header::new(Algorithm::HS256),
        &claims(tenant, role, expires_in_s),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
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
