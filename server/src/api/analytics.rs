//! `GET /api/analytics` (JSON grid), `/api/analytics.csv` and
//! `/api/analytics/dataValueSet.json`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Params;
use crate::analytics;
use crate::auth::Caller;
use crate::error::ServerResult;
use crate::state::Services;

pub async fn json(svc: Services, caller: Caller, params: Params) -> ServerResult<Response> {
    let grid = analytics::query(&svc, &caller, &params).await?;
    Ok(Json(grid.to_json()).into_response())
}

pub async fn csv(svc: Services, caller: Caller, params: Params) -> ServerResult<Response> {
    let grid = analytics::query(&svc, &caller, &params).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/csv; charset=utf-8")],
        grid.to_csv()?,
    )
        .into_response())
}

pub async fn data_value_set(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Response> {
    Ok(Json(analytics::data_value_set(&svc, &caller, &params).await?).into_response())
}
