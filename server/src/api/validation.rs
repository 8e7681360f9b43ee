//! `/api/validation/dataSet/{ds}` (one form) and
//! `/api/dataAnalysis/validationRules` (a subtree and date range).

use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};

use super::{JsonBody, Params};
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;
use crate::validation;

pub async fn form(
    svc: Services,
    caller: Caller,
    Path(ds): Path<String>,
    params: Params,
) -> ServerResult<Json<Value>> {
    let pe = params
        .get("pe")
        .ok_or_else(|| ServerError::conflict("The period (`pe`) is required", "E7601"))?;
    let ou = params
        .get("ou")
        .ok_or_else(|| ServerError::conflict("The org unit (`ou`) is required", "E7603"))?;
    let violations = validation::validate_form(&svc, &caller, &ds, pe, ou).await?;
    Ok(Json(
        json!({"validationRuleViolations": violations, "commentRequiredViolations": []}),
    ))
}

/// DHIS2's body: `{"ou": …, "startDate": …, "endDate": …, "vrg": …}`.
pub async fn analysis(
    svc: Services,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<Value>> {
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let date = |k: &str| -> ServerResult<time::Date> {
        let t = text(k).ok_or_else(|| {
            ServerError::conflict(format!("`{k}` is required (yyyy-MM-dd)"), "E7602")
        })?;
        hisa_shared::metadata::parse_date(t)
            .ok_or_else(|| ServerError::conflict(format!("`{k}` is not a date: `{t}`"), "E7602"))
    };
    let ou = text("ou")
        .ok_or_else(|| ServerError::conflict("The org unit (`ou`) is required", "E7603"))?;
    let violations = validation::analyse(
        &svc,
        &caller,
        ou,
        date("startDate")?,
        date("endDate")?,
        text("vrg"),
    )
    .await?;
    if body
        .get("persist")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        validation::persist(&svc, &violations).await?;
    }
    Ok(Json(
        serde_json::to_value(violations).unwrap_or(Value::Null),
    ))
}

/// `GET /api/validationResults?ou=&pe=&vr=&followUp=`: persisted violations
/// inside the caller's org units.
pub async fn results(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let list = |k: &str| -> Vec<String> {
        params
            .0
            .iter()
            .filter(|(key, _)| key == k)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
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
    let follow_up = match params.get("followUp") {
        None => None,
        Some(v) => Some(v.parse::<bool>().map_err(|_| {
            ServerError::BadRequest(format!("followUp must be true or false, not `{v}`"))
        })?),
    };
    let rows = svc
        .store
        .approvals()
        .validation_results(&crate::store::ValidationResultQuery {
            org_units: list("ou"),
            periods: list("pe"),
            rules: list("vr"),
            follow_up,
            limit: size,
            offset: (page - 1) * size,
        })
        .await?;
    let out: Vec<Value> = rows
        .iter()
        .filter(|r| caller.can_view(&snap, &r.org_unit))
        .map(|r| {
            json!({
                "id": r.uid,
                "validationRule": {"id": r.validation_rule},
                "organisationUnit": {"id": r.org_unit},
                "period": {"id": r.period},
                "attributeOptionCombo": {"id": r.attribute_option_combo},
                "importance": r.importance,
                "leftsideValue": r.left_value,
                "rightsideValue": r.right_value,
                "created": crate::sync::rfc3339(r.created_at),
                "followup": r.follow_up,
            })
        })
        .collect();
    Ok(Json(
        json!({"pager": {"page": page, "pageSize": size}, "validationResults": out}),
    ))
}

/// `PUT /api/validationResults/{id}/followUp` `{"followUp": true}`.
pub async fn follow_up(
    svc: Services,
    caller: Caller,
    Path(uid): Path<String>,
    JsonBody(body): JsonBody,
) -> ServerResult<Json<Value>> {
    let flag = body
        .get("followUp")
        .and_then(Value::as_bool)
        .ok_or_else(|| ServerError::BadRequest("`followUp` (true or false) is required".into()))?;
    let snap = svc.metadata.snapshot().await?;
    let store = svc.store.approvals();
    let visible = store
        .validation_results(&crate::store::ValidationResultQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await?
        .into_iter()
        .any(|r| r.uid == uid && caller.can_view(&snap, &r.org_unit));
    if !visible || !store.set_follow_up(&uid, flag).await? {
        return Err(ServerError::NotFound(format!(
            "No validation result with id {uid}"
        )));
    }
    Ok(Json(json!({"id": uid, "followup": flag})))
}
