//! What the API's handlers share.

use std::sync::Arc;

use axum::extract::FromRef;
use pulse_common::scored::ScoredEvent;
use tokio::sync::broadcast;

use crate::auth::Authenticator;
use crate::store::EventStore;

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    /// Results from the one consumer of this instance, for WebSocket clients.
    pub live: broadcast::Sender<Arc<ScoredEvent>>,
    pub auth: Arc<Authenticator>,
}

impl FromRef<AppState> for EventStore {
    fn from_ref(s: &AppState) -> Self {
        s.store.clone()
    }
}

impl FromRef<AppState> for broadcast::Sender<Arc<ScoredEvent>> {
    fn from_ref(s: &AppState) -> Self {
        s.live.clone()
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}
