//! What the API's handlers share.

use std::sync::Arc;

use axum::extract::FromRef;
use pulse_common::files::FileStore;

use crate::auth::Authenticator;
use crate::files::Redirects;
use crate::jobs::JobDesk;
use crate::store::EventStore;
use crate::stream::Live;

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    /// Results from the one consumer of this instance, for WebSocket clients.
    pub live: Live,
    pub auth: Arc<Authenticator>,
    /// Tenants' files, as ingest stores them.
    pub files: FileStore,
    pub redirects: Redirects,
    /// Jobs, where the API has Kafka for them.
    pub jobs: Option<JobDesk>,
}

impl FromRef<AppState> for Option<JobDesk> {
    fn from_ref(s: &AppState) -> Self {
        s.jobs.clone()
    }
}

impl FromRef<AppState> for FileStore {
    fn from_ref(s: &AppState) -> Self {
        s.files.clone()
    }
}

impl FromRef<AppState> for Redirects {
    fn from_ref(s: &AppState) -> Self {
        s.redirects
    }
}

impl FromRef<AppState> for EventStore {
    fn from_ref(s: &AppState) -> Self {
        s.store.clone()
    }
}

impl FromRef<AppState> for Live {
    fn from_ref(s: &AppState) -> Self {
        s.live.clone()
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}
