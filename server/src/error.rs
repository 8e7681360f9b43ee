//! The server's one error type, mapped once to an HTTP status and DHIS2's
//! WebMessage body. Internal failures are logged with detail and answered
//! with a generic message: database text never reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hisa_shared::webmessage::{Status, WebMessage};

use crate::metadata::import::PayloadError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        message: String,
        error_code: Option<&'static str>,
    },
    #[error("Request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Too many failed sign-in attempts; try again in {retry_after_secs} seconds")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("The server is starting; try again shortly")]
    Starting,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ServerResult<T> = Result<T, ServerError>;

impl ServerError {
    pub fn conflict(message: impl Into<String>, error_code: &'static str) -> ServerError {
        ServerError::Conflict {
            message: message.into(),
            error_code: Some(error_code),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ServerError::BadRequest(_) | ServerError::Payload(_) => StatusCode::BAD_REQUEST,
            ServerError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServerError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::Conflict { .. } => StatusCode::CONFLICT,
            ServerError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServerError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServerError::Starting => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            ServerError::Store(_) | ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ServerError::Store(StoreError::Conflict(_)) => {
                "The change conflicts with existing data".to_string()
            }
            ServerError::Store(_) | ServerError::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "An internal error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let mut body = WebMessage::new(status.as_u16(), Status::Error, message);
        if let ServerError::Conflict {
            error_code: Some(code),
            ..
        } = &self
        {
            body = body.with_error_code(*code);
        }
        let mut response = (status, Json(body)).into_response();
        if let ServerError::Unauthorized = self {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"Hisa\""),
            );
        }
        if let ServerError::TooManyAttempts { retry_after_secs } = self {
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}
