//! SMS over the Web API: DHIS2's `/api/sms/inbound` and `/api/sms/outbound`,
//! `/api/gateways`, the gateway protocols at `/api/sms/gateway/{uid}`
//! (authenticated by the gateway's own credentials or signature), and the
//! device registry that issues SMS keys.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hisa_shared::authority;
use hisa_shared::webmessage::{Status, WebMessage};
use hisa_sms_gateway::gateways::{public_view, record_from_payload};
use hisa_sms_gateway::model::*;
use hisa_sms_gateway::service::IncomingSms;
use hisa_sms_gateway::GatewayError;
use serde_json::{json, Value};

use super::{JsonBody, Params};
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;

impl From<GatewayError> for ServerError {
    fn from(e: GatewayError) -> ServerError {
        match e {
            GatewayError::BadRequest(m) => ServerError::Conflict {
                message: m,
                error_code: None,
            },
            GatewayError::Unauthorized(m) => ServerError::Forbidden(m),
            GatewayError::NotFound(m) => ServerError::NotFound(m),
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl From<hisa_sms_gateway::store::SmsStoreError> for ServerError {
    fn from(e: hisa_sms_gateway::store::SmsStoreError) -> ServerError {
        ServerError::Internal(e.to_string())
    }
}

fn ms_text(ms: Option<i64>) -> Value {
    match ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }) {
        Some(t) => json!(crate::metadata::import::format_timestamp(t)),
        None => Value::Null,
    }
}

fn require_settings(caller: &Caller) -> ServerResult<()> {
    caller.require_any(&[authority::MOBILE_SETTINGS])
}

fn page(params: &Params) -> (i64, i64) {
    let size = params
        .get("pageSize")
        .and_then(|p| p.parse::<i64>().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let page = params
        .get("page")
        .and_then(|p| p.parse::<i64>().ok())
        .unwrap_or(1)
        .max(1);
    (page, size)
}

/// `?state=` (or DHIS2's `status=`), a comma list, each one of `names`.
fn states<T>(
    params: &Params,
    parse: fn(&str) -> Option<T>,
    names: impl Iterator<Item = &'static str>,
) -> ServerResult<Vec<T>> {
    let names: Vec<&str> = names.collect();
    params
        .get("state")
        .or(params.get("status"))
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(|s| {
            parse(s.trim()).ok_or_else(|| {
                ServerError::BadRequest(format!(
                    "Unknown state `{s}`; use one of {}",
                    names.join(", ")
                ))
            })
        })
        .collect()
}

fn inbound_json(m: &InboundSms) -> Value {
    json!({
        "id": m.uid,
        "text": m.text,
        "originator": m.sender,
        "gatewayId": m.gateway,
        "providerId": m.provider_id,
        "receiveddate": ms_text(Some(m.received_at)),
        "sentdate": ms_text(m.sent_at),
        "smsstatus": dhis2_status(m.state),
        "state": m.state,
        "format": m.format,
        "reason": m.reason,
        "user": m.user.as_ref().map(|u| json!({"id": u})),
        "device": m.device,
        "processed": ms_text(m.processed_at),
    })
}

/// DHIS2's inbound status names for Hisa's states.
fn dhis2_status(state: InboundState) -> &'static str {
    match state {
        InboundState::Received => "INCOMING",
        InboundState::WaitingForParts => "PROCESSING",
        InboundState::Applied | InboundState::AppliedWithWarnings => "PROCESSED",
        InboundState::Rejected | InboundState::RateLimited => "FAILED",
        InboundState::Duplicate => "UNHANDLED",
    }
}

fn outbound_json(m: &OutboundSms) -> Value {
    json!({
        "id": m.uid,
        "message": m.text,
        "recipients": [m.recipient],
        "status": m.state,
        "kind": m.kind,
        "gateway": m.gateway,
        "inbound": m.inbound,
        "attempts": m.attempts,
        "reason": m.reason,
        "date": ms_text(Some(m.created_at)),
        "lastUpdated": ms_text(Some(m.updated_at)),
    })
}

/// `POST /api/sms/inbound`: DHIS2's shape, from a gateway app or a script.
pub async fn post_inbound(
    svc: Services,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ServerResult<Json<WebMessage>> {
    require_settings(&caller)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let mut fields: Vec<(String, String)> = params.0.clone();
    if is_json {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ServerError::BadRequest(format!("The body is not valid JSON: {e}")))?;
        if let Some(obj) = value.as_object() {
            for (k, v) in obj {
                if let Some(s) = v.as_str() {
                    fields.push((k.clone(), s.to_string()));
                }
            }
        }
    } else if !body.is_empty() {
        fields.extend(form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    let get = |keys: &[&str]| {
        keys.iter().find_map(|k| {
            fields
                .iter()
                .find(|(f, v)| f == k && !v.trim().is_empty())
                .map(|(_, v)| v.clone())
        })
    };
    let originator = get(&["originator"]).ok_or_else(|| ServerError::Conflict {
        message: "Originator must be specified".into(),
        error_code: None,
    })?;
    let text = get(&["text", "message"]).ok_or_else(|| ServerError::Conflict {
        message: "Message must be specified".into(),
        error_code: None,
    })?;
    // DHIS2's rule for compressed SMS forwarded by a phone's own account:
    // its number must be the originator. Accounts without a number relay
    // for others (gateways) and are trusted by their authority.
    if hisa_shared::dhis2_sms::is_compressed(text.trim()) && text.trim().len() >= 16 {
        let snap = svc.metadata.snapshot().await?;
        let caller_phone = snap
            .get_of("users", &caller.user_uid)
            .and_then(|u| u.get("phoneNumber"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(phone) = caller_phone {
            let cc = svc.config.sms.country_code.as_deref();
            let norm =
                |p: &str| hisa_sms_gateway::msisdn::normalize(p, cc).unwrap_or(p.to_string());
            if norm(&phone) != norm(&originator) {
                return Err(ServerError::Conflict {
                    message: "Originator's number does not match user's Phone number".into(),
                    error_code: None,
                });
            }
        }
    }
    let sent_at = get(&["receivedTime", "receiveddate", "sentdate"]).and_then(|d| {
        time::OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc3339)
            .ok()
            .or_else(|| {
                hisa_shared::metadata::parse_date(&d).map(|day| day.midnight().assume_utc())
            })
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    });
    let gateway = get(&["gateway", "gatewayid"]).unwrap_or_else(|| "api".into());
    let receipt = svc
        .sms
        .receive(
            &gateway,
            IncomingSms {
                provider_id: get(&["id", "messageId"]),
                sender: originator,
                text,
                sent_at,
            },
        )
        .await?;
    Ok(Json(
        WebMessage::new(
            200,
            Status::Ok,
            format!("Received SMS: {}", receipt.inbound.uid),
        )
        .with_response(inbound_json(&receipt.inbound)),
    ))
}

pub async fn list_inbound(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<Value>> {
    caller.require_any(&[authority::MOBILE_SENDSMS, authority::MOBILE_SETTINGS])?;
    let (page, size) = page(&params);
    let states = states(
        &params,
        InboundState::parse,
        InboundState::ALL.iter().map(|s| s.as_str()),
    )?;
    let filter = InboundFilter {
        states,
        sender: params.get("originator").map(str::to_string),
        gateway: params.get("gateway").map(str::to_string),
        since: None,
        limit: size,
        offset: (page - 1) * size,
    };
    let rows = svc.sms.store.list_inbound(&filter).await?;
    Ok(Json(json!({
        "pager": {"page": page, "pageSize": size},
        "inboundsmss": rows.iter().map(inbound_json).collect::<Vec<_>>(),
    })))
}

pub async fn one_inbound(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<Value>> {
    caller.require_any(&[authority::MOBILE_SENDSMS, authority::MOBILE_SETTINGS])?;
    let row = svc
        .sms
        .store
        .inbound(&uid)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("No inbound SMS with id {uid}")))?;
    Ok(Json(inbound_json(&row)))
}

pub async fn reprocess_inbound(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<WebMessage>> {
    require_settings(&caller)?;
    let receipt = svc.sms.reprocess(&uid).await?;
    tracing::info!(sms = %uid, by = %caller.username, "inbound SMS reprocessed");
    Ok(Json(
        WebMessage::new(200, Status::Ok, format!("Reprocessed SMS: {uid}"))
            .with_response(inbound_json(&receipt.inbound)),
    ))
}

pub async fn list_outbound(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<Value>> {
    caller.require_any(&[authority::MOBILE_SENDSMS, authority::MOBILE_SETTINGS])?;
    let (page, size) = page(&params);
    let states = states(
        &params,
        OutboundState::parse,
        OutboundState::ALL.iter().map(|s| s.as_str()),
    )?;
    let filter = OutboundFilter {
        states,
        recipient: params.get("recipient").map(str::to_string),
        gateway: params.get("gateway").map(str::to_string),
        limit: size,
        offset: (page - 1) * size,
    };
    let rows = svc.sms.store.list_outbound(&filter).await?;
    Ok(Json(json!({
        "pager": {"page": page, "pageSize": size},
        "outboundsmss": rows.iter().map(outbound_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/sms/outbound`: `{"message": …, "recipients": […]}` (DHIS2).
pub async fn post_outbound(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    caller.require_any(&[authority::MOBILE_SENDSMS, authority::MOBILE_SETTINGS])?;
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let recipients: Vec<String> = body
        .get("recipients")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let gateway = body.get("gateway").and_then(Value::as_str);
    let uids = svc
        .sms
        .send(&recipients, message, OutboundKind::Message, gateway)
        .await?;
    svc.sms.wake();
    Ok(Json(
        WebMessage::new(200, Status::Ok, format!("{} message(s) queued", uids.len()))
            .with_response(json!({"ids": uids})),
    ))
}

/// Counts of what arrived in the last 24 hours, and the security events
/// this instance has seen since it started.
pub async fn stats(svc: Services, caller: Caller) -> ServerResult<Json<Value>> {
    require_settings(&caller)?;
    let since = hisa_sms_gateway::service::now_ms() - 24 * 3_600_000;
    let counts = svc.sms.store.inbound_counts(since).await?;
    Ok(Json(json!({
        "inboundLast24h": counts.iter().map(|(state, format, n)| json!({"state": state, "format": format, "count": n})).collect::<Vec<_>>(),
        "securityEventsSinceStart": svc.sms.counters.snapshot().into_iter().map(|(k, n)| json!({"event": k, "count": n})).collect::<Vec<_>>(),
    })))
}

// ------------------------------------------------------------------------------------------------
// Gateways
// ------------------------------------------------------------------------------------------------

pub async fn list_gateways(svc: Services, caller: Caller) -> ServerResult<Json<Value>> {
    require_settings(&caller)?;
    let gateways = svc.sms.store.gateways().await?;
    Ok(Json(
        json!({"gateways": gateways.iter().map(public_view).collect::<Vec<_>>()}),
    ))
}

async fn find_gateway(svc: &Services, uid: &str) -> ServerResult<GatewayRecord> {
    svc.sms
        .store
        .gateways()
        .await?
        .into_iter()
        .find(|g| g.uid == uid)
        .ok_or_else(|| ServerError::NotFound(format!("No gateway with id {uid}")))
}

pub async fn one_gateway(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<Value>> {
    require_settings(&caller)?;
    Ok(Json(public_view(&find_gateway(&svc, &uid).await?)))
}

pub async fn create_gateway(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    require_settings(&caller)?;
    let uid = match body.get("id").and_then(Value::as_str) {
        Some(id) if hisa_shared::Uid::is_valid(id) => id.to_string(),
        Some(id) => {
            return Err(ServerError::BadRequest(format!(
                "`{id}` is not a valid UID"
            )))
        }
        None => hisa_shared::Uid::generate().to_string(),
    };
    if svc.sms.store.gateways().await?.iter().any(|g| g.uid == uid) {
        return Err(ServerError::conflict(
            format!("Gateway {uid} exists; use PUT"),
            "E5003",
        ));
    }
    let record = record_from_payload(uid.clone(), body, None)?;
    svc.sms.store.put_gateway(&record).await?;
    tracing::info!(gateway = %uid, kind = %record.kind, by = %caller.username, "SMS gateway added");
    Ok(Json(
        WebMessage::new(200, Status::Ok, "Gateway configuration added")
            .with_response(json!({"uid": uid})),
    ))
}

pub async fn replace_gateway(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    require_settings(&caller)?;
    let previous = find_gateway(&svc, &uid).await?;
    let record = record_from_payload(uid.clone(), body, Some(&previous))?;
    svc.sms.store.put_gateway(&record).await?;
    tracing::info!(gateway = %uid, by = %caller.username, "SMS gateway updated");
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        "Gateway configuration updated",
    )))
}

pub async fn delete_gateway(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<WebMessage>> {
    require_settings(&caller)?;
    if !svc.sms.store.delete_gateway(&uid).await? {
        return Err(ServerError::NotFound(format!("No gateway with id {uid}")));
    }
    tracing::info!(gateway = %uid, by = %caller.username, "SMS gateway removed");
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        "Gateway removed successfully",
    )))
}

pub async fn default_gateway(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<WebMessage>> {
    require_settings(&caller)?;
    if !svc.sms.store.set_default_gateway(&uid).await? {
        return Err(ServerError::NotFound(format!("No gateway with id {uid}")));
    }
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        format!("Gateway {uid} is now the default"),
    )))
}

/// The gateway protocols. No Hisa user signs these requests; the gateway's
/// configured credentials or signing key do.
pub async fn gateway_get(svc: Services, Path(uid): Path<String>, headers: HeaderMap) -> Response {
    hisa_sms_gateway::http::handle_get(&svc.sms, &uid, &headers).await
}

pub async fn gateway_post(
    svc: Services,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = hisa_sms_gateway::http::handle_post(&svc.sms, &uid, &headers, body).await;
    svc.sms.wake();
    response.into_response()
}
