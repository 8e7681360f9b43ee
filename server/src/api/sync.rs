//! Device sync over HTTP (`/api/sync/v1/…`, authenticated by the device's
//! secret) and device management for admins (`/api/devices`,
//! `/api/devicePolicies`). Handlers parse, authenticate and call
//! [`crate::sync`].

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hisa_shared::authority;
use hisa_shared::sync::{EnrolRequest, PolicyRules, StatusReport, UploadRequest, UploadResponse};
use hisa_shared::webmessage::{Status, WebMessage};
use serde_json::{json, Value};

use super::body::JsonBytes;
use super::{JsonBody, Params};
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;
use crate::store::PolicyRecord;
use crate::sync;

fn device_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn parse<T: serde::de::DeserializeOwned>(body: Value) -> ServerResult<T> {
    serde_json::from_value(body).map_err(|e| {
        ServerError::BadRequest(format!("The body does not fit the sync protocol: {e}"))
    })
}

pub async fn enrol(svc: Services, JsonBody(body): JsonBody) -> ServerResult<Json<Value>> {
    let request: EnrolRequest = parse(body)?;
    let enrolment = sync::enrol(&svc, request).await?;
    Ok(Json(serde_json::to_value(enrolment).unwrap_or(Value::Null)))
}

/// `GET /api/sync/v1/metadata[?since=<asOf>]`, `If-None-Match: "<version>"`.
pub async fn metadata(svc: Services, headers: HeaderMap, params: Params) -> ServerResult<Response> {
    let session = sync::authenticate(&svc, device_header(&headers)).await?;
    svc.store
        .devices()
        .touch_device(&session.device.uid, sync::now_ms(), None, None, None)
        .await?;
    if session.device.wipe_requested_at.is_some() {
        return Err(ServerError::Forbidden(
            "This device is to be wiped: ask for instructions".into(),
        ));
    }
    let package = sync::build_package(&session.snap, &session.caller, params.get("since"));
    let etag = format!("\"{}\"", package.version);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(package).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// Parsed straight into the protocol's types, both ways: a `Value` in
/// between cost a fair share of an upload's time.
pub async fn upload(
    svc: Services,
    headers: HeaderMap,
    body: JsonBytes,
) -> ServerResult<Json<UploadResponse>> {
    let session = sync::authenticate(&svc, device_header(&headers)).await?;
    let request: UploadRequest = body.parse("the sync protocol")?;
    Ok(Json(sync::upload(&svc, &session, request).await?))
}

pub async fn download(svc: Services, headers: HeaderMap) -> ServerResult<Json<Value>> {
    let session = sync::authenticate(&svc, device_header(&headers)).await?;
    let response = sync::download(&svc, &session).await?;
    Ok(Json(serde_json::to_value(response).unwrap_or(Value::Null)))
}

pub async fn status(
    svc: Services,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<Value>> {
    let session = sync::authenticate(&svc, device_header(&headers)).await?;
    let report: StatusReport = parse(body)?;
    let instructions = sync::status(&svc, &session, report).await?;
    Ok(Json(
        serde_json::to_value(instructions).unwrap_or(Value::Null),
    ))
}

pub async fn wiped(svc: Services, headers: HeaderMap) -> ServerResult<Json<WebMessage>> {
    let session = sync::authenticate(&svc, device_header(&headers)).await?;
    sync::confirm_wipe(&svc, &session).await?;
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        "Wipe confirmed; the device is revoked",
    )))
}

// ------------------------------------------------------------------------------------------------
// Devices, for their users and admins
// ------------------------------------------------------------------------------------------------

/// `POST /api/devices`: the signed-in user enrols this phone.
pub async fn enrol_signed_in(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<Value>> {
    let info = parse(body)?;
    let enrolment = sync::enrol_device(&svc, &caller, info).await?;
    Ok(Json(serde_json::to_value(enrolment).unwrap_or(Value::Null)))
}

pub async fn list_devices(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let user = match sync::visible_user(&caller) {
        Some(own) => Some(own.to_string()),
        None => params.get("user").map(str::to_string),
    };
    let devices = svc.store.devices().devices(user.as_deref()).await?;
    let mut out = Vec::with_capacity(devices.len());
    for d in &devices {
        out.push(sync::device_view(&svc, &snap, d).await?);
    }
    Ok(Json(json!({"devices": out})))
}

pub async fn one_device(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let registry = svc.store.devices();
    let device = registry
        .device(&uid)
        .await?
        .filter(|d| sync::visible_user(&caller).is_none_or(|own| own == d.user_uid))
        .ok_or_else(|| ServerError::NotFound(format!("No device with id {uid}")))?;
    let mut view = sync::device_view(&svc, &snap, &device).await?;
    let audits: Vec<Value> = registry
        .device_audits(&uid)
        .await?
        .into_iter()
        .map(|a| json!({"action": a.action, "by": a.by_user, "at": sync::rfc3339(a.at), "detail": a.detail}))
        .collect();
    view["audit"] = json!(audits);
    Ok(Json(view))
}

pub async fn revoke_device(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<WebMessage>> {
    sync::revoke(&svc, &caller, &uid).await?;
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        format!("Device {uid} revoked"),
    )))
}

pub async fn wipe_device(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<WebMessage>> {
    sync::request_wipe(&svc, &caller, &uid).await?;
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        format!("Device {uid} will delete its data at its next contact, then be revoked"),
    )))
}

