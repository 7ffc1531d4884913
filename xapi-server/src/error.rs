//! The daemon's one error type, and the one place where failures become XenAPI `[CODE, params…]`.
//!
//! Handlers return [`ApiError`]; lower layers have their own error types (`db::DbError`, …) that convert into it
//! here. An internal failure is logged with its detail and answered as `INTERNAL_ERROR`, never a panic or an HTML
//! page.

use xapi_types::ErrorCode;
use xapi_types::generated::errors as codes;

/// A XenAPI error: a code from the datamodel and its parameters, as clients see them in `ErrorDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub params: Vec<String>,
}

impl ApiError {
    /// An error with the datamodel's code; in debug builds the parameter count is checked against the datamodel
    /// (codes without a documented parameter list take any).
    pub fn new<I, S>(code: &'static ErrorCode, params: I) -> ApiError
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let params: Vec<String> = params.into_iter().map(Into::into).collect();
        debug_assert!(
            code.params.is_empty() || code.params.len() == params.len(),
            "{} takes {:?}, given {:?}",
            code.name,
            code.params,
            params
        );
        ApiError { code: code.name, params }
    }

    /// `[CODE, params…]` as it goes on the wire.
    pub fn description(&self) -> Vec<String> {
        std::iter::once(self.code.to_string()).chain(self.params.iter().cloned()).collect()
    }

    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        let detail = detail.to_string();
        tracing::error!(%detail, "internal error");
        ApiError::new(&codes::INTERNAL_ERROR, [detail])
    }

    pub fn handle_invalid(class: &str, handle: &str) -> ApiError {
        ApiError::new(&codes::HANDLE_INVALID, [class, handle])
    }

    pub fn uuid_invalid(class: &str, uuid: &str) -> ApiError {
        ApiError::new(&codes::UUID_INVALID, [class, uuid])
    }

    pub fn field_type(field: &str) -> ApiError {
        ApiError::new(&codes::FIELD_TYPE_ERROR, [field])
    }

    pub fn session_invalid(handle: &str) -> ApiError {
        ApiError::new(&codes::SESSION_INVALID, [handle])
    }

    pub fn method_unknown(method: &str) -> ApiError {
        ApiError::new(&codes::MESSAGE_METHOD_UNKNOWN, [method])
    }

    pub fn not_implemented(method: &str) -> ApiError {
        ApiError::new(&codes::NOT_IMPLEMENTED, [method])
    }

    pub fn invalid_value(field: &str, value: &str) -> ApiError {
        ApiError::new(&codes::INVALID_VALUE, [field, value])
    }

    pub fn unmarshal(expected: &str, received: &str) -> ApiError {
        ApiError::new(&codes::XMLRPC_UNMARSHAL_FAILURE, [expected, received])
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.description().join(" "))
    }
}

impl std::error::Error for ApiError {}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> ApiError {
        use crate::db::DbError;
        match e {
            DbError::HandleInvalid { class, handle } => ApiError::handle_invalid(class, &handle),
            DbError::UuidInvalid { class, uuid } => ApiError::uuid_invalid(class, &uuid),
            DbError::UuidExists { class, uuid } => {
                ApiError::new(&codes::INVALID_VALUE, [format!("{class}.uuid"), uuid])
            }
            other => ApiError::internal(format!("{other:#}")),
        }
    }
}
