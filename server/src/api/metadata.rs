//! `/api/metadata` and the per-type resources (`/api/dataElements` …).

use axum::extract::{OriginalUri, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hisa_shared::authority;
use hisa_shared::schema::{self, klass, reference_id};
use hisa_shared::webmessage::{ImportReport, Status, WebMessage};
use serde_json::{json, Map, Value};

use super::{JsonBody, Params};
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::metadata::import::{AtomicMode, ImportParams, ImportStrategy};
use crate::metadata::Snapshot;
use crate::query::{parse_fields, select, ListQuery, DEFAULT_DETAIL_FIELDS};
use crate::state::Services;

fn import_params(params: &Params) -> ServerResult<ImportParams> {
    let mut out = ImportParams::default();
    if let Some(s) = params.get("importStrategy") {
        out.strategy = ImportStrategy::parse(s)
            .ok_or_else(|| ServerError::BadRequest(format!("Unknown importStrategy `{s}`")))?;
    }
    if let Some(a) = params.get("atomicMode") {
        out.atomic = match a.to_ascii_uppercase().as_str() {
            "ALL" => AtomicMode::All,
            "NONE" => AtomicMode::None,
            _ => return Err(ServerError::BadRequest(format!("Unknown atomicMode `{a}`"))),
        };
    }
    if let Some(m) = params.get("importMode") {
        out.validate_only = match m.to_ascii_uppercase().as_str() {
            "COMMIT" => false,
            "VALIDATE" => true,
            _ => return Err(ServerError::BadRequest(format!("Unknown importMode `{m}`"))),
        };
    }
    if params.flag("dryRun") {
        out.validate_only = true;
    }
    Ok(out)
}

fn report_response(report: ImportReport) -> Response {
    let message = report.into_web_message();
    let status = StatusCode::from_u16(message.http_status_code).unwrap_or(StatusCode::OK);
    (status, Json(message)).into_response()
}

/// `POST /api/metadata`: a DHIS2 metadata payload.
pub async fn import(
    svc: Services,
    caller: Caller,
    params: Params,
    JsonBody(payload): JsonBody,
) -> ServerResult<Response> {
    let params = import_params(&params)?;
    let report = svc.metadata.import_as(&caller, payload, params).await?;
    Ok(report_response(report))
}

/// Which kinds a caller may list, and whether a given object is visible.
fn visible(caller: &Caller, snapshot: &Snapshot, kind: &str, obj: &Value) -> bool {
    if kind != "users" || caller.is_superuser() {
        return true;
    }
    if obj.get("id").and_then(Value::as_str) == Some(caller.user_uid.as_str()) {
        return true;
    }
    if !caller.has(authority::USER_VIEW) && !caller.has(authority::USER_ADD) {
        return false;
    }
    // A user manager sees the users whose org units lie inside their own subtrees.
    obj.get("organisationUnits")
        .and_then(Value::as_array)
        .is_some_and(|ous| {
            !ous.is_empty()
                && ous.iter().all(|ou| {
                    reference_id(ou).is_some_and(|id| snapshot.within_any(id, &caller.view_roots))
                })
        })
}

fn known_kind(snapshot: &Snapshot, kind: &str) -> bool {
    schema::schema(kind).is_some() || snapshot.count_of(kind) > 0
}

/// `GET /api/{resource}` with DHIS2's fields, filter, order and paging.
pub async fn list(
    svc: Services,
    caller: Caller,
    Path(kind): Path<String>,
    OriginalUri(uri): OriginalUri,
    params: Params,
) -> ServerResult<Json<Value>> {
    let kind = kind.trim_end_matches(".json").to_string();
    let snap = svc.metadata.snapshot().await?;
    if !known_kind(&snap, &kind) {
        return Err(ServerError::NotFound(format!("No resource `{kind}`")));
    }
    let query =
        ListQuery::from_params(&params.0).map_err(|e| ServerError::BadRequest(e.to_string()))?;
    let objects: Vec<&Value> = snap
        .all_of(&kind)
        .filter(|o| visible(&caller, &snap, &kind, o))
        .collect();
    let base = uri.path().to_string();
    Ok(Json(query.apply(
        &kind,
        objects.into_iter(),
        &*snap,
        Some(&base),
    )))
}

/// `GET /api/{resource}/{id}`.
pub async fn detail(
    svc: Services,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    params: Params,
) -> ServerResult<Json<Value>> {
    let id = id.trim_end_matches(".json");
    let snap = svc.metadata.snapshot().await?;
    let obj = snap
        .get_of(&kind, id)
        .filter(|o| visible(&caller, &snap, &kind, o))
        .ok_or_else(|| {
            ServerError::NotFound(format!(
                "{} with id {id} could not be found.",
                schema::singular_of(&kind)
            ))
        })?;
    let fields = params
        .0
        .iter()
        .filter(|(k, _)| k == "fields")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let fields = if fields.is_empty() {
        DEFAULT_DETAIL_FIELDS.to_string()
    } else {
        fields
    };
    let fields = parse_fields(&fields).map_err(|e| ServerError::BadRequest(e.to_string()))?;
    Ok(Json(select(obj, &fields, &*snap)))
}

/// One object through the import path, answered as DHIS2 answers single
/// object writes: a WebMessage holding an ObjectReport.
async fn write_one(
    svc: &Services,
    caller: &Caller,
    kind: &str,
    body: Value,
    strategy: ImportStrategy,
    created_status: StatusCode,
) -> ServerResult<Response> {
    let snap = svc.metadata.snapshot().await?;
    if !known_kind(&snap, kind) {
        return Err(ServerError::NotFound(format!("No resource `{kind}`")));
    }
    let uid = body.get("id").and_then(Value::as_str).map(str::to_string);
    let mut payload = Map::new();
    payload.insert(kind.to_string(), json!([body]));
    let params = ImportParams {
        strategy,
        ..ImportParams::default()
    };
    let report = svc
        .metadata
        .import_as(caller, Value::Object(payload), params)
        .await?;
    let errors: Vec<_> = report.errors().cloned().collect();
    let uid = uid.or_else(|| {
        report
            .type_reports
            .iter()
            .flat_map(|t| t.object_reports.iter())
            .find_map(|o| o.uid.clone())
    });
    let uid = match uid {
        Some(u) => Some(u),
        None => {
            // A created object without a given id: find what it was named.
            let snap = svc.metadata.snapshot().await?;
            snap.all_of(kind)
                .last()
                .and_then(|o| o.get("id").and_then(Value::as_str).map(str::to_string))
        }
    };
    let object_report = json!({
        "responseType": "ObjectReport",
        "uid": uid,
        "klass": klass(kind),
        "errorReports": errors,
    });
    if report.status == Status::Ok {
        let message = WebMessage {
            message: None,
            ..WebMessage::new(created_status.as_u16(), Status::Ok, "")
        }
        .with_response(object_report);
        Ok((created_status, Json(message)).into_response())
    } else {
        let message = WebMessage::new(
            409,
            Status::Error,
            "One or more errors occurred, please see full details in import report.",
        )
        .with_response(object_report);
        Ok((StatusCode::CONFLICT, Json(message)).into_response())
    }
}

pub async fn create(
    svc: Services,
    caller: Caller,
    Path(kind): Path<String>,
    JsonBody(body): JsonBody,
) -> ServerResult<Response> {
    if !body.is_object() {
        return Err(ServerError::BadRequest(
            "The body must be one JSON object".into(),
        ));
    }
    write_one(
        &svc,
        &caller,
        &kind,
        body,
        ImportStrategy::Create,
        StatusCode::CREATED,
    )
    .await
}

pub async fn replace(
    svc: Services,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    JsonBody(mut body): JsonBody,
) -> ServerResult<Response> {
    let Value::Object(map) = &mut body else {
        return Err(ServerError::BadRequest(
            "The body must be one JSON object".into(),
        ));
    };
    if let Some(given) = map.get("id").and_then(Value::as_str) {
        if given != id {
            return Err(ServerError::conflict(
                format!("The id in the body ({given}) differs from the id in the path ({id})"),
                "E4000",
            ));
        }
    }
    map.insert("id".into(), json!(id));
    write_one(
        &svc,
        &caller,
        &kind,
        body,
        ImportStrategy::Update,
        StatusCode::OK,
    )
    .await
}

pub async fn delete(
    svc: Services,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
) -> ServerResult<Response> {
    let snap = svc.metadata.snapshot().await?;
    if snap.get_of(&kind, &id).is_none() {
        return Err(ServerError::NotFound(format!(
            "{} with id {id} could not be found.",
            schema::singular_of(&kind)
        )));
    }
    write_one(
        &svc,
        &caller,
        &kind,
        json!({"id": id}),
        ImportStrategy::Delete,
        StatusCode::OK,
    )
    .await
}

/// `GET /api/metadata`: every type, or the ones named `type=true`.
pub async fn export(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    caller.require_any(&[authority::METADATA_EXPORT])?;
    let snap = svc.metadata.snapshot().await?;
    let selected: Vec<&str> = params
        .0
        .iter()
        .filter(|(_, v)| v.eq_ignore_ascii_case("true"))
        .map(|(k, _)| k.as_str())
        .filter(|k| known_kind(&snap, k))
        .collect();
    let excluded: Vec<&str> = params
        .0
        .iter()
        .filter(|(_, v)| v.eq_ignore_ascii_case("false"))
        .map(|(k, _)| k.as_str())
        .collect();
    let skip_defaults = params
        .get("defaults")
        .is_some_and(|d| d.eq_ignore_ascii_case("EXCLUDE"));
    let fields = parse_fields(params.get("fields").unwrap_or(":owner"))
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    let mut kinds: Vec<&str> = snap.kinds().collect();
    kinds.sort_by_key(|k| (schema::import_rank(k), k.to_string()));
    let mut out = Map::new();
    out.insert(
        "system".into(),
        json!({
            "id": "hisa",
            "rev": env!("CARGO_PKG_VERSION"),
            "version": super::system::DHIS2_API_VERSION,
            "date": crate::metadata::import::format_timestamp(time::OffsetDateTime::now_utc()),
        }),
    );
    for kind in kinds {
        if (!selected.is_empty() && !selected.contains(&kind)) || excluded.contains(&kind) {
            continue;
        }
        let items: Vec<Value> = snap
            .all_of(kind)
            .filter(|o| visible(&caller, &snap, kind, o))
            .filter(|o| {
                !skip_defaults
                    || !o
                        .get("id")
                        .and_then(Value::as_str)
                        .is_some_and(hisa_shared::metadata::defaults::is_default)
            })
            .map(|o| select(o, &fields, &*snap))
            .collect();
        if !items.is_empty() {
            out.insert(kind.to_string(), Value::Array(items));
        }
    }
    Ok(Json(Value::Object(out)))
}
