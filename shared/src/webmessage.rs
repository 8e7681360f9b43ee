//! DHIS2's response envelopes: the WebMessage and the metadata import
//! report, in the 2.38+ shape that current DHIS2 clients parse.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

/// The generic envelope. Key order follows DHIS2's:
/// `httpStatus, httpStatusCode, status, code, message, devMessage, response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebMessage {
    pub http_status: String,
    pub http_status_code: u16,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    /// Expression descriptions carry their text here, as DHIS2's do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl WebMessage {
    pub fn new(http_status_code: u16, status: Status, message: impl Into<String>) -> WebMessage {
        WebMessage {
            http_status: reason_phrase(http_status_code).to_string(),
            http_status_code,
            status,
            code: None,
            message: Some(message.into()),
            dev_message: None,
            error_code: None,
            response: None,
            description: None,
        }
    }

    pub fn with_description(mut self, description: impl Into<String>) -> WebMessage {
        self.description = Some(description.into());
        self
    }

    pub fn with_error_code(mut self, code: impl Into<String>) -> WebMessage {
        self.error_code = Some(code.into());
        self
    }

    pub fn with_response(mut self, response: serde_json::Value) -> WebMessage {
        self.response = Some(response);
        self
    }
}

/// The reason phrases DHIS2 writes in `httpStatus`.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub ignored: u64,
    pub total: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.ignored += other.ignored;
        self.total += other.total;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    pub message: String,
    pub main_klass: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_klass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_property: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub error_properties: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub error_code: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub klass: String,
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub error_reports: Vec<ErrorReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeReport {
    pub klass: String,
    pub stats: Stats,
    pub object_reports: Vec<ObjectReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub response_type: String,
    pub status: Status,
    pub stats: Stats,
    pub type_reports: Vec<TypeReport>,
}

impl ImportReport {
    pub fn has_errors(&self) -> bool {
        self.status == Status::Error
    }

    /// Every error (or, with status WARNING, warning) report, flattened:
    /// what a person reads first.
    pub fn errors(&self) -> impl Iterator<Item = &ErrorReport> {
        self.type_reports
            .iter()
            .flat_map(|t| t.object_reports.iter())
            .flat_map(|o| o.error_reports.iter())
    }

    /// The envelope DHIS2 2.38+ wraps the report in: 200 on success, 409
    /// with an outer WARNING when any object failed.
    pub fn into_web_message(self) -> WebMessage {
        let status = self.status;
        let body = serde_json::to_value(&self).unwrap_or(serde_json::Value::Null);
        if status == Status::Ok {
            WebMessage {
                message: None,
                ..WebMessage::new(200, Status::Ok, "")
            }
            .with_response(body)
        } else if status == Status::Warning {
            WebMessage::new(
                200,
                Status::Warning,
                "Import completed with warnings, please see full details in import report.",
            )
            .with_response(body)
        } else {
            WebMessage::new(
                409,
                Status::Warning,
                "One or more errors occurred, please see full details in import report.",
            )
            .with_response(body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_key_order_and_omitted_nulls() {
        let m = WebMessage::new(409, Status::Error, "nope").with_error_code("E2001");
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"httpStatus":"Conflict","httpStatusCode":409,"status":"ERROR","message":"nope","errorCode":"E2001"}"#
        );
    }
}
