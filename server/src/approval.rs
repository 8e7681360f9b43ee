//! Data approval (DHIS2's model): approval levels by org unit level,
//! workflows per data set, approve / unapprove / accept / unaccept, the
//! status of a unit and period, and **return**: a supervisor sends a form
//! back with a comment that reaches whoever submitted it (a message, sent
//! down by sync and, when the user has a phone number, by SMS).
//!
//! Approved data is locked against writes at and below the approving unit:
//! `DataImporter` asks [`ApprovalLocks`].

use std::collections::HashSet;

use hisa_shared::authority;
use hisa_shared::metadata::defaults;
use hisa_shared::period::Period;
use hisa_sms_gateway::model::OutboundKind;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::data::Channel;
use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;
use crate::state::Services;
use crate::store::{ApprovalAudit, ApprovalRow, CompletionWrite, UserMessage, ValueQuery};

pub const ACCEPT_LOWER_LEVELS: &str = "F_ACCEPT_DATA_LOWER_LEVELS";

#[derive(Debug, Clone)]
pub struct Level {
    pub uid: String,
    pub name: String,
    pub org_unit_level: u32,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub uid: String,
    pub name: String,
    /// Highest first (smallest org unit level).
    pub levels: Vec<Level>,
    pub data_sets: Vec<String>,
}

impl Workflow {
    pub fn of(snap: &Snapshot, uid: &str) -> Option<Workflow> {
        let body = snap.get_of("dataApprovalWorkflows", uid)?;
        let mut levels: Vec<Level> = body
            .get("dataApprovalLevels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("id").and_then(Value::as_str))
            .filter_map(|id| {
                let l = snap.get_of("dataApprovalLevels", id)?;
                Some(Level {
                    uid: id.to_string(),
                    name: l
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or(id)
                        .to_string(),
                    org_unit_level: l.get("orgUnitLevel").and_then(Value::as_u64)? as u32,
                })
            })
            .collect();
        levels.sort_by_key(|l| l.org_unit_level);
        let data_sets = snap
            .data_index()
            .data_sets
            .values()
            .filter(|d| d.workflow.as_deref() == Some(uid))
            .map(|d| d.uid.clone())
            .collect();
        Some(Workflow {
            uid: uid.to_string(),
            name: body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(uid)
                .to_string(),
            levels,
            data_sets,
        })
    }

    fn level_at(&self, org_unit_level: u32) -> Option<&Level> {
        self.levels
            .iter()
            .find(|l| l.org_unit_level == org_unit_level)
    }

    fn level_below(&self, org_unit_level: u32) -> Option<&Level> {
        self.levels
            .iter()
            .find(|l| l.org_unit_level > org_unit_level)
    }
}

/// What is approved where, as `DataImporter` checks it before each write.
#[derive(Debug, Default, Clone)]
pub struct ApprovalLocks {
    approved: HashSet<(String, String, String, String)>,
}

impl ApprovalLocks {
    pub fn new(rows: Vec<ApprovalRow>) -> ApprovalLocks {
        ApprovalLocks {
            approved: rows
                .into_iter()
                .map(|r| (r.workflow, r.period, r.org_unit, r.attribute_option_combo))
                .collect(),
        }
    }

