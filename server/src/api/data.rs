//! Aggregate data endpoints: `/api/dataValueSets`, `/api/dataValues`,
//! `/api/completeDataSetRegistrations`, `/api/audits/dataValue`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use hisa_shared::authority;
use hisa_shared::datavalue::{DataImportStrategy, IdScheme, ImportSummary};
use hisa_shared::metadata::defaults;
use hisa_shared::period::Period;
use hisa_shared::webmessage::{Status, WebMessage};
use serde_json::{json, Value};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::Params;
use crate::auth::Caller;
use crate::data::export::{self, ExportRequest};
use crate::data::import::DataImportOptions;
use crate::data::input::Format;
use crate::data::{import_data, Channel, ImportRequest};
use crate::error::{ServerError, ServerResult};
use crate::state::Services;
use crate::store::{period_filter, period_filter_within, CompletionQuery, ValueQuery};

fn scheme(params: &Params, key: &str) -> ServerResult<Option<IdScheme>> {
    params
        .get(key)
        .map(|v| {
            IdScheme::parse(v)
                .ok_or_else(|| ServerError::BadRequest(format!("Unknown {key} `{v}`")))
        })
        .transpose()
}

/// DHIS2's import parameters, from the URL.
pub fn import_options(params: &Params, format: Format) -> ServerResult<DataImportOptions> {
    let mut o = DataImportOptions::default();
    if format == Format::Adx {
        // ADX identifies by code unless told otherwise.
        o.set_all_schemes(IdScheme::Code);
    }
    if let Some(s) = params
        .get("importStrategy")
        .or_else(|| params.get("strategy"))
    {
        o.strategy = DataImportStrategy::parse(s)
            .ok_or_else(|| ServerError::BadRequest(format!("Unknown importStrategy `{s}`")))?;
    }
    o.dry_run = params.flag("dryRun");
    o.skip_existing_check = params.flag("skipExistingCheck");
    o.atomic = params.flag("atomic");
    o.force = params.flag("force");
    if let Some(s) = scheme(params, "idScheme")? {
        o.set_all_schemes(s);
    }
    if let Some(s) = scheme(params, "dataElementIdScheme")? {
        o.data_element_scheme = s;
    }
    if let Some(s) = scheme(params, "orgUnitIdScheme")? {
        o.org_unit_scheme = s;
    }
    if let Some(s) = scheme(params, "categoryOptionComboIdScheme")? {
        o.category_option_combo_scheme = s;
    }
    if let Some(s) = scheme(params, "dataSetIdScheme")? {
        o.data_set_scheme = s;
    }
    Ok(o)
}

fn summary_response(summary: ImportSummary) -> Response {
    let message = summary.into_web_message();
    let status = StatusCode::from_u16(message.http_status_code).unwrap_or(StatusCode::OK);
    (status, Json(message)).into_response()
}

