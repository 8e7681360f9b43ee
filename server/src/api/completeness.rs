//! `GET /api/completeness?ds=&pe=&ou=[&children=true]`: reporting rates of
//! a data set for a period, for an org unit (or each of its children).

use axum::Json;
use serde_json::{json, Value};

use super::Params;
use crate::auth::Caller;
use crate::completeness;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;

pub async fn completeness(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<Value>> {
    let need = |k: &str, what: &str| {
        params
            .get(k)
            .ok_or_else(|| ServerError::conflict(format!("`{k}` ({what}) is required"), "E7100"))
    };
    let ds = need("ds", "a data set")?;
    let pe = need("pe", "a period")?;
    let ou = need("ou", "an org unit")?;
    let period = hisa_shared::period::Period::parse(pe)
        .map_err(|e| ServerError::conflict(format!("Period `{pe}` is not valid: {e}"), "E7601"))?;
    let snap = svc.metadata.snapshot().await?;
    if snap.org_unit(ou).is_none() {
        return Err(ServerError::conflict(
            format!("Org unit `{ou}` does not exist"),
            "E7603",
        ));
    }
    if !caller.can_view(&snap, ou) {
        return Err(ServerError::Forbidden(format!(
            "Org unit `{ou}` is outside your org units"
        )));
    }
    let roots: Vec<String> = if params.flag("children") {
        snap.children_of(ou).to_vec()
    } else {
        vec![ou.to_string()]
    };
    let rates = completeness::rates(&svc, &snap, ds, &period, &roots).await?;
    let rows: Vec<Value> = rates
        .into_iter()
        .map(|(uid, r)| {
            let name = snap
                .get_of("organisationUnits", &uid)
                .and_then(|o| o.get("name").cloned())
                .unwrap_or(Value::Null);
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["orgUnit"] = json!({"id": uid, "name": name});
            v
        })
        .collect();
    Ok(Json(
        json!({"dataSet": ds, "period": period.iso(), "completeness": rows}),
    ))
}
