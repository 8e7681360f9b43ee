//! Request bodies: size limit, JSON parsing, content type, all mapped to
//! DHIS2-style errors instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::Value;

use crate::error::ServerError;
use crate::state::AppState;

/// A JSON body, parsed into a `Value`.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &AppState) -> Result<JsonBody, ServerError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            if !ct.starts_with("application/json") && !ct.contains("+json") {
                return Err(ServerError::UnsupportedMediaType(format!(
                    "Content type `{ct}` is not supported here; send application/json"
                )));
            }
        }
        let limit = state.config.body_limit;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ServerError::PayloadTooLarge { limit }
            } else {
                ServerError::BadRequest(format!("Could not read the request body: {e}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ServerError::BadRequest(format!(
                "Malformed JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                e
            ))
        })?;
        Ok(JsonBody(value))
    }
}