/// `POST /api/dataValueSets`: JSON, CSV or ADX by Content-Type, gzip by
/// Content-Encoding, streamed: the body is never held whole.
pub async fn import(
    svc: Services,
    caller: Caller,
    params: Params,
    request: Request,
) -> ServerResult<Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let format = Format::from_content_type(&content_type).ok_or_else(|| {
        ServerError::UnsupportedMediaType(format!(
            "Content type `{content_type}` is not supported: send application/json, application/csv or application/adx+xml"
        ))
    })?;
    let mut options = import_options(&params, format)?;
    options.channel = Channel::Api;
    let limit = svc.config.data_body_limit;
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let mut seen = 0usize;
    let stream = request.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len();
        if seen > limit {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(
                "request body is larger than the limit",
            ));
        }
        Ok(chunk)
    });
    let request = ImportRequest {
        format,
        options,
        csv_header_row: params
            .get("firstRowIsHeader")
            .is_none_or(|v| !v.eq_ignore_ascii_case("false")),
        data_set: params.get("dataSet").map(str::to_string),
    };
    if params.flag("async") {
        // The body is spooled to disk (not memory), then imported in the background.
        let mut reader = StreamReader::new(stream);
        let mut spool = tokio::fs::File::from_std(
            tempfile::tempfile().map_err(|e| ServerError::Internal(format!("spool file: {e}")))?,
        );
        let copied = tokio::io::copy(&mut reader, &mut spool).await;
        if too_large.load(Ordering::SeqCst) {
            return Err(ServerError::PayloadTooLarge { limit });
        }
        copied.map_err(|e| {
            ServerError::BadRequest(format!("Could not read the request body: {e}"))
        })?;
        let mut file = spool.into_std().await;
        std::io::Seek::rewind(&mut file)
            .map_err(|e| ServerError::Internal(format!("spool file: {e}")))?;
        let id = svc.jobs.start("DATAVALUE_IMPORT");
        let job_svc = svc.clone();
        let job_id = id.clone();
        tokio::spawn(async move {
            match import_data(&job_svc, caller, request, file).await {
                Ok(summary) => {
                    let value = serde_json::to_value(&summary).unwrap_or(Value::Null);
                    job_svc.jobs.finish(&job_id, value, "Import done");
                }
                Err(e) => {
                    tracing::error!(error = %e, "background data import failed");
                    let failed = json!({"status": "ERROR", "description": "The import failed; see the server log"});
                    job_svc.jobs.finish(&job_id, failed, "Import failed");
                }
            }
        });
        let message = WebMessage::new(200, Status::Ok, "Initiated dataValueImport").with_response(json!({
            "responseType": "JobConfiguration",
            "name": "dataValueImport",
            "id": id,
            "created": crate::metadata::import::format_timestamp(time::OffsetDateTime::now_utc()),
            "jobType": "DATAVALUE_IMPORT",
            "relativeNotifierEndpoint": format!("/api/system/tasks/DATAVALUE_IMPORT/{id}"),
        }));
        return Ok(Json(message).into_response());
    }
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let summary = import_data(&svc, caller, request, reader).await?;
    if too_large.load(Ordering::SeqCst) {
        return Err(ServerError::PayloadTooLarge { limit });
    }
    Ok(summary_response(summary))
}

