//! `GET /api/dataValueSets`: values read in key order, a page at a time, and
//! written out as JSON, CSV or ADX while the next page is read. Memory stays
//! flat whatever the size of the answer.

use std::sync::Arc;

use bytes::Bytes;
use hisa_shared::datavalue::IdScheme;
use hisa_shared::metadata::parse_date;
use hisa_shared::period::Period;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::input::Format;
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;
use crate::state::Services;
use crate::store::{period_filter, period_filter_within, StoredValue, ValueQuery};

const PAGE: i64 = 10_000;

#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub data_sets: Vec<String>,
    pub data_elements: Vec<String>,
    pub periods: Vec<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub org_units: Vec<String>,
    pub children: bool,
    pub attribute_option_combos: Vec<String>,
    pub include_deleted: bool,
    pub last_updated: Option<String>,
    pub last_updated_duration: Option<String>,
    pub limit: Option<i64>,
    pub id_scheme: IdScheme,
}

/// An export ready to run: the query, and what to repeat at the top of JSON.
pub struct ExportPlan {
    query: ValueQuery,
    limit: Option<i64>,
    single: Option<(String, String, String)>,
    id_scheme: IdScheme,
}

fn conflict(message: impl Into<String>, code: &'static str) -> ServerError {
    ServerError::conflict(message, code)
}

/// `30d`, `12h`, `15m`, `45s`.
fn parse_duration(s: &str) -> Option<time::Duration> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    match unit {
        "d" => Some(time::Duration::days(n)),
        "h" => Some(time::Duration::hours(n)),
        "m" => Some(time::Duration::minutes(n)),
        "s" => Some(time::Duration::seconds(n)),
        _ => None,
    }
}

pub async fn plan(svc: &Services, caller: &Caller, req: ExportRequest) -> ServerResult<ExportPlan> {
    let snap = svc.metadata.snapshot().await?;
    if req.data_sets.is_empty() && req.data_elements.is_empty() {
        return Err(conflict(
            "At least one data element, data set or data element group must be specified",
            "E2001",
        ));
    }
    let mut element_ids = Vec::new();
    let index = snap.data_index();
    for ds in &req.data_sets {
        let rules = index.data_sets.get(ds).ok_or_else(|| {
            conflict(
                format!("Data set not found or not accessible: `{ds}`"),
                "E2005",
            )
        })?;
        for de in &rules.elements {
            if let Some(e) = index.elements.get(de) {
                element_ids.push(e.id);
            }
        }
    }
    for de in &req.data_elements {
        let e = index.elements.get(de).ok_or_else(|| {
            conflict(
                format!("Data element not found or not accessible: `{de}`"),
                "E2005",
            )
        })?;
        element_ids.push(e.id);
    }
    element_ids.sort_unstable();
    element_ids.dedup();

    let mut query = ValueQuery {
        data_element_ids: element_ids,
        include_deleted: req.include_deleted,
        limit: PAGE,
        ..ValueQuery::default()
    };
    if !req.periods.is_empty() {
        let mut isos = Vec::new();
        for p in &req.periods {
            let period = Period::parse(p)
                .map_err(|e| conflict(format!("Period not valid: `{p}`: {e}"), "E2008"))?;
            isos.push(period.iso());
        }
        query.period_ids = period_filter(&*svc.store, &isos).await?;
    } else if let (Some(start), Some(end)) = (&req.start_date, &req.end_date) {
        let (Some(s), Some(e)) = (parse_date(start), parse_date(end)) else {
            return Err(conflict(
                "startDate and endDate must be dates (yyyy-MM-dd)",
                "E2007",
            ));
        };
        if s > e {
            return Err(conflict("Start date must be before end date", "E2004"));
        }
        query.period_ids = period_filter_within(&*svc.store, s, e).await?;
    } else if req.last_updated.is_none() && req.last_updated_duration.is_none() {
        return Err(conflict("At least one period, start/end dates, last updated or last updated duration must be specified", "E2002"));
    }
    if let Some(lu) = &req.last_updated {
        let d = parse_date(lu).ok_or_else(|| conflict("lastUpdated must be a date", "E2007"))?;
        query.last_updated_since = Some(d.midnight().assume_utc());
    }
    if let Some(dur) = &req.last_updated_duration {
        let d = parse_duration(dur)
            .ok_or_else(|| conflict("lastUpdatedDuration is like 30d, 12h, 15m or 45s", "E2007"))?;
        query.last_updated_since = Some(OffsetDateTime::now_utc() - d);
    }
    if req.org_units.is_empty() {
        return Err(conflict(
            "At least one organisation unit or organisation unit group must be specified",
            "E2006",
        ));
    }
    for ou in &req.org_units {
        let node = snap
            .org_unit(ou)
            .ok_or_else(|| conflict(format!("Organisation unit not found: `{ou}`"), "E2012"))?;
        if !caller.can_view(&snap, ou) {
            return Err(conflict(
                format!("Organisation unit is not in the hierarchy of the current user: `{ou}`"),
                "E2012",
            ));
        }
        if req.children {
            query.org_unit_paths.push(node.path.clone());
        } else {
            query.org_unit_ids.push(node.id);
        }
    }
    for aoc in &req.attribute_option_combos {
        let o = snap
            .get_of("categoryOptionCombos", aoc)
            .and_then(|_| snap.get(aoc))
            .ok_or_else(|| {
                conflict(
                    format!("Attribute option combo not found: `{aoc}`"),
                    "E2005",
                )
            })?;
        query.attribute_option_combo_ids.push(o.id);
    }
    let single = (req.data_sets.len() == 1
        && req.periods.len() == 1
        && req.org_units.len() == 1
        && !req.children)
        .then(|| {
            (
                req.data_sets[0].clone(),
                req.periods[0].clone(),
                req.org_units[0].clone(),
            )
        });
    Ok(ExportPlan {
        query,
        limit: req.limit.filter(|l| *l > 0),
        single,
        id_scheme: req.id_scheme,
    })
}

