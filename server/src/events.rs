//! Single events for programs without registration: DHIS2's tracker
//! importer for `events` bundles, and reading events back.

use std::collections::HashMap;

use hisa_shared::authority;
use hisa_shared::datavalue::DataImportStrategy;
use hisa_shared::metadata::{defaults, parse_date, Program, ProgramStage};
use hisa_shared::value_type::{validate_value, OptionCodes};
use hisa_shared::Uid;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::data::Channel;
use crate::error::{ServerError, ServerResult};
use crate::metadata::import::format_timestamp;
use crate::metadata::Snapshot;
use crate::state::Services;
use crate::store::{EventAudit, EventQuery, EventRow, EventWrite};

#[derive(Debug, Clone, Copy)]
pub struct TrackerParams {
    pub strategy: DataImportStrategy,
    /// `atomicMode=ALL` (DHIS2's default): one bad event, nothing written.
    pub atomic_all: bool,
    pub channel: Channel,
}

impl Default for TrackerParams {
    fn default() -> Self {
        TrackerParams {
            strategy: DataImportStrategy::CreateAndUpdate,
            atomic_all: true,
            channel: Channel::Api,
        }
    }
}

fn error(code: &str, uid: &str, message: String) -> Value {
    json!({"message": message, "errorCode": code, "trackerType": "EVENT", "uid": uid})
}

/// Import an `{"events": [...]}` bundle; the HTTP status and DHIS2's tracker import report.
pub async fn import_events(
    svc: &Services,
    caller: &Caller,
    body: &Value,
    params: TrackerParams,
) -> ServerResult<(u16, Value)> {
    caller.require_any(&[authority::DATAVALUE_ADD])?;
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ServerError::BadRequest("The body must hold `events`: an array of events".into())
        })?;
    let snap = svc.metadata.snapshot().await?;
    let uids: Vec<String> = events
        .iter()
        .filter_map(|e| e.get("event").and_then(Value::as_str).map(str::to_string))
        .collect();
    let existing: HashMap<String, EventRow> = svc
        .store
        .events_by_uid(&uids)
        .await?
        .into_iter()
        .map(|e| (e.uid.clone(), e))
        .collect();
    let now = OffsetDateTime::now_utc();
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let mut audits = Vec::new();
    let mut object_reports = Vec::new();
    let mut all_errors = Vec::new();
    let (mut created, mut updated, mut deleted, mut ignored) = (0u64, 0u64, 0u64, 0u64);
    let mut seen = std::collections::HashSet::new();
    for (index, event) in events.iter().enumerate() {
        let uid = event
            .get("event")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| Uid::generate().to_string());
        let prior = existing.get(&uid).filter(|e| !e.deleted);
        let mut errors = Vec::new();
        if !seen.insert(uid.clone()) {
            errors.push(error(
                "E1048",
                &uid,
                format!("Event `{uid}` appears twice in the payload"),
            ));
        }
        let result = check_event(&snap, caller, event, &uid, prior, params.strategy, now);
        match result {
            Ok(Change::Write(write)) => {
                if errors.is_empty() {
                    let kind = if prior.is_some() { "UPDATE" } else { "CREATE" };
                    audits.push(EventAudit {
                        event_uid: uid.clone(),
                        audit_type: kind.into(),
                        previous: prior.map(|p| p.data_values.to_string()),
                        modified_by: Some(caller.username.clone()),
                        channel: params.channel.as_str().into(),
                        device: None,
                    });
                    if prior.is_some() {
                        updated += 1;
                    } else {
                        created += 1;
                    }
                    upserts.push(*write);
                }
            }
            Ok(Change::Delete) => {
                if errors.is_empty() {
                    deleted += 1;
                    audits.push(EventAudit {
                        event_uid: uid.clone(),
                        audit_type: "DELETE".into(),
                        previous: prior.map(|p| p.data_values.to_string()),
                        modified_by: Some(caller.username.clone()),
                        channel: params.channel.as_str().into(),
                        device: None,
                    });
                    deletes.push(uid.clone());
                }
            }
            Err(e) => errors.extend(e),
        }
        if !errors.is_empty() {
            ignored += 1;
        }
        all_errors.extend(errors.iter().cloned());
        object_reports.push(
            json!({"trackerType": "EVENT", "uid": uid, "index": index, "errorReports": errors}),
        );
    }
    let failed = !all_errors.is_empty();
    let write = !(failed && params.atomic_all);
    if write && (!upserts.is_empty() || !deletes.is_empty()) {
        svc.store.write_events(&upserts, &deletes, &audits).await?;
    }
    let total = events.len() as u64;
    let stats = if write {
        json!({"created": created, "updated": updated, "deleted": deleted, "ignored": ignored, "total": total})
    } else {
        json!({"created": 0, "updated": 0, "deleted": 0, "ignored": total, "total": total})
    };
    let status = if failed { "ERROR" } else { "OK" };
    let report = json!({
        "status": status,
        "validationReport": {"errorReports": all_errors, "warningReports": []},
        "stats": stats,
        "bundleReport": {
            "status": status,
            "typeReportMap": {"EVENT": {"trackerType": "EVENT", "stats": stats, "objectReports": object_reports}},
            "stats": stats,
        },
    });
    Ok((if failed { 409 } else { 200 }, report))
}