fn list(params: &Params, key: &str) -> Vec<String> {
    params
        .0
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn export_format(headers: &HeaderMap, params: &Params, extension: Option<&str>) -> Format {
    if let Some(ext) = extension {
        return Format::from_path(&format!("x.{ext}")).unwrap_or(Format::Json);
    }
    if let Some(f) = params.get("format") {
        return Format::from_content_type(f).unwrap_or(Format::Json);
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_content_type)
        .unwrap_or(Format::Json)
}

async fn export_with(
    svc: Services,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
    ext: Option<&str>,
) -> ServerResult<Response> {
    let format = export_format(&headers, &params, ext);
    let req = ExportRequest {
        data_sets: list(&params, "dataSet"),
        data_elements: list(&params, "dataElement"),
        periods: list(&params, "period"),
        start_date: params.get("startDate").map(str::to_string),
        end_date: params.get("endDate").map(str::to_string),
        org_units: list(&params, "orgUnit"),
        children: params.flag("children"),
        attribute_option_combos: list(&params, "attributeOptionCombo"),
        include_deleted: params.flag("includeDeleted"),
        last_updated: params.get("lastUpdated").map(str::to_string),
        last_updated_duration: params.get("lastUpdatedDuration").map(str::to_string),
        limit: params.get("limit").and_then(|l| l.parse().ok()),
        id_scheme: scheme(&params, "idScheme")?.unwrap_or_default(),
    };
    let plan = export::plan(&svc, &caller, req).await?;
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => "application/csv; charset=utf-8",
        Format::Adx => "application/adx+xml",
    };
    let rx = export::stream(svc, plan, format);
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub async fn export(
    svc: Services,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
) -> ServerResult<Response> {
    export_with(svc, caller, params, headers, None).await
}

pub async fn export_json(
    svc: Services,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
) -> ServerResult<Response> {
    export_with(svc, caller, params, headers, Some("json")).await
}

pub async fn export_csv(
    svc: Services,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
) -> ServerResult<Response> {
    export_with(svc, caller, params, headers, Some("csv")).await
}

pub async fn export_adx(
    svc: Services,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
) -> ServerResult<Response> {
    export_with(svc, caller, params, headers, Some("adx")).await
}

// ---- /api/dataValues --------------------------------------------------------

/// The one value DHIS2's data entry screen names with `de`, `pe`, `ou`, `co`, `cc`/`cp`.
fn single_value(
    params: &Params,
    body: Option<&Value>,
) -> ServerResult<(crate::data::import::SetLevel, crate::data::import::RawValue)> {
    let get = |k: &str, alt: &str| -> Option<String> {
        params.get(k).map(str::to_string).or_else(|| {
            body.and_then(|b| b.get(alt))
                .and_then(|v| v.as_str().map(str::to_string))
        })
    };
    let de = get("de", "dataElement")
        .ok_or_else(|| ServerError::conflict("Data element must be specified (`de`)", "E2011"))?;
    let pe = get("pe", "period")
        .ok_or_else(|| ServerError::conflict("Period must be specified (`pe`)", "E2011"))?;
    let ou = get("ou", "orgUnit")
        .ok_or_else(|| ServerError::conflict("Org unit must be specified (`ou`)", "E2011"))?;
    let cp: Vec<String> = params
        .get("cp")
        .map(|cp| {
            cp.split(';')
                .map(str::to_string)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let header = crate::data::import::SetLevel {
        data_set: get("ds", "dataSet"),
        period: Some(pe),
        org_unit: Some(ou),
        attribute_option_combo: None,
        attribute_category_options: cp,
        complete_date: None,
    };
    let follow_up = params
        .get("followUp")
        .map(|f| f.eq_ignore_ascii_case("true"))
        .or_else(|| {
            body.and_then(|b| b.get("followUp").or_else(|| b.get("followup")))
                .and_then(Value::as_bool)
        });
    let raw = crate::data::import::RawValue {
        data_element: Some(de),
        category_option_combo: get("co", "categoryOptionCombo"),
        value: get("value", "value").or_else(|| {
            body.and_then(|b| b.get("value"))
                .filter(|v| v.is_number())
                .map(|v| v.to_string())
        }),
        comment: get("comment", "comment"),
        follow_up,
        ..Default::default()
    };
    Ok((header, raw))
}

async fn write_single(
    svc: &Services,
    caller: Caller,
    params: &Params,
    body: Option<Value>,
    delete: bool,
) -> ServerResult<ImportSummary> {
    caller.require_any(&[authority::DATAVALUE_ADD])?;
    let (header, mut raw) = single_value(params, body.as_ref())?;
    if delete {
        raw.deleted = Some(true);
    }
    let snap = svc.metadata.snapshot().await?;
    let mut options = import_options(params, Format::Json)?;
    options.channel = Channel::Api;
    let mut importer =
        crate::data::import::DataImporter::new(snap, svc.store.clone(), caller, options);
    importer.set_header(header);
    importer.push(raw).await?;
    importer.finish().await
}

fn single_result(summary: ImportSummary, ok: StatusCode) -> Response {
    if let Some(c) = summary.conflicts.first() {
        let body = WebMessage::new(409, Status::Error, c.value.clone())
            .with_error_code(c.error_code.clone());
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    ok.into_response()
}

pub async fn post_value(
    svc: Services,
    caller: Caller,
    params: Params,
    body: axum::body::Bytes,
) -> ServerResult<Response> {
    let json = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&body)
                .map_err(|e| ServerError::BadRequest(format!("Malformed JSON: {e}")))?,
        )
    };
    let summary = write_single(&svc, caller, &params, json, false).await?;
    Ok(single_result(summary, StatusCode::CREATED))
}

pub async fn delete_value(svc: Services, caller: Caller, params: Params) -> ServerResult<Response> {
    let summary = write_single(&svc, caller, &params, None, true).await?;
    if summary.conflicts.is_empty() && summary.import_count.deleted == 0 {
        return Err(ServerError::NotFound("Data value does not exist".into()));
    }
    Ok(single_result(summary, StatusCode::NO_CONTENT))
}

pub async fn get_value(svc: Services, caller: Caller, params: Params) -> ServerResult<Response> {
    let (header, raw) = single_value(&params, None)?;
    let snap = svc.metadata.snapshot().await?;
    let ou = header.org_unit.clone().unwrap_or_default();
    let node = snap
        .org_unit(&ou)
        .ok_or_else(|| ServerError::conflict(format!("Org unit not found: `{ou}`"), "E1102"))?;
    if !caller.can_view(&snap, &ou) {
        return Err(ServerError::conflict(
            format!("Org unit is not in the hierarchy of the current user: `{ou}`"),
            "E2012",
        ));
    }
    let de = raw.data_element.unwrap_or_default();
    let de_id = snap
        .get_of("dataElements", &de)
        .and_then(|_| snap.get(&de))
        .map(|o| o.id)
        .ok_or_else(|| ServerError::conflict(format!("Data element not found: `{de}`"), "E1100"))?;
    let coc = raw
        .category_option_combo
        .unwrap_or_else(|| defaults::CATEGORY_OPTION_COMBO.to_string());
    let coc_id = snap.get(&coc).map(|o| o.id).ok_or_else(|| {
        ServerError::conflict(format!("Category option combo not found: `{coc}`"), "E1103")
    })?;
    let pe = header.period.unwrap_or_default();
    let period = Period::parse(&pe)
        .map_err(|e| ServerError::conflict(format!("Period not valid: `{pe}`: {e}"), "E1101"))?;
    let period_ids: Vec<i64> = svc
        .store
        .period_ids(&[period.iso()])
        .await?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    if period_ids.is_empty() {
        return Err(ServerError::NotFound("Data value does not exist".into()));
    }
    let aoc_id = snap
        .get(defaults::CATEGORY_OPTION_COMBO)
        .map(|o| o.id)
        .unwrap_or_default();
    let rows = svc
        .store
        .query_values(&ValueQuery {
            data_element_ids: vec![de_id],
            period_ids,
            org_unit_ids: vec![node.id],
            limit: 100,
            ..ValueQuery::default()
        })
        .await?;
    let found = rows.into_iter().find(|v| {
        v.key.category_option_combo_id == coc_id && v.key.attribute_option_combo_id == aoc_id
    });
    match found {
        Some(v) => Ok(Json(json!([v.value.unwrap_or_default()])).into_response()),
        None => Err(ServerError::NotFound("Data value does not exist".into())),
    }
}

// ---- /api/completeDataSetRegistrations ---------------------------------------

pub async fn post_completions(
    svc: Services,
    caller: Caller,
    params: Params,
    axum::extract::Json(body): axum::extract::Json<Value>,
) -> ServerResult<Response> {
    caller.require_any(&[authority::DATAVALUE_ADD])?;
    let regs = body
        .get("completeDataSetRegistrations")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| {
            ServerError::BadRequest("Send `completeDataSetRegistrations`: an array".into())
        })?;
    let options = import_options(&params, Format::Json)?;
    let dry_run = options.dry_run;
    let snap = svc.metadata.snapshot().await?;
    let mut summary = ImportSummary::new(json!({"dryRun": dry_run}));
    let mut tx = svc.store.begin_data().await?;
    for (i, reg) in regs.iter().enumerate() {
        let text = |k: &str| reg.get(k).and_then(Value::as_str).map(str::to_string);
        let fail = |summary: &mut ImportSummary, code: &str, object: String, message: String| {
            summary.reject(
                Some(i),
                hisa_shared::datavalue::Conflict {
                    object,
                    objects: Default::default(),
                    value: message,
                    error_code: code.into(),
                    property: None,
                    indexes: vec![],
                },
            );
        };
        let ds = text("dataSet").unwrap_or_default();
        let Some(ds_rules) = snap.data_index().data_sets.get(&ds).cloned() else {
            fail(
                &mut summary,
                "E7600",
                ds.clone(),
                format!("Data set not found or not accessible: `{ds}`"),
            );
            continue;
        };
        let ou = text("organisationUnit")
            .or_else(|| text("orgUnit"))
            .unwrap_or_default();
        let Some(node) = snap.org_unit(&ou) else {
            fail(
                &mut summary,
                "E7612",
                ou.clone(),
                format!("Org unit not found or not accessible: `{ou}`"),
            );
            continue;
        };
        if !caller.can_capture(&snap, &ou) {
            fail(
                &mut summary,
                "E7617",
                ou.clone(),
                format!("Org unit `{ou}` is not in the hierarchy of the user"),
            );
            continue;
        }
        if !ds_rules.org_units.contains(&ou) {
            fail(
                &mut summary,
                "E7636",
                ou.clone(),
                format!("Data set `{ds}` is not assigned to org unit `{ou}`"),
            );
            continue;
        }
        let pe = text("period").unwrap_or_default();
        let period = match Period::parse(&pe) {
            Ok(p) if Some(p.period_type()) == ds_rules.period_type => p,
            _ => {
                fail(
                    &mut summary,
                    "E7611",
                    pe.clone(),
                    format!("Period not valid for data set `{ds}`: `{pe}`"),
                );
                continue;
            }
        };
        let aoc = text("attributeOptionCombo")
            .unwrap_or_else(|| defaults::CATEGORY_OPTION_COMBO.to_string());
        let Some(aoc_id) = snap
            .get_of("categoryOptionCombos", &aoc)
            .and_then(|_| snap.get(&aoc))
            .map(|o| o.id)
        else {
            fail(
                &mut summary,
                "E7615",
                aoc.clone(),
                format!("Attribute option combo not found: `{aoc}`"),
            );
            continue;
        };
        let completed = reg
            .get("completed")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let completed_at = text("date")
            .and_then(|d| hisa_shared::metadata::parse_date(&d))
            .map(|d| d.midnight().assume_utc())
            .filter(|d| *d <= time::OffsetDateTime::now_utc())
            .unwrap_or_else(time::OffsetDateTime::now_utc);
        let row = crate::store::PeriodRow::of(&period);
        let period_id = tx.ensure_periods(&[row]).await?[0].1;
        let write = crate::store::CompletionWrite {
            data_set_id: ds_rules.id,
            period_id,
            org_unit_id: node.id,
            attribute_option_combo_id: aoc_id,
            completed_by: text("storedBy").or_else(|| Some(caller.username.clone())),
            completed_at,
        };
        let existing = tx
            .completion(ds_rules.id, period_id, node.id, aoc_id)
            .await?;
        let was = existing.as_ref().is_some_and(|c| c.completed);
        match (was, completed) {
            (false, true) => summary.import_count.imported += 1,
            (true, true) => summary.import_count.updated += 1,
            (true, false) => summary.import_count.deleted += 1,
            (false, false) => {
                summary.import_count.ignored += 1;
                continue;
            }
        }
        if !dry_run {
            tx.put_completion(&write, completed).await?;
            let kind = if completed {
                if was {
                    "UPDATE"
                } else {
                    "CREATE"
                }
            } else {
                "DELETE"
            };
            tx.audit_completion(&write, kind, Channel::Api.as_str(), None)
                .await?;
        }
    }
    if !dry_run {
        tx.commit().await?;
    }
    Ok(summary_response(summary))
}

