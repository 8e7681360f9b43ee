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
    Ok(Json(
        serde_json::to_value(violations).unwrap_or(Value::Null),
    ))
}
