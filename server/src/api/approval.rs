//! DHIS2's approval endpoints: `/api/dataApprovals` (status, approve,
//! unapprove, several at once), `/api/dataAcceptances`, Hisa's returns,
//! the approval audit, and the signed-in user's messages.

use axum::Json;
use hisa_shared::webmessage::{Status, WebMessage};
use serde_json::{json, Value};

use super::{JsonBody, Params};
use crate::approval::{self, Action, Target};
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;

fn target_of(snap: &crate::metadata::Snapshot, p: &Params) -> ServerResult<Target> {
    approval::target(
        snap,
        p.get("wf"),
        p.get("ds"),
        p.get("pe"),
        p.get("ou"),
        p.get("aoc"),
    )
}

/// `GET /api/dataApprovals?wf=…&pe=…&ou=…[&aoc=…]` (or `ds=` instead of `wf=`).
pub async fn status(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let t = target_of(&snap, &params)?;
    let s = approval::status(&svc, &snap, &caller, &t).await?;
    let mut body = serde_json::to_value(&s).unwrap_or(Value::Null);
    body["permissions"] = json!({
        "mayApprove": s.may_approve, "mayUnapprove": s.may_unapprove,
        "mayAccept": s.may_accept, "mayUnaccept": s.may_unaccept, "mayReadData": s.may_read_data,
    });
    Ok(Json(body))
}

async fn one(
    svc: Services,
    caller: Caller,
    params: Params,
    action: Action,
) -> ServerResult<Json<WebMessage>> {
    let snap = svc.metadata.snapshot().await?;
    let t = target_of(&snap, &params)?;
    approval::act(&svc, &caller, &[t], action).await?;
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        format!("{action:?} done"),
    )))
}

pub async fn approve(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<WebMessage>> {
    one(svc, caller, params, Action::Approve).await
}

pub async fn unapprove(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<WebMessage>> {
    one(svc, caller, params, Action::Unapprove).await
}

pub async fn accept(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<WebMessage>> {
    one(svc, caller, params, Action::Accept).await
}

pub async fn unaccept(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<WebMessage>> {
    one(svc, caller, params, Action::Unaccept).await
}

/// DHIS2's bulk body: `{"wf": [...], "pe": [...], "approvals": [{"ou": …, "aoc": …}]}`.
fn targets_of(snap: &crate::metadata::Snapshot, body: &Value) -> ServerResult<Vec<Target>> {
    let list = |k: &str| -> Vec<String> {
        body.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (wfs, dss, pes) = (list("wf"), list("ds"), list("pe"));
    let units: Vec<(String, Option<String>)> = body
        .get("approvals")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a.get("ou")?.as_str()?.to_string(),
                a.get("aoc").and_then(Value::as_str).map(str::to_string),
            ))
        })
        .collect();
    if (wfs.is_empty() && dss.is_empty()) || pes.is_empty() || units.is_empty() {
        return Err(ServerError::conflict(
            "Give `wf` (or `ds`), `pe` and `approvals` [{ou, aoc}]",
            "E7100",
        ));
    }
    let mut out = Vec::new();
    for pe in &pes {
        for (ou, aoc) in &units {
            for wf in &wfs {
                out.push(approval::target(
                    snap,
                    Some(wf),
                    None,
                    Some(pe),
                    Some(ou),
                    aoc.as_deref(),
                )?);
            }
            for ds in &dss {
                out.push(approval::target(
                    snap,
                    None,
                    Some(ds),
                    Some(pe),
                    Some(ou),
                    aoc.as_deref(),
                )?);
            }
        }
    }
    Ok(out)
}

async fn many(
    svc: Services,
    caller: Caller,
    body: Value,
    action: Action,
) -> ServerResult<Json<WebMessage>> {
    let snap = svc.metadata.snapshot().await?;
    let targets = targets_of(&snap, &body)?;
    approval::act(&svc, &caller, &targets, action).await?;
    Ok(Json(WebMessage::new(
        200,
        Status::Ok,
        format!("{action:?} done for {}", targets.len()),
    )))
}

pub async fn approve_many(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    many(svc, caller, body, Action::Approve).await
}

pub async fn unapprove_many(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    many(svc, caller, body, Action::Unapprove).await
}

pub async fn accept_many(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    many(svc, caller, body, Action::Accept).await
}

pub async fn unaccept_many(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    many(svc, caller, body, Action::Unaccept).await
}

/// `GET /api/dataApprovals/approvals?wf=a,b&pe=x,y&ou=u,v`: statuses, several at once.
pub async fn statuses(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let split = |k: &str| -> Vec<String> {
        params
            .get(k)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for wf in split("wf") {
        for pe in split("pe") {
            for ou in split("ou") {
                let t = approval::target(
                    &snap,
                    Some(&wf),
                    None,
                    Some(&pe),
                    Some(&ou),
                    params.get("aoc"),
                )?;
                out.push(
                    serde_json::to_value(approval::status(&svc, &snap, &caller, &t).await?)
                        .unwrap_or(Value::Null),
                );
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /api/dataApprovals/returns` `{"wf" | "ds", "pe", "ou", "aoc"?, "comment"}`.
pub async fn return_form(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<WebMessage>> {
    let snap = svc.metadata.snapshot().await?;
    let s = |k: &str| body.get(k).and_then(Value::as_str);
    let t = approval::target(&snap, s("wf"), s("ds"), s("pe"), s("ou"), s("aoc"))?;
    let told = approval::return_form(&svc, &caller, &t, s("comment").unwrap_or_default()).await?;
    Ok(Json(
        WebMessage::new(
            200,
            Status::Ok,
            format!("Returned; {} submitter(s) told", told.len()),
        )
        .with_response(json!({"recipients": told})),
    ))
}

pub async fn audits(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let t = target_of(&snap, &params)?;
    if !caller.can_view(&snap, &t.org_unit) {
        return Err(ServerError::Forbidden(
            "The org unit is outside your org units".into(),
        ));
    }
    let rows = svc
        .store
        .approvals()
        .audits(&t.workflow.uid, &t.period.iso(), &t.org_unit)
        .await?;
    Ok(Json(
        json!({"dataApprovalAudits": rows.iter().map(|a| json!({
        "workflow": a.workflow, "period": a.period, "orgUnit": a.org_unit, "attributeOptionCombo": a.attribute_option_combo,
        "action": a.action, "by": a.by_user, "at": crate::sync::rfc3339(a.at), "comment": a.comment,
    })).collect::<Vec<_>>()}),
    ))
}

/// `GET /api/me/messages`: messages to the signed-in user, newest first.
pub async fn my_messages(svc: Services, caller: Caller) -> ServerResult<Json<Value>> {
    let rows = svc
        .store
        .approvals()
        .messages_for(&caller.user_uid, 200)
        .await?;
    Ok(Json(
        json!({"messages": rows.iter().map(message_json).collect::<Vec<_>>()}),
    ))
}

pub fn message_json(m: &crate::store::UserMessage) -> Value {
    json!({
        "id": m.uid, "subject": m.subject, "text": m.text, "sender": m.sender,
        "created": crate::sync::rfc3339(m.created_at),
        "context": m.context.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()),
    })
}
