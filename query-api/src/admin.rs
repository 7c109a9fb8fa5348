//! Admin-only routes: the tenant's audit trail.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditRecord;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Admin, Params};
use crate::routes::{limit_of, range_of, with_rows};
use crate::store::{AuditFilter, EventStore};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Start of the range, milliseconds since the epoch (default: 24 hours before its end).
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    from_ms: Option<i64>,
    /// End of the range, exclusive (default: now). A range that ends before it starts is empty.
    #[param(minimum = 0, maximum = 4294967295999_i64)]
    to_ms: Option<i64>,
    /// Only this caller (a token's subject or an API key's name).
    caller: Option<String>,
    /// Only this route, as the API names it (e.g. `/v1/files/{file_id}`).
    route: Option<String>,
    /// Only this status.
    #[param(minimum = 100, maximum = 599)]
    status: Option<u16>,
    /// Most records, 1..10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditTrail {
    pub records: Vec<AuditRecord>,
}

/// The tenant's audit trail, newest first: every request made with the
/// tenant's credentials.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery),
    responses(
        (status = 200, body = AuditTrail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn audit(
    State(store): State<EventStore>,
    Admin(caller): Admin,
    Params(q): Params<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = limit_of(q.limit, 100)?;
    let range = range_of(q.from_ms, q.to_ms)?;
    let status = match q.status {
        Some(s) if !(100..=599).contains(&s) => {
            return Err(ApiError::bad_param(
                "status",
                "must be an HTTP status, 100 to 599",
            ));
        }
        Some(s) => s,
        None => 0,
    };
    let filter = AuditFilter {
        caller: q.caller.as_deref().unwrap_or_default(),
        route: q.route.as_deref().unwrap_or_default(),
        status,
    };
    let records = store.audit(&caller.tenant, range, &filter, limit).await?;
    let rows = records.len();
    Ok(with_rows(AuditTrail { records }, rows))
}
