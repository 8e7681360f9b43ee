//! Health, system info, ping and UID generation.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use hisa_shared::Uid;
use serde_json::json;

use super::Params;
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::metadata::import::format_timestamp;
use crate::state::{AppState, Services};

/// The DHIS2 version Hisa's API follows; clients parse it to pick features.
pub const DHIS2_API_VERSION: &str = "2.40.0";

/// Ready only once migrations ran and metadata is loaded: load balancers and
/// tests wait on this, never on a sleep.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

pub async fn ping(_caller: Caller) -> &'static str {
    "pong"
}

pub async fn info(svc: Services, caller: Caller) -> ServerResult<Json<serde_json::Value>> {
    let now = time::OffsetDateTime::now_utc();
    let mut info = json!({
        "contextPath": "",
        "calendar": "iso8601",
        "dateFormat": "yyyy-mm-dd",
        "serverDate": format_timestamp(now),
        "serverTimeZoneId": "Etc/UTC",
        "serverTimeZoneDisplayName": "Coordinated Universal Time",
        "version": DHIS2_API_VERSION,
        "revision": env!("CARGO_PKG_VERSION"),
        "systemName": "Hisa",
        "hisaVersion": env!("CARGO_PKG_VERSION"),
        "emailConfigured": false,
        "isMetadataVersionEnabled": false,
    });
    if caller.is_superuser() {
        let counts = svc.store.data_counts().await?;
        info["databaseInfo"] = json!({
            "type": svc.store.backend().name(),
            "spatialSupport": false,
        });
        info["metadataVersion"] = json!(svc.metadata.snapshot().await?.version);
        info["dataValueCount"] = json!(counts.data_values);
        info["eventCount"] = json!(counts.events);
    }
    Ok(Json(info))
}

/// `GET /api/system/tasks/{type}/{id}`: a job's notifications, newest first.
pub async fn task(
    svc: Services,
    _caller: Caller,
    axum::extract::Path((job_type, id)): axum::extract::Path<(String, String)>,
) -> ServerResult<Json<serde_json::Value>> {
    svc.jobs
        .notifications(&job_type, &id)
        .map(Json)
        .ok_or_else(|| ServerError::NotFound(format!("No {job_type} job {id}")))
}

/// `GET /api/system/taskSummaries/{type}/{id}`: the job's summary once done.
pub async fn task_summary(
    svc: Services,
    _caller: Caller,
    axum::extract::Path((job_type, id)): axum::extract::Path<(String, String)>,
) -> ServerResult<Json<serde_json::Value>> {
    match svc.jobs.summary(&job_type, &id) {
        Some(Some(summary)) => Ok(Json(summary)),
        Some(None) => Ok(Json(serde_json::Value::Null)),
        None => Err(ServerError::NotFound(format!("No {job_type} job {id}"))),
    }
}

/// `GET /api/system/id?limit=n`: fresh UIDs, as DHIS2 clients use to name
/// objects before sending them.
pub async fn ids(_caller: Caller, params: Params) -> ServerResult<Json<serde_json::Value>> {
    let limit = match params.get("limit") {
        None => 1,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ServerError::BadRequest("`limit` must be 1 to 10000".into()))?,
    };
    let codes: Vec<String> = (0..limit).map(|_| Uid::generate().to_string()).collect();
    Ok(Json(json!({ "codes": codes })))
}
