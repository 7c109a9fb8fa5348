//! Request extractors shared by the HTTP routes: the caller, checked for a
//! role that may read, and query parameters whose errors name the problem.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::{Authenticator, Caller, Role};
use crate::error::ApiError;

/// Roles that may read events over HTTP.
const READERS: &[Role] = &[Role::Analyst, Role::Dashboard, Role::Admin];

/// An authenticated caller whose role may read events.
pub struct Reader(pub Caller);

/// An authenticated admin of its tenant.
pub struct Admin(pub Caller);

async fn caller_with<S>(parts: &mut Parts, state: &S, roles: &[Role]) -> Result<Caller, ApiError>
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    let caller = Caller::from_request_parts(parts, state).await?;
    caller.require(roles)?;
    Ok(caller)
}

impl<S> FromRequestParts<S> for Reader
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        caller_with(parts, state, READERS).await.map(Self)
    }
}

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        caller_with(parts, state, &[Role::Admin]).await.map(Self)
    }
}

/// Query parameters; unknown ones and bad values get 400 naming them.
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Self(t))
            .map_err(ApiError::from)
    }
}