pub async fn get_completions(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let mut q = CompletionQuery {
        limit: params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100_000),
        ..Default::default()
    };
    for ds in list(&params, "dataSet") {
        let rules =
            snap.data_index().data_sets.get(&ds).ok_or_else(|| {
                ServerError::conflict(format!("Data set not found: `{ds}`"), "E2005")
            })?;
        q.data_set_ids.push(rules.id);
    }
    let periods = list(&params, "period");
    if !periods.is_empty() {
        let isos: Vec<String> = periods
            .iter()
            .filter_map(|p| Period::parse(p).ok())
            .map(|p| p.iso())
            .collect();
        q.period_ids = period_filter(&*svc.store, &isos).await?;
    } else if let (Some(s), Some(e)) = (
        params
            .get("startDate")
            .and_then(hisa_shared::metadata::parse_date),
        params
            .get("endDate")
            .and_then(hisa_shared::metadata::parse_date),
    ) {
        q.period_ids = period_filter_within(&*svc.store, s, e).await?;
    }
    let ous = list(&params, "orgUnit");
    if ous.is_empty() {
        return Err(ServerError::conflict(
            "At least one organisation unit must be specified",
            "E2006",
        ));
    }
    for ou in ous {
        let node = snap
            .org_unit(&ou)
            .ok_or_else(|| ServerError::conflict(format!("Org unit not found: `{ou}`"), "E2012"))?;
        if !caller.can_view(&snap, &ou) {
            return Err(ServerError::conflict(
                format!("Organisation unit is not in the hierarchy of the current user: `{ou}`"),
                "E2012",
            ));
        }
        if params.flag("children") {
            q.org_unit_paths.push(node.path.clone());
        } else {
            q.org_unit_ids.push(node.id);
        }
    }
    let rows = svc.store.query_completions(&q).await?;
    let regs: Vec<Value> = rows
        .iter()
        .map(|c| {
            let timely_days = snap
                .uid_of(c.data_set_id)
                .and_then(|ds| snap.data_index().data_sets.get(ds))
                .map_or(0.0, |ds| ds.timely_days);
            let on_time = Period::parse(&c.period_iso)
                .map(|p| on_time(&p, timely_days, c.completed_at))
                .unwrap_or(false);
            json!({
                "dataSet": snap.uid_of(c.data_set_id),
                "period": c.period_iso,
                "organisationUnit": snap.uid_of(c.org_unit_id),
                "attributeOptionCombo": snap.uid_of(c.attribute_option_combo_id),
                "date": crate::metadata::import::format_timestamp(c.completed_at),
                "storedBy": c.completed_by,
                "completed": c.completed,
                "lastUpdated": crate::metadata::import::format_timestamp(c.last_updated),
                "lastUpdatedBy": c.completed_by,
                "onTime": on_time,
            })
        })
        .collect();
    Ok(Json(json!({ "completeDataSetRegistrations": regs })))
}