/// `POST /api/devices/enrolmentCodes` `{"user": uid, "expiresInHours": 24}`.
pub async fn enrolment_code(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<Value>> {
    let user = body
        .get("user")
        .and_then(|u| u.get("id").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| ServerError::BadRequest("`user` (a user id) is required".into()))?;
    let hours = body
        .get("expiresInHours")
        .and_then(Value::as_i64)
        .unwrap_or(72);
    let (code, expires) = sync::create_enrolment_code(&svc, &caller, user, hours).await?;
    let link = format!("hisa://enrol?code={code}");
    let qr = qr_svg(&link).unwrap_or_default();
    Ok(Json(json!({
        "user": {"id": user},
        "code": code,
        "expires": sync::rfc3339(expires),
        "link": link,
        "qrSvg": qr,
    })))
}

fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build(),
    )
}

// ------------------------------------------------------------------------------------------------
// Policies
// ------------------------------------------------------------------------------------------------

fn policy_json(p: &PolicyRecord) -> Value {
    json!({
        "id": p.uid,
        "name": p.name,
        "scope": p.scope,
        "target": if p.target.is_empty() { Value::Null } else { json!({"id": p.target}) },
        "rules": serde_json::from_str::<Value>(&p.rules).unwrap_or(Value::Null),
    })
}

pub async fn list_policies(svc: Services, caller: Caller) -> ServerResult<Json<Value>> {
    caller.require_any(&[authority::MOBILE_SETTINGS])?;
    let policies = svc.store.devices().policies().await?;
    Ok(Json(
        json!({"devicePolicies": policies.iter().map(policy_json).collect::<Vec<_>>()}),
    ))
}

async fn save_policy(
    svc: &Services,
    caller: &Caller,
    uid: String,
    body: Value,
) -> ServerResult<()> {
    caller.require_any(&[authority::MOBILE_SETTINGS])?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ServerError::conflict("Policy name must be specified", "E4000"))?;
    let scope = body
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("DEFAULT");
    if !sync::SCOPES.contains(&scope) {
        return Err(ServerError::conflict(
            format!("Scope `{scope}` is not one of DEFAULT, ROLE, ORG_UNIT, DEVICE"),
            "E4000",
        ));
    }
    let target = body
        .get("target")
        .and_then(|t| t.get("id").or(Some(t)))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let snap = svc.metadata.snapshot().await?;
    let target_ok = match scope {
        "DEFAULT" => target.is_empty(),
        "ROLE" => snap.get_of("userRoles", &target).is_some(),
        "ORG_UNIT" => snap.org_unit(&target).is_some(),
        _ => svc.store.devices().device(&target).await?.is_some(),
    };
    if !target_ok {
        return Err(ServerError::conflict(
            format!(
                "Target `{target}` is not a {} (DEFAULT takes no target)",
                scope.to_lowercase().replace('_', " ")
            ),
            "E4000",
        ));
    }
    let rules: PolicyRules =
        serde_json::from_value(body.get("rules").cloned().unwrap_or(json!({})))
            .map_err(|e| ServerError::conflict(format!("Policy rules: {e}"), "E4000"))?;
    rules
        .check()
        .map_err(|e| ServerError::conflict(e.to_string(), "E4000"))?;
    let record = PolicyRecord {
        uid,
        name: name.to_string(),
        scope: scope.to_string(),
        target,
        rules: serde_json::to_string(&rules).unwrap_or_default(),
        updated_at: sync::now_ms(),
    };
    svc.store
        .devices()
        .put_policy(&record)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ServerError::conflict("Another policy already has this scope and target", "E5003")
            }
            other => other.into(),
        })?;
    tracing::info!(policy = %record.uid, scope, by = %caller.username, "device policy saved");
    Ok(())
}

pub async fn create_policy(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    let uid = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| hisa_shared::Uid::is_valid(id))
        .map(str::to_string)
        .unwrap_or_else(|| hisa_shared::Uid::generate().to_string());
    save_policy(&svc, &caller, uid.clone(), body).await?;
    Ok(Json(
        WebMessage::new(201, Status::Ok, "Device policy created")
            .with_response(json!({"uid": uid})),
    ))
}

pub async fn replace_policy(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    if !svc
        .store
        .devices()
        .policies()
        .await?
        .iter()
        .any(|p| p.uid == uid)
    {
        return Err(ServerError::NotFound(format!(
            "No device policy with id {uid}"
        )));
    }
    save_policy(&svc, &caller, uid, body).await?;
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        "Device policy updated",
    )))
}

pub async fn delete_policy(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<WebMessage>> {
    caller.require_any(&[authority::MOBILE_SETTINGS])?;
    if !svc.store.devices().delete_policy(&uid).await? {
        return Err(ServerError::NotFound(format!(
            "No device policy with id {uid}"
        )));
    }
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        "Device policy deleted",
    )))
}

pub async fn device_policy(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let device = svc
        .store
        .devices()
        .device(&uid)
        .await?
        .filter(|d| sync::visible_user(&caller).is_none_or(|own| own == d.user_uid))
        .ok_or_else(|| ServerError::NotFound(format!("No device with id {uid}")))?;
    let effective =
        sync::effective_policy(&svc, &snap, Some(&device.uid), &device.user_uid).await?;
    Ok(Json(serde_json::to_value(effective).unwrap_or(Value::Null)))
}
