//! Structured output over the OpenAI API: the `response_format` field, checked (and its
//! schema compiled once, against a byte vocabulary) before a request is accepted, so a bad
//! schema is a 400 naming `response_format` and never a failure on the last stage.
//! The constraint itself is `edgeray_model::sampling::constraint`.

use edgeray_model::sampling::constraint::{OutputFormat, parse_response_format};

use super::error::ApiError;
use super::openai::CommonParams;

/// The request's output format (`None`: free text, also for `{"type": "text"}`).
pub fn response_format(common: &CommonParams) -> Result<Option<OutputFormat>, ApiError> {
    match &common.response_format {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => parse_response_format(v)
            .map_err(|e| ApiError::invalid_request(e, Some("response_format"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(v: serde_json::Value) -> CommonParams {
        CommonParams {
            response_format: Some(v),
            ..Default::default()
        }
    }

    #[test]
    fn formats_and_their_400s() {
        assert_eq!(response_format(&CommonParams::default()).unwrap(), None);
        assert_eq!(
            response_format(&common(json!({"type": "text"}))).unwrap(),
            None
        );
        assert_eq!(
            response_format(&common(json!({"type": "json_object"}))).unwrap(),
            Some(OutputFormat::JsonObject)
        );
        let e = response_format(&common(json!({"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}})))
        .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("response_format"));
        assert!(e.message.contains("invalid JSON schema"), "{}", e.message);
    }
}
