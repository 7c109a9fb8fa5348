//! Errors in the Confluent Schema Registry's format: an HTTP status plus a
//! JSON body `{"error_code": N, "message": "..."}` that clients match on.
//!
//! The status says who can fix it, and clients act on that: a 503 (the
//! store is unavailable or timed out: code 50301, one code for both as a
//! client does the same either way) is worth retrying, a 4xx is not. Codes beyond Confluent's own:
//! 40101 (no or bad credentials), 40301 (a reader writing), 41301 (schema
//! over the size limit), 42901 / 42902 (subject / version count limit).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (error code {code})")]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn subject_not_found(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        )
    }

    pub fn version_not_found(subject: &str, version: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }

    pub fn schema_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, "Schema not found")
    }

    pub fn subject_not_soft_deleted(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )
    }

    pub fn version_not_soft_deleted(subject: &str, version: u32) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40407,
            format!("Subject '{subject}' Version {version} was not deleted first before being permanently deleted"),
        )
    }

    pub fn subject_config_not_found(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub fn incompatible(messages: &[String]) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject: {}",
                messages.join("; ")
            ),
        )
    }

    pub fn invalid_schema(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {why}"),
        )
    }

    pub fn invalid_version(version: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
        )
    }

    pub fn invalid_compatibility(why: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 42203, why)
    }

    pub fn bad_request(why: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400, format!("Bad request: {why}"))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            40101,
            "Unauthorized: send HTTP basic credentials of a registry user",
        )
    }

    pub fn forbidden(user: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            40301,
            format!("User '{user}' may only read: writing needs the write role"),
        )
    }

    pub fn schema_too_large(bytes: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            41301,
            format!("Schema of {bytes} bytes exceeds the limit of {limit} bytes"),
        )
    }

    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            41301,
            "Request body exceeds the schema size limit",
        )
    }

    pub fn too_many_subjects(limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            42901,
            format!(
                "The registry holds its limit of {limit} subjects; delete one permanently first"
            ),
        )
    }

    pub fn too_many_versions(subject: &str, limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            42902,
            format!("Subject '{subject}' holds its limit of {limit} versions; delete one permanently first"),
        )
    }

    /// A fault of this registry itself (not of its store): not worth retrying.
    pub fn internal(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("Error in the schema registry: {why}"),
        )
    }

    /// The Kafka log could not be written or read: the request may succeed
    /// once the brokers answer again.
    pub fn store_unavailable(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            50301,
            format!("The backend data store is unavailable: {why}"),
        )
    }

    /// The Kafka log did not answer within the request's time bound.
    pub fn store_timeout(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            50301,
            format!("The backend data store timed out: {why}"),
        )
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error_code": self.code, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="pulse-registry""#),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_faults_are_503_and_registry_faults_500() {
        let codes = [
            (RegistryError::store_unavailable("x"), 503, 50301),
            (RegistryError::store_timeout("x"), 503, 50301),
            (RegistryError::internal("x"), 500, 50001),
        ];
        for (e, status, code) in codes {
            assert_eq!((e.status.as_u16(), e.code), (status, code), "{e}");
        }
    }
}
