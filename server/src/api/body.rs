//! Request bodies: size limit, JSON parsing, content type, all mapped to
//! DHIS2-style errors instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::Value;

use crate::error::ServerError;
use crate::state::AppState;

/// The bytes of a body sent as JSON, within the size limit.
async fn json_bytes(req: Request, state: &AppState) -> Result<Bytes, ServerError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") && !ct.contains("+json") {
            return Err(ServerError::UnsupportedMediaType(format!(
                "Content type `{ct}` is not supported here; send application/json"
            )));
        }
    }
    let limit = state.config.body_limit;
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::PayloadTooLarge { limit }
        } else {
            ServerError::BadRequest(format!("Could not read the request body: {e}"))
        }
    })
}

/// A JSON body, parsed into a `Value`.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &AppState) -> Result<JsonBody, ServerError> {
        let bytes = json_bytes(req, state).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| malformed(&e))?;
        Ok(JsonBody(value))
    }
}

/// A JSON body checked for syntax but kept as bytes, to be deserialised
/// straight into its type ([`JsonBytes::parse`]) once the caller is known:
/// no `Value` in between, and the same answers as [`JsonBody`] in the same
/// order (a malformed body before authentication, a misfit one after).
pub struct JsonBytes(Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &AppState) -> Result<JsonBytes, ServerError> {
        let bytes = json_bytes(req, state).await?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| malformed(&e))?;
        Ok(JsonBytes(bytes))
    }
}

impl JsonBytes {
    /// `what` ends "The body does not fit …".
    pub fn parse<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ServerError> {
        serde_json::from_slice::<T>(&self.0).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ServerError::BadRequest(format!("The body does not fit {what}: {e}"))
            }
            _ => malformed(&e),
        })
    }
}

fn malformed(e: &serde_json::Error) -> ServerError {
    ServerError::BadRequest(format!(
        "Malformed JSON at line {}, column {}: {}",
        e.line(),
        e.column(),
        e
    ))
}
