//! The current user, sign-in sessions and personal access tokens.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hisa_shared::webmessage::{Status, WebMessage};
use hisa_shared::Uid;
use rand::RngCore;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

use super::{JsonBody, Params};
use crate::auth::{check_password, new_api_token, sha256_hex, Caller, CSRF_HEADER, SESSION_COOKIE};
use crate::error::{ServerError, ServerResult};
use crate::query::{parse_fields, select};
use crate::state::Services;
use crate::store::SessionRecord;

pub async fn me(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let user = snap
        .get_of("users", &caller.user_uid)
        .cloned()
        .unwrap_or(Value::Null);
    let mut body = user.clone();
    let first = user.get("firstName").and_then(Value::as_str).unwrap_or("");
    let last = user.get("surname").and_then(Value::as_str).unwrap_or("");
    let name = format!("{first} {last}").trim().to_string();
    let readable = |kind: &str| -> Vec<String> {
        snap.all_of(kind)
            .filter(|o| {
                caller.is_superuser()
                    || o.get("organisationUnits")
                        .and_then(Value::as_array)
                        .is_some_and(|ous| {
                            ous.iter().any(|ou| {
                                ou.get("id")
                                    .and_then(Value::as_str)
                                    .is_some_and(|id| caller.can_view(&snap, id))
                            })
                        })
            })
            .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    if let Value::Object(map) = &mut body {
        map.insert("name".into(), json!(name));
        map.insert("displayName".into(), json!(name));
        map.insert("authorities".into(), json!(caller.authorities));
        map.insert("dataSets".into(), json!(readable("dataSets")));
        map.insert("programs".into(), json!(readable("programs")));
        map.entry("settings").or_insert_with(|| json!({}));
        map.entry("userGroups").or_insert_with(|| json!([]));
        for key in [
            "organisationUnits",
            "dataViewOrganisationUnits",
            "userRoles",
        ] {
            map.entry(key).or_insert_with(|| json!([]));
        }
        // Clients written for DHIS2 before 2.38 read these from `userCredentials`.
        let credentials = json!({
            "id": caller.user_uid,
            "username": caller.username,
            "userRoles": map.get("userRoles").cloned().unwrap_or(json!([])),
        });
        map.insert("userCredentials".into(), credentials);
    }
    if let Some(fields) = params.get("fields") {
        let fields = parse_fields(fields).map_err(|e| ServerError::BadRequest(e.to_string()))?;
        return Ok(Json(select(&body, &fields, &*snap)));
    }
    Ok(Json(body))
}

pub async fn authorizations(caller: Caller) -> Json<Value> {
    Json(json!(caller.authorities))
}

pub async fn has_authorization(
    caller: Caller,
    axum::extract::Path(authority): axum::extract::Path<String>,
) -> Json<bool> {
    Json(caller.has(&authority))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /api/auth/login` `{"username","password"}`: a browser session.
pub async fn login(svc: Services, JsonBody(body): JsonBody) -> ServerResult<Response> {
    let username = body.get("username").and_then(Value::as_str).unwrap_or("");
    let password = body.get("password").and_then(Value::as_str).unwrap_or("");
    if username.is_empty() || password.is_empty() {
        return Err(ServerError::BadRequest(
            "Send `username` and `password`".into(),
        ));
    }
    let user_uid = check_password(&svc, username, password).await?;
    let session = random_token();
    let csrf = random_token();
    let expires = OffsetDateTime::now_utc() + Duration::hours(svc.config.session_hours);
    svc.store
        .create_session(&SessionRecord {
            id_hash: sha256_hex(&session),
            user_uid,
            csrf_token: csrf.clone(),
            expires_at: expires,
        })
        .await?;
    let secure = if svc.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        svc.config.session_hours * 3600
    );
    let mut response = Json(json!({
        "loginStatus": "SUCCESS",
        "redirectUrl": "/",
        "csrfToken": csrf,
    }))
    .into_response();
    let value = HeaderValue::from_str(&cookie).map_err(|e| ServerError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    if let Ok(v) = HeaderValue::from_str(&csrf) {
        response.headers_mut().insert(CSRF_HEADER, v);
    }
    Ok(response)
}

pub async fn logout(svc: Services, headers: HeaderMap) -> ServerResult<Response> {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string());
    if let Some(s) = session {
        svc.store.delete_session(&sha256_hex(&s)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("HISA_SESSION=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

/// `POST /api/apiToken`: a personal access token, shown once, stored hashed.
pub async fn create_api_token(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Response> {
    let expires_at = match body.get("expire") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let ms = v.as_i64().ok_or_else(|| {
                ServerError::BadRequest("`expire` must be epoch milliseconds".into())
            })?;
            let at = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map_err(|_| ServerError::BadRequest("`expire` is out of range".into()))?;
            if at < OffsetDateTime::now_utc() {
                return Err(ServerError::conflict("`expire` is in the past", "E4058"));
            }
            Some(at)
        }
    };
    let token = new_api_token();
    let uid = Uid::generate().to_string();
    svc.store
        .create_api_token(&uid, &caller.user_uid, &sha256_hex(&token), expires_at)
        .await?;
    let message = WebMessage {
        message: None,
        ..WebMessage::new(201, Status::Ok, "")
    }
    .with_response(json!({
        "responseType": "ApiTokenCreationResponse",
        "uid": uid,
        "key": token,
    }));
    Ok((StatusCode::CREATED, Json(message)).into_response())
}