enum Change {
    Write(Box<EventWrite>),
    Delete,
}

fn check_event(
    snap: &Snapshot,
    caller: &Caller,
    event: &Value,
    uid: &str,
    prior: Option<&EventRow>,
    strategy: DataImportStrategy,
    now: OffsetDateTime,
) -> Result<Change, Vec<Value>> {
    let err = |code: &str, message: String| vec![error(code, uid, message)];
    if Uid::parse(uid).is_err() {
        return Err(err("E1048", format!("Object uid `{uid}` is not valid")));
    }
    let delete = strategy == DataImportStrategy::Delete
        || event.get("deleted").and_then(Value::as_bool) == Some(true);
    match (strategy, prior.is_some()) {
        (DataImportStrategy::Create, true) => {
            return Err(err("E1030", format!("Event `{uid}` already exists")))
        }
        (DataImportStrategy::Update, false) => {
            return Err(err("E1032", format!("Event `{uid}` does not exist")))
        }
        _ => {}
    }
    if delete {
        let Some(p) = prior else {
            return Err(err("E1032", format!("Event `{uid}` does not exist")));
        };
        let ou = snap.uid_of(p.org_unit_id).unwrap_or_default();
        if !caller.can_capture(snap, ou) {
            return Err(err(
                "E1000",
                format!("User has no write access to organisation unit `{ou}`"),
            ));
        }
        return Ok(Change::Delete);
    }
    let text = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
    let program_uid = text("program").unwrap_or_default();
    let program: Program = snap
        .typed("programs", &program_uid)
        .ok_or_else(|| err("E1069", format!("Could not find Program `{program_uid}`")))?;
    if program
        .program_type
        .as_deref()
        .is_some_and(|t| t != "WITHOUT_REGISTRATION")
    {
        return Err(err("E1079", format!("Program `{program_uid}` has registration; only events of programs without registration are taken here")));
    }
    let stage_uid = text("programStage")
        .or_else(|| {
            (program.program_stages.len() == 1).then(|| program.program_stages[0].id.clone())
        })
        .unwrap_or_default();
    let stage: ProgramStage = snap.typed("programStages", &stage_uid).ok_or_else(|| {
        err(
            "E1013",
            format!("Could not find ProgramStage `{stage_uid}`"),
        )
    })?;
    if stage.program.as_ref().map(|r| r.id.as_str()) != Some(program_uid.as_str()) {
        return Err(err(
            "E1089",
            format!("Program stage `{stage_uid}` does not belong to program `{program_uid}`"),
        ));
    }
    let ou_uid = text("orgUnit").unwrap_or_default();
    let ou = snap.org_unit(&ou_uid).ok_or_else(|| {
        err(
            "E1049",
            format!("Could not find OrganisationUnit `{ou_uid}`"),
        )
    })?;
    if !caller.can_capture(snap, &ou_uid) {
        return Err(err(
            "E1000",
            format!("User has no write access to organisation unit `{ou_uid}`"),
        ));
    }
    if !program.organisation_units.iter().any(|r| r.id == ou_uid) {
        return Err(err(
            "E1029",
            format!(
                "Event organisation unit `{ou_uid}` is not assigned to program `{program_uid}`"
            ),
        ));
    }
    let occurred = text("occurredAt").or_else(|| text("eventDate"));
    let Some(occurred) = occurred else {
        return Err(err("E1031", "Event occurredAt date is missing".into()));
    };
    let occurred_at = parse_date(&occurred).ok_or_else(|| {
        err(
            "E1051",
            format!("Event occurredAt `{occurred}` is not a valid date"),
        )
    })?;
    if ou.opening_date.is_some_and(|o| occurred_at < o)
        || ou.closed_date.is_some_and(|c| occurred_at > c)
    {
        return Err(err(
            "E1049",
            format!("Organisation unit `{ou_uid}` is closed on {occurred}"),
        ));
    }
    let status = text("status")
        .unwrap_or_else(|| "ACTIVE".into())
        .to_ascii_uppercase();
    if !matches!(
        status.as_str(),
        "ACTIVE" | "COMPLETED" | "SCHEDULE" | "OVERDUE" | "SKIPPED" | "VISITED"
    ) {
        return Err(err(
            "E1302",
            format!("Event status `{status}` is not valid"),
        ));
    }
    let index = snap.data_index();
    let allowed: HashMap<String, bool> = stage
        .program_stage_data_elements
        .iter()
        .filter_map(|p| {
            p.data_element
                .as_ref()
                .map(|d| (d.id.clone(), p.compulsory))
        })
        .collect();
    let mut errors = Vec::new();
    let mut values = Vec::new();
    // Elements given a value, valid or not: an invalid one is reported once, not also as missing.
    let mut given = std::collections::HashSet::new();
    for dv in event
        .get("dataValues")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let de = dv
            .get("dataElement")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(rules) = allowed
            .contains_key(de)
            .then(|| index.elements.get(de))
            .flatten()
        else {
            errors.push(error(
                "E1304",
                uid,
                format!("Data element `{de}` is not part of program stage `{stage_uid}`"),
            ));
            continue;
        };
        let raw = match dv.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        given.insert(de.to_string());
        let codes = rules.option_codes.as_ref().map(|c| c as &dyn OptionCodes);
        match validate_value(rules.value_type, &raw, codes) {
            Ok(v) => values.push(json!({"dataElement": de, "value": v})),
            Err(e) => {
                let code = if e.code() == "E7621" {
                    "E1125"
                } else {
                    "E1302"
                };
                errors.push(error(
                    code,
                    uid,
                    format!("Value of data element `{de}`: {e}"),
                ));
            }
        }
    }
    if status == "COMPLETED" {
        for (de, compulsory) in &allowed {
            if *compulsory && !given.contains(de) {
                errors.push(error(
                    "E1301",
                    uid,
                    format!("Mandatory data element `{de}` is not present"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let id_of = |u: &str| snap.get(u).map(|o| o.id);
    let aoc =
        text("attributeOptionCombo").unwrap_or_else(|| defaults::CATEGORY_OPTION_COMBO.to_string());
    let (Some(program_id), Some(stage_id), Some(aoc_id)) =
        (id_of(&program_uid), id_of(&stage_uid), id_of(&aoc))
    else {
        return Err(err(
            "E1115",
            format!("Could not find attribute option combo `{aoc}`"),
        ));
    };
    Ok(Change::Write(Box::new(EventWrite {
        uid: uid.to_string(),
        program_id,
        program_stage_id: stage_id,
        org_unit_id: ou.id,
        attribute_option_combo_id: aoc_id,
        occurred_at,
        status,
        stored_by: Some(text("storedBy").unwrap_or_else(|| caller.username.clone())),
        data_values: Value::Array(values),
        created: prior.map(|p| p.created).unwrap_or(now),
        last_updated: now,
    })))
}

pub fn event_json(snap: &Snapshot, e: &EventRow) -> Value {
    json!({
        "event": e.uid,
        "program": snap.uid_of(e.program_id),
        "programStage": snap.uid_of(e.program_stage_id),
        "orgUnit": snap.uid_of(e.org_unit_id),
        "occurredAt": format!("{}T00:00:00.000", e.occurred_at),
        "status": e.status,
        "attributeOptionCombo": snap.uid_of(e.attribute_option_combo_id),
        "storedBy": e.stored_by,
        "createdAt": format_timestamp(e.created),
        "updatedAt": format_timestamp(e.last_updated),
        "deleted": e.deleted,
        "dataValues": e.data_values,
    })
}

/// `GET /api/tracker/events`: paged, scoped to what the caller may see.
pub async fn list_events(
    svc: &Services,
    caller: &Caller,
    params: &crate::api::Params,
) -> ServerResult<Value> {
    let snap = svc.metadata.snapshot().await?;
    let mut q = EventQuery::default();
    if let Some(p) = params.get("program") {
        let id = snap
            .get_of("programs", p)
            .and_then(|_| snap.get(p))
            .map(|o| o.id)
            .ok_or_else(|| {
                ServerError::BadRequest(format!("Program is specified but does not exist: `{p}`"))
            })?;
        q.program_ids.push(id);
    }
    let mode = params
        .get("ouMode")
        .unwrap_or("SELECTED")
        .to_ascii_uppercase();
    match params.get("orgUnit").or_else(|| params.get("orgUnits")) {
        Some(ou) => {
            let node = snap.org_unit(ou).ok_or_else(|| {
                ServerError::BadRequest(format!("Organisation unit does not exist: `{ou}`"))
            })?;
            if !caller.can_view(&snap, ou) {
                return Err(ServerError::Forbidden(format!(
                    "User does not have access to organisation unit: `{ou}`"
                )));
            }
            match mode.as_str() {
                "DESCENDANTS" => q.org_unit_paths.push(node.path.clone()),
                "CHILDREN" => {
                    q.org_unit_ids.push(node.id);
                    for c in snap.children_of(ou) {
                        if let Some(n) = snap.org_unit(c) {
                            q.org_unit_ids.push(n.id);
                        }
                    }
                }
                _ => q.org_unit_ids.push(node.id),
            }
        }
        None if !caller.is_superuser() => {
            q.org_unit_paths = caller
                .view_roots
                .iter()
                .filter_map(|r| snap.org_unit(r))
                .map(|n| n.path.clone())
                .collect();
            if q.org_unit_paths.is_empty() {
                return Ok(json!({"page": 1, "pageSize": 50, "instances": []}));
            }
        }
        None => {}
    }
    let date = |k: &str| -> ServerResult<Option<time::Date>> {
        params
            .get(k)
            .map(|v| {
                parse_date(v)
                    .ok_or_else(|| ServerError::BadRequest(format!("`{k}` must be a date")))
            })
            .transpose()
    };
    q.occurred_after = date("occurredAfter")?;
    q.occurred_before = date("occurredBefore")?;
    q.updated_after = date("updatedAfter")?.map(|d| d.midnight().assume_utc());
    q.include_deleted = params.flag("includeDeleted");
    let paging = !params
        .get("paging")
        .is_some_and(|p| p.eq_ignore_ascii_case("false"));
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
    if paging {
        q.limit = page_size;
        q.offset = (page - 1) * page_size;
    } else {
        q.limit = i64::MAX / 2;
    }
    let rows = svc.store.query_events(&q).await?;
    let instances: Vec<Value> = rows.iter().map(|e| event_json(&snap, e)).collect();
    Ok(json!({"page": page, "pageSize": page_size, "instances": instances}))
}
