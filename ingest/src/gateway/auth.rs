//! Who is sending: per-tenant API keys (apps and back ends) and device
//! tokens (one device), each with its own rate limit. The tenant, and for a
//! device token the source, come from the credential, so no client can
//! write as another tenant or device.
//!
//! The credentials file holds SHA-256 digests of the secrets, never the
//! secrets themselves:
//!
//! ```toml
//! [[api_keys]]
//! name = "acme-backend"
//! tenant = "acme"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! events_per_second = 5000   # optional, default 1000
//! burst = 10000              # optional, default 2 x events_per_second
//!
//! [[device_tokens]]
//! name = "boiler-7"
//! tenant = "acme"
//! device = "boiler-7"
//! sha256 = "..."
//! ```

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use pulse_common::credentials::{digest_of, parse_digest, Digest};
use serde::Deserialize;

const DEFAULT_RATE: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    api_keys: Vec<Entry>,
    #[serde(default)]
    device_tokens: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    tenant: String,
    device: Option<String>,
    sha256: String,
    events_per_second: Option<u32>,
    burst: Option<u32>,
}

/// An authenticated sender.
pub struct Principal {
    pub name: String,
    pub tenant: String,
    /// Set for device tokens: the only source this sender may write as.
    pub device: Option<String>,
    limiter: DefaultDirectRateLimiter,
}

/// Why a request was refused before its events were looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing credentials: send 'Authorization: Bearer <key or device token>'")]
    Missing,
    #[error("unknown API key or device token")]
    Unknown,
    #[error("rate limit of '{name}' exceeded")]
    RateLimited { name: String, retry_after: Duration },
    #[error("{events} events exceed the burst of {burst} allowed to '{name}'")]
    BatchTooLarge {
        name: String,
        events: u32,
        burst: u32,
    },
}

pub struct Credentials {
    by_digest: HashMap<Digest, Arc<Principal>>,
}

impl Credentials {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read credentials {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("credentials {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: CredentialsFile = toml::from_str(text)?;
        let mut by_digest = HashMap::new();
        let keys = file.api_keys.into_iter().map(|e| (e, false));
        let tokens = file.device_tokens.into_iter().map(|e| (e, true));
        for (entry, is_device) in keys.chain(tokens) {
            anyhow::ensure!(
                entry.device.is_some() == is_device,
                "'{}': device tokens need a device and API keys must not have one",
                entry.name
            );
            let digest = parse_digest(&entry.name, &entry.sha256)?;
            let rate = NonZeroU32::new(entry.events_per_second.unwrap_or(DEFAULT_RATE))
                .ok_or_else(|| {
                    anyhow::anyhow!("'{}': events_per_second must be positive", entry.name)
                })?;
            let burst = NonZeroU32::new(entry.burst.unwrap_or(rate.get().saturating_mul(2)))
                .ok_or_else(|| anyhow::anyhow!("'{}': burst must be positive", entry.name))?;
            let principal = Principal {
                name: entry.name.clone(),
                tenant: entry.tenant,
                device: entry.device,
                limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            };
            anyhow::ensure!(
                by_digest.insert(digest, Arc::new(principal)).is_none(),
                "'{}': the same secret is listed twice",
                entry.name
            );
        }
        Ok(Self { by_digest })
    }

    /// The sender of a request, from `Authorization: Bearer <secret>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, Refusal> {
        let secret = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(Refusal::Missing)?;
        let digest = digest_of(secret);
        self.by_digest.get(&digest).cloned().ok_or(Refusal::Unknown)
    }
}

impl Principal {
    /// Takes `events` from the sender's allowance.
    pub fn admit(&self, events: usize) -> Result<(), Refusal> {
        let n =
            NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::RateLimited {
                name: self.name.clone(),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
            Err(insufficient) => Err(Refusal::BatchTooLarge {
                name: self.name.clone(),
                events: n.get(),
                burst: insufficient.0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sha(s: &str) -> String {
        hex::encode(digest_of(s))
    }

    fn credentials() -> Credentials {
        Credentials::parse(&format!(
            r#"
            [[api_keys]]
            name = "backend"
            tenant = "acme"
            sha256 = "{}"
            events_per_second = 10
            burst = 5

            [[device_tokens]]
            name = "dev-1"
            tenant = "acme"
            device = "dev-1"
            sha256 = "{}"
            "#,
            sha("key-1"),
            sha("token-1")
        ))
        .expect("valid credentials")
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {secret}")).expect("header"),
        );
        h
    }

    #[test]
    fn keys_and_tokens_authenticate_to_their_tenant_and_device() {
        let c = credentials();
        let key = c
            .authenticate(&bearer("key-1"))
            .map_err(|e| e.to_string())
            .expect("known key");
        assert_eq!((key.tenant.as_str(), key.device.as_deref()), ("acme", None));
        let token = c
            .authenticate(&bearer("token-1"))
            .map_err(|e| e.to_string())
            .expect("known token");
        assert_eq!(token.device.as_deref(), Some("dev-1"));
        assert_eq!(
            c.authenticate(&bearer("nope")).err(),
            Some(Refusal::Unknown)
        );
        assert_eq!(
            c.authenticate(&HeaderMap::new()).err(),
            Some(Refusal::Missing)
        );
    }

    #[test]
    fn rate_limit_refuses_past_the_burst_with_a_wait() {
        let c = credentials();
        let key = c
            .authenticate(&bearer("key-1"))
            .map_err(|e| e.to_string())
            .expect("known key");
        assert_eq!(key.admit(5), Ok(()));
        match key.admit(1) {
            Err(Refusal::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100))
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(matches!(
            key.admit(6),
            Err(Refusal::BatchTooLarge {
                events: 6,
                burst: 5,
                ..
            })
        ));
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(Credentials::parse("[[api_keys]]\nname='x'\ntenant='t'\nsha256='zz'").is_err());
        let device_without_device = format!(
            "[[device_tokens]]\nname='x'\ntenant='t'\nsha256='{}'",
            sha("a")
        );
        assert!(Credentials::parse(&device_without_device).is_err());
        assert!(
            Credentials::parse("[[api_keys]]\nname='x'\ntenant='t'\nsha256='00'\nextra=1").is_err()
        );
    }
}