    /// The approving unit, if `org_unit` or one above it approved this.
    pub fn approved_at(
        &self,
        workflow: &str,
        period: &str,
        path: &str,
        aoc: &str,
    ) -> Option<String> {
        path.split('/').filter(|s| !s.is_empty()).find_map(|unit| {
            self.approved
                .contains(&(
                    workflow.to_string(),
                    period.to_string(),
                    unit.to_string(),
                    aoc.to_string(),
                ))
                .then(|| unit.to_string())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// No approval level at this org unit's level, or no workflow.
    Unapprovable,
    /// Units at the level below are not all approved yet.
    UnapprovedWaiting,
    UnapprovedReady,
    ApprovedHere,
    AcceptedHere,
    ApprovedAbove,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub workflow: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: String,
    pub state: State,
    pub level: Option<Value>,
    pub approved_by: Option<String>,
    pub accepted_by: Option<String>,
    pub may_approve: bool,
    pub may_unapprove: bool,
    pub may_accept: bool,
    pub may_unaccept: bool,
    pub may_read_data: bool,
}

/// What a request names: a workflow (or a data set that has one), a
/// period, an org unit and an attribute option combo (default if absent).
#[derive(Debug, Clone)]
pub struct Target {
    pub workflow: Workflow,
    pub period: Period,
    pub org_unit: String,
    pub aoc: String,
}

pub fn target(
    snap: &Snapshot,
    wf: Option<&str>,
    ds: Option<&str>,
    pe: Option<&str>,
    ou: Option<&str>,
    aoc: Option<&str>,
) -> ServerResult<Target> {
    let conflict = |m: String| ServerError::conflict(m, "E7100");
    let wf_uid = match (wf, ds) {
        (Some(w), _) => w.to_string(),
        (None, Some(d)) => snap
            .data_index()
            .data_sets
            .get(d)
            .ok_or_else(|| conflict(format!("Data set `{d}` does not exist")))?
            .workflow
            .clone()
            .ok_or_else(|| conflict(format!("Data set `{d}` has no approval workflow")))?,
        (None, None) => {
            return Err(conflict(
                "Give the workflow (`wf`) or the data set (`ds`)".into(),
            ))
        }
    };
    let workflow = Workflow::of(snap, &wf_uid)
        .ok_or_else(|| conflict(format!("Approval workflow `{wf_uid}` does not exist")))?;
    let pe = pe.ok_or_else(|| conflict("The period (`pe`) is required".into()))?;
    let period =
        Period::parse(pe).map_err(|e| conflict(format!("Period `{pe}` is not valid: {e}")))?;
    let ou = ou.ok_or_else(|| conflict("The org unit (`ou`) is required".into()))?;
    if snap.org_unit(ou).is_none() {
        return Err(conflict(format!("Org unit `{ou}` does not exist")));
    }
    let aoc = aoc.unwrap_or(defaults::CATEGORY_OPTION_COMBO).to_string();
    if snap.get_of("categoryOptionCombos", &aoc).is_none() && aoc != defaults::CATEGORY_OPTION_COMBO
    {
        return Err(conflict(format!(
            "Attribute option combo `{aoc}` does not exist"
        )));
    }
    Ok(Target {
        workflow,
        period,
        org_unit: ou.to_string(),
        aoc,
    })
}

pub async fn status(
    svc: &Services,
    snap: &Snapshot,
    caller: &Caller,
    t: &Target,
) -> ServerResult<Status> {
    let rows = svc
        .store
        .approvals()
        .approvals(&t.workflow.uid, &t.period.iso())
        .await?;
    Ok(status_from(snap, caller, t, &rows))
}

/// The status of `t` given every approval of its workflow and period.
pub fn status_from(snap: &Snapshot, caller: &Caller, t: &Target, rows: &[ApprovalRow]) -> Status {
    let node = snap.org_unit(&t.org_unit);
    let path = node.map(|n| n.path.clone()).unwrap_or_default();
    let ou_level = node.map(|n| n.level).unwrap_or(0);
    let level = t.workflow.level_at(ou_level);
    let row = |unit: &str| {
        rows.iter()
            .find(|r| r.org_unit == unit && r.attribute_option_combo == t.aoc)
    };
    let here = row(&t.org_unit);
    let above = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != t.org_unit)
        .any(|unit| row(unit).is_some());
    let ready = match (level, t.workflow.level_below(ou_level)) {
        (_, None) => true,
        (_, Some(lower)) => snap
            .org_units()
            .filter(|(_, n)| {
                n.level == lower.org_unit_level && n.path.starts_with(&format!("{path}/"))
            })
            .all(|(uid, _)| row(uid).is_some()),
    };
    let state = if level.is_none() {
        State::Unapprovable
    } else if above {
        State::ApprovedAbove
    } else if here.is_some_and(|r| r.accepted) {
        State::AcceptedHere
    } else if here.is_some() {
        State::ApprovedHere
    } else if ready {
        State::UnapprovedReady
    } else {
        State::UnapprovedWaiting
    };
    let may_view = caller.can_view(snap, &t.org_unit);
    let approver = caller.has(authority::APPROVE_DATA) && may_view;
    // Accepting is for a level above: the unit lies strictly below the caller's own.
    let below_caller = caller.is_superuser()
        || caller.view_roots.iter().any(|root| {
            root != &t.org_unit && snap.within_any(&t.org_unit, std::slice::from_ref(root))
        });
    let acceptor = caller.has(ACCEPT_LOWER_LEVELS) && below_caller;
    Status {
        workflow: t.workflow.uid.clone(),
        period: t.period.iso(),
        org_unit: t.org_unit.clone(),
        attribute_option_combo: t.aoc.clone(),
        state,
        level: level
            .map(|l| json!({"id": l.uid, "name": l.name, "orgUnitLevel": l.org_unit_level})),
        approved_by: here.map(|r| r.approved_by.clone()),
        accepted_by: here.and_then(|r| r.accepted_by.clone()),
        may_approve: approver && state == State::UnapprovedReady,
        may_unapprove: approver && state == State::ApprovedHere,
        may_accept: acceptor && state == State::ApprovedHere,
        may_unaccept: acceptor && state == State::AcceptedHere,
        may_read_data: may_view,
    }
}

fn audit(t: &Target, action: &str, caller: &Caller, comment: Option<String>) -> ApprovalAudit {
    ApprovalAudit {
        workflow: t.workflow.uid.clone(),
        period: t.period.iso(),
        org_unit: t.org_unit.clone(),
        attribute_option_combo: t.aoc.clone(),
        action: action.to_string(),
        by_user: caller.username.clone(),
        at: crate::sync::now_ms(),
        comment,
    }
}

fn refuse(s: &Status, action: &str) -> ServerError {
    let why = match s.state {
        State::Unapprovable => "there is no approval level at this org unit's level".to_string(),
        State::UnapprovedWaiting => "the level below has not approved yet".to_string(),
        State::ApprovedAbove => "it is approved at a level above".to_string(),
        State::AcceptedHere => "it is accepted; unaccept it first".to_string(),
        _ if !s.may_read_data => "the org unit is outside your org units".to_string(),
        other => format!("its state is {other:?} or you lack the authority"),
    };
    ServerError::conflict(
        format!(
            "Cannot {action} {} {} {}: {why}",
            s.workflow, s.period, s.org_unit
        ),
        "E7101",
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Unapprove,
    Accept,
    Unaccept,
}

/// Check a batch completely, then apply it: all of it or none of it.
pub async fn act(
    svc: &Services,
    caller: &Caller,
    targets: &[Target],
    action: Action,
) -> ServerResult<()> {
    let snap = svc.metadata.snapshot().await?;
    let store = svc.store.approvals();
    let mut checked = Vec::with_capacity(targets.len());
    for t in targets {
        let s = status(svc, &snap, caller, t).await?;
        let allowed = match action {
            Action::Approve => s.may_approve,
            Action::Unapprove => s.may_unapprove,
            Action::Accept => s.may_accept,
            Action::Unaccept => s.may_unaccept,
        };
        if !allowed {
            let verb = match action {
                Action::Approve => "approve",
                Action::Unapprove => "unapprove",
                Action::Accept => "accept",
                Action::Unaccept => "unaccept",
            };
            if !caller.has(authority::APPROVE_DATA) && !caller.has(ACCEPT_LOWER_LEVELS) {
                return Err(ServerError::Forbidden(
                    "You need the authority F_APPROVE_DATA".into(),
                ));
            }
            return Err(refuse(&s, verb));
        }
        checked.push((t, s));
    }
    for (t, s) in checked {
        let done = match action {
            Action::Approve => {
                let row = ApprovalRow {
                    workflow: t.workflow.uid.clone(),
                    period: t.period.iso(),
                    org_unit: t.org_unit.clone(),
                    attribute_option_combo: t.aoc.clone(),
                    level: s
                        .level
                        .as_ref()
                        .and_then(|l| l["id"].as_str())
                        .unwrap_or_default()
                        .to_string(),
                    accepted: false,
                    approved_by: caller.username.clone(),
                    approved_at: crate::sync::now_ms(),
                    accepted_by: None,
                    accepted_at: None,
                };
                store
                    .approve(&row, &audit(t, "APPROVE", caller, None))
                    .await?
            }
            Action::Unapprove => {
                store
                    .unapprove(&audit(t, "UNAPPROVE", caller, None))
                    .await?
            }
            Action::Accept => {
                store
                    .set_accepted(true, &audit(t, "ACCEPT", caller, None))
                    .await?
            }
            Action::Unaccept => {
                store
                    .set_accepted(false, &audit(t, "UNACCEPT", caller, None))
                    .await?
            }
        };
        if !done {
            // Another request changed it between the check and the write.
            return Err(ServerError::conflict(
                "The approval changed meanwhile; check its status again",
                "E7102",
            ));
        }
        tracing::info!(workflow = %t.workflow.uid, period = %t.period.iso(), org_unit = %t.org_unit, by = %caller.username, ?action, "data approval");
    }
    Ok(())
}

/// Return a form to whoever submitted it: unapprove if approved here, mark
/// the data sets of the workflow incomplete, record the comment, and tell
/// the submitters (a message, sent down by sync; an SMS when they have a number).
pub async fn return_form(
    svc: &Services,
    caller: &Caller,
    t: &Target,
    comment: &str,
) -> ServerResult<Vec<String>> {
    let comment = comment.trim();
    if comment.is_empty() {
        return Err(ServerError::conflict(
            "A return needs a comment saying what to correct",
            "E7103",
        ));
    }
    if comment.chars().count() > 2000 {
        return Err(ServerError::conflict(
            "The comment is longer than 2000 characters",
            "E7103",
        ));
    }
    let snap = svc.metadata.snapshot().await?;
    let s = status(svc, &snap, caller, t).await?;
    if !caller.has(authority::APPROVE_DATA) {
        return Err(ServerError::Forbidden(
            "You need the authority F_APPROVE_DATA".into(),
        ));
    }
    if !s.may_read_data || matches!(s.state, State::ApprovedAbove | State::AcceptedHere) {
        return Err(refuse(&s, "return"));
    }
    let approvals = svc.store.approvals();
    if s.state == State::ApprovedHere {
        approvals
            .unapprove(&audit(t, "UNAPPROVE", caller, None))
            .await?;
    }
    let ou_id = snap.org_unit(&t.org_unit).map(|n| n.id).unwrap_or_default();
    let aoc_id = snap.get(&t.aoc).map(|o| o.id).unwrap_or_default();
    let period_ids = crate::store::period_filter(&*svc.store, &[t.period.iso()]).await?;
    let index = snap.data_index();
    let mut submitters: Vec<String> = Vec::new();
    let mut tx = svc.store.begin_data().await?;
    for ds in t
        .workflow
        .data_sets
        .iter()
        .filter_map(|d| index.data_sets.get(d))
    {
        for period_id in period_ids.iter().copied().filter(|id| *id >= 0) {
            if let Some(c) = tx.completion(ds.id, period_id, ou_id, aoc_id).await? {
                if c.completed {
                    submitters.extend(c.completed_by.clone());
                    let write = CompletionWrite {
                        data_set_id: ds.id,
                        period_id,
                        org_unit_id: ou_id,
                        attribute_option_combo_id: aoc_id,
                        completed_by: Some(caller.username.clone()),
                        completed_at: time::OffsetDateTime::now_utc(),
                    };
                    tx.put_completion(&write, false).await?;
                    tx.audit_completion(&write, "RETURN", Channel::Console.as_str(), None)
                        .await?;
                }
            }
        }
    }
    tx.commit().await?;
    let element_ids: Vec<i64> = t
        .workflow
        .data_sets
        .iter()
        .filter_map(|d| index.data_sets.get(d))
        .flat_map(|d| d.elements.iter())
        .filter_map(|de| snap.get(de).map(|o| o.id))
        .collect();
    if !element_ids.is_empty() {
        let values = svc
            .store
            .query_values(&ValueQuery {
                data_element_ids: element_ids,
                period_ids,
                org_unit_ids: vec![ou_id],
                attribute_option_combo_ids: vec![aoc_id],
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        submitters.extend(values.into_iter().filter_map(|v| v.stored_by));
    }
    submitters.sort();
    submitters.dedup();
    approvals
        .record(&audit(t, "RETURN", caller, Some(comment.to_string())))
        .await?;
    let ou_name = snap
        .get_of("organisationUnits", &t.org_unit)
        .and_then(|o| o.get("name").and_then(Value::as_str))
        .unwrap_or(&t.org_unit)
        .to_string();
    let subject = format!(
        "Returned: {} {} {}",
        t.workflow.name,
        t.period.iso(),
        ou_name
    );
    let context = json!({"workflow": t.workflow.uid, "dataSets": t.workflow.data_sets, "period": t.period.iso(),
                         "orgUnit": t.org_unit, "attributeOptionCombo": t.aoc});
    let mut told = Vec::new();
    for username in &submitters {
        let Some(user) = snap.user_uid_by_username(username).map(str::to_string) else {
            continue;
        };
        let message = UserMessage {
            uid: hisa_shared::Uid::generate().to_string(),
            recipient: user.clone(),
            sender: Some(caller.username.clone()),
            subject: subject.clone(),
            text: comment.to_string(),
            context: Some(context.to_string()),
            created_at: crate::sync::now_ms(),
            read_at: None,
        };
        approvals.put_message(&message).await?;
        if let Some(phone) = snap
            .get_of("users", &user)
            .and_then(|u| u.get("phoneNumber"))
            .and_then(Value::as_str)
        {
            let text: String = format!("{subject}: {comment}").chars().take(300).collect();
            match svc
                .sms
                .send(&[phone.to_string()], &text, OutboundKind::Notice, None)
                .await
            {
                Ok(_) => svc.sms.wake(),
                Err(e) => {
                    tracing::info!(user = %username, error = %e, "return notice not sent by SMS")
                }
            }
        }
        told.push(user);
    }
    tracing::info!(workflow = %t.workflow.uid, period = %t.period.iso(), org_unit = %t.org_unit, by = %caller.username, told = told.len(), "form returned");
    Ok(told)
}
