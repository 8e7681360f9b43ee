//! `/api/tracker` for single events.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hisa_shared::datavalue::DataImportStrategy;
use serde_json::Value;

use super::{JsonBody, Params};
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::events::{event_json, import_events, list_events, TrackerParams};
use crate::state::Services;

pub async fn import(
    svc: Services,
    caller: Caller,
    params: Params,
    JsonBody(body): JsonBody,
) -> ServerResult<Response> {
    let mut p = TrackerParams::default();
    if let Some(s) = params.get("importStrategy") {
        p.strategy = DataImportStrategy::parse(s)
            .ok_or_else(|| ServerError::BadRequest(format!("Unknown importStrategy `{s}`")))?;
    }
    if let Some(a) = params.get("atomicMode") {
        p.atomic_all = match a.to_ascii_uppercase().as_str() {
            "ALL" => true,
            "OBJECT" => false,
            _ => return Err(ServerError::BadRequest(format!("Unknown atomicMode `{a}`"))),
        };
    }
    let (status, report) = import_events(&svc, &caller, &body, p).await?;
    Ok((
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(report),
    )
        .into_response())
}

pub async fn list(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    Ok(Json(list_events(&svc, &caller, &params).await?))
}

pub async fn one(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let found = svc.store.events_by_uid(std::slice::from_ref(&uid)).await?;
    let event = found
        .into_iter()
        .find(|e| !e.deleted)
        .filter(|e| caller.can_view(&snap, snap.uid_of(e.org_unit_id).unwrap_or_default()))
        .ok_or_else(|| ServerError::NotFound(format!("Event with id {uid} could not be found.")))?;
    Ok(Json(event_json(&snap, &event)))
}