/// DHIS2's timeliness: completed no later than the end of the day
/// `timelyDays` after the period's last day.
pub fn on_time(period: &Period, timely_days: f64, completed_at: time::OffsetDateTime) -> bool {
    let deadline = (period.end_date() + time::Duration::days(1))
        .midnight()
        .assume_utc()
        + time::Duration::seconds_f64(timely_days.max(0.0) * 86_400.0);
    completed_at < deadline
}

pub async fn delete_completion(
    svc: Services,
    caller: Caller,
    params: Params,
) -> ServerResult<Response> {
    let ds = params.get("ds").unwrap_or_default();
    let pe = params.get("pe").unwrap_or_default();
    let ou = params.get("ou").unwrap_or_default();
    let body = json!({"completeDataSetRegistrations": [{
        "dataSet": ds, "period": pe, "organisationUnit": ou, "completed": false,
        "attributeOptionCombo": defaults::CATEGORY_OPTION_COMBO,
    }]});
    let response =
        post_completions(svc, caller, Params::default(), axum::extract::Json(body)).await?;
    if response.status().is_success() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Ok(response)
    }
}

// ---- /api/audits/dataValue ----------------------------------------------------

pub async fn audits(svc: Services, caller: Caller, params: Params) -> ServerResult<Json<Value>> {
    let snap = svc.metadata.snapshot().await?;
    let mut q = ValueQuery::default();
    for de in list(&params, "de")
        .into_iter()
        .chain(list(&params, "dataElement"))
    {
        q.data_element_ids
            .push(snap.get(&de).map(|o| o.id).ok_or_else(|| {
                ServerError::conflict(format!("Data element not found: `{de}`"), "E1100")
            })?);
    }
    let pes: Vec<String> = list(&params, "pe")
        .into_iter()
        .chain(list(&params, "period"))
        .filter_map(|p| Period::parse(&p).ok())
        .map(|p| p.iso())
        .collect();
    if !pes.is_empty() {
        q.period_ids = period_filter(&*svc.store, &pes).await?;
    }
    let ous: Vec<String> = list(&params, "ou")
        .into_iter()
        .chain(list(&params, "orgUnit"))
        .collect();
    if ous.is_empty() && !caller.is_superuser() {
        q.org_unit_paths = caller
            .view_roots
            .iter()
            .filter_map(|r| snap.org_unit(r))
            .map(|n| n.path.clone())
            .collect();
        if q.org_unit_paths.is_empty() {
            return Ok(Json(
                json!({"pager": {"page": 1, "pageCount": 1, "total": 0, "pageSize": 50}, "dataValueAudits": []}),
            ));
        }
    }
    for ou in ous {
        let node = snap
            .org_unit(&ou)
            .ok_or_else(|| ServerError::conflict(format!("Org unit not found: `{ou}`"), "E2012"))?;
        if !caller.can_view(&snap, &ou) {
            return Err(ServerError::conflict(
                format!("Organisation unit is not in the hierarchy of the current user: `{ou}`"),
                "E2012",
            ));
        }
        q.org_unit_paths.push(node.path.clone());
    }
    let page: i64 = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let page_size: i64 = params
        .get("pageSize")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(50);
    q.limit = page_size;
    let rows = svc.store.query_audits(&q, (page - 1) * page_size).await?;
    let wanted_type = params.get("auditType").map(str::to_ascii_uppercase);
    let audits: Vec<Value> = rows
        .iter()
        .filter(|r| {
            wanted_type
                .as_ref()
                .is_none_or(|t| *t == r.audit.audit_type)
        })
        .map(|r| {
            let a = &r.audit;
            json!({
                "dataElement": snap.uid_of(a.key.data_element_id),
                "period": r.period_iso,
                "orgUnit": snap.uid_of(a.key.org_unit_id),
                "categoryOptionCombo": snap.uid_of(a.key.category_option_combo_id),
                "attributeOptionCombo": snap.uid_of(a.key.attribute_option_combo_id),
                "value": a.previous_value.clone().or_else(|| a.value.clone()),
                "previousValue": a.previous_value,
                "newValue": a.value,
                "modifiedBy": a.modified_by,
                "created": crate::metadata::import::format_timestamp(a.created),
                "auditType": a.audit_type,
                "channel": a.channel,
                "device": a.device,
            })
        })
        .collect();
    Ok(Json(json!({
        "pager": {"page": page, "pageSize": page_size},
        "dataValueAudits": audits,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timeliness_follows_timely_days() {
        let march = Period::parse("202403").unwrap();
        assert!(on_time(&march, 10.0, datetime!(2024-04-10 23:59 UTC)));
        assert!(!on_time(&march, 10.0, datetime!(2024-04-11 00:00 UTC)));
        assert!(on_time(&march, 0.0, datetime!(2024-03-31 12:00 UTC)));
        assert!(!on_time(&march, 0.0, datetime!(2024-04-01 00:00 UTC)));
    }
}
