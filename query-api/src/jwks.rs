//! RS256 keys from a JWKS URL, as identity providers publish them. The set
//! is fetched at start (a start-up step: retried until the provider
//! answers, `/readyz` saying so meanwhile), refetched every refresh period, and refetched soon
//! (at most every `MIN_REFETCH`) when a token names a key id the set lacks,
//! so a provider's key rotation is picked up without a restart. A fetch
//! that fails or returns an unusable set leaves the current keys in place.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use pulse_common::shutdown::Shutdown;
use tokio::sync::Notify;

/// Keys by `kid`; a key without one matches any token.
pub type KeyList = Vec<(Option<String>, DecodingKey)>;

/// Shortest time between two fetches, so tokens naming unknown key ids
/// cannot make the API hammer the provider.
const MIN_REFETCH: Duration = Duration::from_secs(5);

/// The usable keys of a JWKS document.
pub fn keys_of(document: &[u8]) -> anyhow::Result<KeyList> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|e| anyhow::anyhow!("not a JWKS: {e}"))?;
    set.keys
        .iter()
        .map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map(|key| (jwk.common.key_id.clone(), key))
                .map_err(|e| anyhow::anyhow!("unusable key {:?}: {e}", jwk.common.key_id))
        })
        .collect()
}

pub struct RemoteKeys {
    url: String,
    keys: RwLock<Arc<KeyList>>,
    wanted: Notify,
    http: reqwest::Client,
}

impl RemoteKeys {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            url: url.to_string(),
            keys: RwLock::new(Arc::new(Vec::new())),
            wanted: Notify::new(),
            http,
        })
    }

    pub fn current(&self) -> Arc<KeyList> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|_| Arc::new(Vec::new()))
    }

    /// Whether the set holds a key with this id.
    pub fn has(&self, kid: &str) -> bool {
        self.current()
            .iter()
            .any(|(k, _)| k.as_deref() == Some(kid))
    }

    /// Asks for a fetch soon: a token named a key id the set lacks.
    pub fn want_refetch(&self) {
        self.wanted.notify_one();
    }

    /// Fetches the set and, if it is usable, puts it in place.
    pub async fn fetch(&self) -> anyhow::Result<usize> {
        let response = self.http.get(&self.url).send().await?.error_for_status()?;
        let keys = keys_of(&response.bytes().await?)?;
        let count = keys.len();
        if let Ok(mut current) = self.keys.write() {
            *current = Arc::new(keys);
        }
        Ok(count)
    }

    /// Refetches every `refresh`, or soon after a token names an unknown
    /// key id, until shutdown.
    pub async fn keep_fresh(self: Arc<Self>, refresh: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.requested() => return,
                _ = tokio::time::sleep(refresh) => {}
                _ = self.wanted.notified() => {}
            }
            match self.fetch().await {
                Ok(n) => tracing::debug!(url = %self.url, keys = n, "JWKS refreshed"),
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "JWKS refresh failed; keeping the current keys")
                }
            }
            tokio::select! {
                _ = shutdown.requested() => return,
                _ = tokio::time::sleep(MIN_REFETCH) => {}
            }
        }
    }
}