fn ident(snap: &Snapshot, id: i64, scheme: &IdScheme) -> String {
    let uid = snap.uid_of(id).unwrap_or_default();
    match scheme {
        IdScheme::Code => snap
            .get(uid)
            .and_then(|o| o.body.get("code").and_then(Value::as_str))
            .unwrap_or(uid)
            .to_string(),
        IdScheme::Name => snap
            .get(uid)
            .and_then(|o| o.body.get("name").and_then(Value::as_str))
            .unwrap_or(uid)
            .to_string(),
        _ => uid.to_string(),
    }
}

/// DHIS2's data value timestamp: UTC with offset, milliseconds.
fn ts(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

fn json_value(snap: &Snapshot, v: &StoredValue, scheme: &IdScheme, include_deleted: bool) -> Value {
    let mut m = Map::new();
    m.insert(
        "dataElement".into(),
        json!(ident(snap, v.key.data_element_id, scheme)),
    );
    m.insert("period".into(), json!(v.period_iso));
    m.insert(
        "orgUnit".into(),
        json!(ident(snap, v.key.org_unit_id, scheme)),
    );
    m.insert(
        "categoryOptionCombo".into(),
        json!(ident(snap, v.key.category_option_combo_id, scheme)),
    );
    m.insert(
        "attributeOptionCombo".into(),
        json!(ident(snap, v.key.attribute_option_combo_id, scheme)),
    );
    m.insert("value".into(), json!(v.value));
    m.insert("storedBy".into(), json!(v.stored_by));
    m.insert("created".into(), json!(ts(v.created)));
    m.insert("lastUpdated".into(), json!(ts(v.last_updated)));
    if let Some(c) = &v.comment {
        m.insert("comment".into(), json!(c));
    }
    m.insert("followup".into(), json!(v.follow_up));
    if include_deleted {
        m.insert("deleted".into(), json!(v.deleted));
    }
    Value::Object(m)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Run the export, sending the body in chunks. Errors after the first byte
/// can only end the stream early; they are logged.
pub fn stream(
    svc: Services,
    plan: ExportPlan,
    format: Format,
) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        if let Err(e) = run(&svc, plan, format, &tx).await {
            tracing::error!(error = %e, "data export failed mid-stream");
            let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
        }
    });
    rx
}

