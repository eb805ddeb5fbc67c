//! HTTP errors in OpenAI's JSON shape: `{"error":{"message","type","param","code"}}`.

use super::backend::SubmitError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

/// An error answer of the gateway.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// The offending parameter, if any.
    pub param: Option<String>,
    /// Machine-readable code, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// Sent as the `Retry-After` header (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error object.
    pub error: ErrorObject<'a>,
}

/// The inner error object.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// Message.
    pub message: &'a str,
    /// Type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Param.
    pub param: Option<&'a str>,
    /// Code.
    pub code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = param.map(str::to_string);
        e
    }

    /// 400 for a body that is not valid JSON or does not match the schema.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        let mut e = Self::invalid_request(
            format!("We could not parse the JSON body of your request: {detail}"),
            None,
        );
        e.code = Some("invalid_json");
        e
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        e.param = Some("model".to_string());
        e.code = Some("model_not_found");
        e
    }

    /// 404 for an unknown path.
    pub fn route_not_found(path: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown request URL: {path}"),
        );
        e.code = Some("unknown_url");
        e
    }

    /// 413 for a body over the limit.
    pub fn body_too_large(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body too large: the limit is {limit} bytes."),
        );
        e.code = Some("request_too_large");
        e
    }

    /// 429 with `Retry-After`.
    pub fn overloaded(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "server_overloaded",
            "The server is handling too many requests. Please retry after a short wait.",
        );
        e.code = Some("rate_limit_exceeded");
        e.retry_after = Some(retry_after);
        e
    }

    /// 500 `server_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 503 `server_error`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }

    /// The JSON body as a string (also used for errors inside an event stream).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_else(|_| "{\"error\":{}}".to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded { retry_after } => ApiError::overloaded(retry_after),
            SubmitError::PromptTooLong { .. } => {
                let mut a = ApiError::invalid_request(e.to_string(), Some("messages"));
                a.code = Some("context_length_exceeded");
                a
            }
            SubmitError::Invalid(m) => ApiError::invalid_request(m, None),
            SubmitError::Unavailable(m) => ApiError::unavailable(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
