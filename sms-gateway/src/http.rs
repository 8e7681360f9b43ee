//! The HTTP side of the gateway protocols. The server routes
//! `/api/sms/gateway/{uid}` here; what the request means depends on the
//! kind of gateway configured under that uid.
//!
//! Errors are answered as CHT's gateway app expects them
//! (`{"error": true, "message": …}`), which the other senders accept too.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::gateways::{verify_signature, GatewayKind, GatewaySettings};
use crate::model::{GatewayRecord, OutboundState};
use crate::service::{IncomingSms, SmsService};
use crate::GatewayError;

/// Most messages and updates a CHT phone sends in one poll (10 and 20),
/// with room for an older app; more is not a phone.
const MAX_POLL_ITEMS: usize = 100;

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            GatewayError::Store(_) | GatewayError::Directory(_) | GatewayError::Internal(_) => {
                tracing::error!(error = %self, "SMS gateway request failed");
                "Internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut response =
            (status, Json(json!({"error": true, "message": message}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"Hisa SMS gateway\""),
            );
        }
        response
    }
}

async fn gateway(
    service: &SmsService,
    uid: &str,
) -> Result<(GatewayRecord, GatewaySettings), GatewayError> {
    let record = service
        .store
        .gateways()
        .await?
        .into_iter()
        .find(|g| g.uid == uid)
        .ok_or_else(|| GatewayError::NotFound("No such gateway".into()))?;
    let settings = GatewaySettings::from_record(&record)?;
    Ok((record, settings))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn require_basic(settings: &GatewaySettings, headers: &HeaderMap) -> Result<(), GatewayError> {
    match basic_credentials(headers) {
        Some((u, p)) if settings.basic_matches(&u, &p) => Ok(()),
        _ => Err(GatewayError::Unauthorized(
            "The gateway's username or password is wrong".into(),
        )),
    }
}

/// Signed when a signing key is configured, else Basic.
fn authenticate(
    service: &SmsService,
    settings: &GatewaySettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), GatewayError> {
    match &settings.signing_key {
        Some(key) => {
            let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            verify_signature(
                key,
                body,
                h("x-timestamp"),
                h("x-signature"),
                service.config.signature_tolerance_s,
            )
            .inspect_err(|_| service.counters.record("bad_signature"))
        }
        None => require_basic(settings, headers)
            .inspect_err(|_| service.counters.record("bad_credentials")),
    }
}

/// `GET`: CHT's connectivity check.
pub async fn handle_get(service: &SmsService, uid: &str, headers: &HeaderMap) -> Response {
    let result = async {
        let (_, settings) = gateway(service, uid).await?;
        if settings.kind != GatewayKind::Cht {
            return Err(GatewayError::BadRequest(
                "This gateway takes POST only".into(),
            ));
        }
        require_basic(&settings, headers)?;
        Ok(Json(json!({"medic-gateway": true})).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST`: a poll (CHT), a webhook (SMS Gate) or a message or status
/// callback (generic HTTP).
pub async fn handle_post(
    service: &SmsService,
    uid: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (record, settings) = gateway(service, uid).await?;
        match settings.kind {
            GatewayKind::Cht => {
                require_basic(&settings, headers)?;
                cht_poll(service, &record, &settings, &body).await
            }
            GatewayKind::SmsGate => {
                authenticate(service, &settings, headers, &body)?;
                sms_gate_webhook(service, &record, &body).await
            }
            GatewayKind::Http => {
                authenticate(service, &settings, headers, &body)?;
                generic_inbound(service, &record, headers, &body).await
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
struct ChtPoll {
    #[serde(default)]
    messages: Option<Vec<ChtMessage>>,
    #[serde(default)]
    updates: Option<Vec<ChtUpdate>>,
}

#[derive(Debug, Deserialize)]
struct ChtMessage {
    id: String,
    from: String,
    content: String,
    #[serde(default)]
    sms_sent: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    sms_received: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ChtUpdate {
    id: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| {
        GatewayError::BadRequest(format!("The body is not valid JSON for this gateway: {e}"))
    })
}

async fn cht_poll(
    service: &SmsService,
    record: &GatewayRecord,
    settings: &GatewaySettings,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let poll: ChtPoll = parse_json(body)?;
    let messages = poll.messages.unwrap_or_default();
    let updates = poll.updates.unwrap_or_default();
    if messages.len() > MAX_POLL_ITEMS || updates.len() > MAX_POLL_ITEMS {
        return Err(GatewayError::BadRequest(format!(
            "At most {MAX_POLL_ITEMS} messages and {MAX_POLL_ITEMS} updates per poll"
        )));
    }
    let incoming = messages
        .into_iter()
        .map(|m| IncomingSms {
            provider_id: Some(m.id),
            sender: m.from,
            text: m.content,
            sent_at: m.sms_sent,
        })
        .collect();
    let mut states = Vec::with_capacity(updates.len());
    for u in updates {
        let state = match u.status.as_str() {
            // UNSENT: the phone stored the message; it is the phone's now.
            "UNSENT" | "PENDING" => OutboundState::Pending,
            "SENT" => OutboundState::Sent,
            "DELIVERED" => OutboundState::Delivered,
            "FAILED" => OutboundState::Failed,
            other => {
                tracing::warn!(gateway = %record.uid, status = other, "unknown CHT status ignored");
                continue;
            }
        };
        states.push((u.id, state, u.reason));
    }
    let outgoing = service.poll(record, settings, incoming, states).await?;
    let messages: Vec<Value> = outgoing
        .into_iter()
        .map(|m| json!({"id": m.uid, "to": m.recipient, "content": m.text}))
        .collect();
    Ok(Json(json!({"messages": messages})).into_response())
}

async fn sms_gate_webhook(
    service: &SmsService,
    record: &GatewayRecord,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let envelope: Value = parse_json(body)?;
    let event = envelope
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let payload = envelope.get("payload").cloned().unwrap_or(Value::Null);
    let field = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    match event {
        "sms:received" => {
            let sender = field("sender")
                .or_else(|| field("phoneNumber"))
                .unwrap_or_default();
            let text = field("message").unwrap_or_default();
            let sent_at = field("receivedAt").and_then(|t| rfc3339_ms(&t));
            let receipt = service
                .receive(
                    &record.uid,
                    IncomingSms {
                        provider_id: field("messageId").or_else(|| field("id")),
                        sender,
                        text,
                        sent_at,
                    },
                )
                .await?;
            Ok(Json(json!({"status": "OK", "id": receipt.inbound.uid})).into_response())
        }
        "sms:sent" | "sms:delivered" | "sms:failed" => {
            let state = match event {
                "sms:sent" => OutboundState::Sent,
                "sms:delivered" => OutboundState::Delivered,
                _ => OutboundState::Failed,
            };
            if let Some(id) = field("messageId").or_else(|| field("id")) {
                service
                    .status(&id, state, field("reason").as_deref())
                    .await?;
            }
            Ok(Json(json!({"status": "OK"})).into_response())
        }
        // Pings and events Hisa has no use for are acknowledged, or the
        // phone would retry them forever.
        _ => Ok(Json(json!({"status": "OK"})).into_response()),
    }
}

async fn generic_inbound(
    service: &SmsService,
    record: &GatewayRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let fields: Value = if is_json {
        parse_json(body)?
    } else {
        let map: serde_json::Map<String, Value> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        Value::Object(map)
    };
    let names = record
        .config
        .get("inboundFields")
        .cloned()
        .unwrap_or(Value::Null);
    let pick = |role: &str, defaults: &[&str]| -> Option<String> {
        let configured = names.get(role).and_then(Value::as_str);
        configured
            .into_iter()
            .chain(defaults.iter().copied())
            .find_map(|k| fields.get(k))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    };
    let id = pick("id", &["id", "messageId", "message_id"]);
    let text = pick("text", &["text", "message", "content", "body"]);
    let status = pick("status", &["status"]);
    if let (Some(status), None, Some(id)) = (&status, &text, &id) {
        let state = match status.to_ascii_lowercase().as_str() {
            "sent" => OutboundState::Sent,
            "delivered" => OutboundState::Delivered,
            "failed" | "error" => OutboundState::Failed,
            other => {
                return Err(GatewayError::BadRequest(format!(
                    "Unknown status `{other}`; use sent, delivered or failed"
                )))
            }
        };
        let known = service
            .status(id, state, pick("reason", &["reason", "error"]).as_deref())
            .await?;
        if !known {
            return Err(GatewayError::NotFound(format!(
                "No outbound message with id {id}"
            )));
        }
        return Ok(Json(json!({"status": "OK"})).into_response());
    }
    let sender = pick("from", &["from", "sender", "originator", "phone"])
        .ok_or_else(|| GatewayError::BadRequest("The sender (`from`) is missing".into()))?;
    let text = text
        .ok_or_else(|| GatewayError::BadRequest("The message text (`text`) is missing".into()))?;
    let sent_at = pick("date", &["date", "sent_at", "receivedAt"]).and_then(|d| rfc3339_ms(&d));
    let receipt = service
        .receive(
            &record.uid,
            IncomingSms {
                provider_id: id,
                sender,
                text,
                sent_at,
            },
        )
        .await?;
    Ok(Json(json!({"status": "OK", "id": receipt.inbound.uid})).into_response())
}

fn rfc3339_ms(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}