async fn run(
    svc: &Services,
    mut plan: ExportPlan,
    format: Format,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> ServerResult<()> {
    let snap: Arc<Snapshot> = svc.metadata.snapshot().await?;
    let send = |s: String| async move {
        tx.send(Ok(Bytes::from(s)))
            .await
            .map_err(|_| ServerError::Internal("client went away".into()))
    };
    let include_deleted = plan.query.include_deleted;
    match format {
        Format::Json => {
            let mut head = String::from("{");
            if let Some((ds, pe, ou)) = &plan.single {
                head.push_str(&format!(
                    "\"dataSet\":{},\"period\":{},\"orgUnit\":{},",
                    json!(ds),
                    json!(pe),
                    json!(ou)
                ));
            }
            head.push_str("\"dataValues\":[");
            send(head).await?;
        }
        Format::Csv => {
            let mut head = String::from("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,comment,followup");
            if include_deleted {
                head.push_str(",deleted");
            }
            head.push('\n');
            send(head).await?;
        }
        Format::Adx => {
            send(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<adx xmlns=\"urn:ihe:qrph:adx:2015\" exported=\"{}\">\n",
                ts(OffsetDateTime::now_utc())
            ))
            .await?;
        }
    }
    let mut first = true;
    let mut sent: i64 = 0;
    let mut group: Option<(i64, i64, i64)> = None;
    let scheme = plan.id_scheme.clone();
    // ADX identifies by code unless told otherwise.
    let adx_scheme = if scheme == IdScheme::Uid {
        IdScheme::Code
    } else {
        scheme.clone()
    };
    loop {
        if let Some(limit) = plan.limit {
            plan.query.limit = PAGE.min(limit - sent);
            if plan.query.limit <= 0 {
                break;
            }
        }
        let page = svc.store.query_values(&plan.query).await?;
        let Some(last) = page.last() else { break };
        plan.query.after = Some(last.key);
        let mut chunk = String::with_capacity(page.len() * 200);
        for v in &page {
            match format {
                Format::Json => {
                    if !first {
                        chunk.push(',');
                    }
                    chunk.push_str(&json_value(&snap, v, &scheme, include_deleted).to_string());
                }
                Format::Csv => {
                    let fields = [
                        ident(&snap, v.key.data_element_id, &scheme),
                        v.period_iso.clone(),
                        ident(&snap, v.key.org_unit_id, &scheme),
                        ident(&snap, v.key.category_option_combo_id, &scheme),
                        ident(&snap, v.key.attribute_option_combo_id, &scheme),
                        v.value.clone().unwrap_or_default(),
                        v.stored_by.clone().unwrap_or_default(),
                        ts(v.last_updated),
                        v.comment.clone().unwrap_or_default(),
                        v.follow_up.to_string(),
                    ];
                    let mut line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    if include_deleted {
                        line.push(v.deleted.to_string());
                    }
                    chunk.push_str(&line.join(","));
                    chunk.push('\n');
                }
                Format::Adx => {
                    let key = (
                        v.key.org_unit_id,
                        v.key.period_id,
                        v.key.attribute_option_combo_id,
                    );
                    if group != Some(key) {
                        if group.is_some() {
                            chunk.push_str("  </group>\n");
                        }
                        let adx_period = Period::parse(&v.period_iso)
                            .map(|p| p.to_adx())
                            .unwrap_or_default();
                        let data_set = plan
                            .single
                            .as_ref()
                            .map(|s| s.0.clone())
                            .unwrap_or_default();
                        let ds = snap
                            .get(&data_set)
                            .and_then(|o| o.body.get("code").and_then(Value::as_str))
                            .unwrap_or(&data_set)
                            .to_string();
                        chunk.push_str(&format!(
                            "  <group orgUnit=\"{}\" period=\"{}\" dataSet=\"{}\" attributeOptionCombo=\"{}\">\n",
                            xml_escape(&ident(&snap, v.key.org_unit_id, &adx_scheme)),
                            xml_escape(&adx_period),
                            xml_escape(&ds),
                            xml_escape(&ident(&snap, v.key.attribute_option_combo_id, &adx_scheme)),
                        ));
                        group = Some(key);
                    }
                    let value = v.value.clone().unwrap_or_default();
                    let numeric = value.parse::<f64>().is_ok();
                    let de = xml_escape(&ident(&snap, v.key.data_element_id, &adx_scheme));
                    let coc =
                        xml_escape(&ident(&snap, v.key.category_option_combo_id, &adx_scheme));
                    if numeric {
                        chunk.push_str(&format!(
                            "    <dataValue dataElement=\"{de}\" categoryOptionCombo=\"{coc}\" value=\"{}\"/>\n",
                            xml_escape(&value)
                        ));
                    } else {
                        chunk.push_str(&format!(
                            "    <dataValue dataElement=\"{de}\" categoryOptionCombo=\"{coc}\" value=\"0\"><annotation>{}</annotation></dataValue>\n",
                            xml_escape(&value)
                        ));
                    }
                }
            }
            first = false;
        }
        sent += page.len() as i64;
        send(chunk).await?;
        if (page.len() as i64) < plan.query.limit {
            break;
        }
    }
    match format {
        Format::Json => send("]}".into()).await?,
        Format::Csv => {}
        Format::Adx => {
            let mut tail = String::new();
            if group.is_some() {
                tail.push_str("  </group>\n");
            }
            tail.push_str("</adx>\n");
            send(tail).await?;
        }
    }
    Ok(())
}
