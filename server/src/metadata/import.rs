//! Planning a DHIS2 metadata import.
//!
//! [`plan`] is pure: it reads the payload and the current snapshot and
//! returns the import report and the [`MetadataChange`] to apply. Nothing is
//! written until every check has run, so with `atomicMode=ALL` (the default)
//! one bad object means nothing is written at all.

use std::collections::{BTreeMap, HashMap, HashSet};

use hisa_shared::category::{combinations, derived_coc_uid};
use hisa_shared::metadata::{defaults, parse_date};
use hisa_shared::schema::{self, each_reference, import_rank, klass, reference_id};
use hisa_shared::webmessage::{ErrorReport, ImportReport, ObjectReport, Stats, Status, TypeReport};
use hisa_shared::Uid;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::snapshot::Snapshot;
use crate::store::{CredentialWrite, MetadataChange, ObjectWrite, OrgUnitWrite};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportStrategy {
    #[default]
    CreateAndUpdate,
    Create,
    Update,
    Delete,
}

impl ImportStrategy {
    pub fn parse(s: &str) -> Option<ImportStrategy> {
        match s.to_ascii_uppercase().as_str() {
            "CREATE_AND_UPDATE" | "NEW_AND_UPDATES" => Some(ImportStrategy::CreateAndUpdate),
            "CREATE" | "NEW" => Some(ImportStrategy::Create),
            "UPDATE" | "UPDATES" => Some(ImportStrategy::Update),
            "DELETE" | "DELETES" => Some(ImportStrategy::Delete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtomicMode {
    #[default]
    All,
    None,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportParams {
    pub strategy: ImportStrategy,
    pub atomic: AtomicMode,
    /// `importMode=VALIDATE`: check and report, write nothing.
    pub validate_only: bool,
}

/// Failures of the payload as a whole (DHIS2 answers these with 400).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("The metadata payload must be a JSON object with one array per type")]
    NotAnObject,
    #[error("`{kind}` must be an array of objects")]
    NotAnArray { kind: String },
    #[error("`{kind}[{index}]` is not an object")]
    NotAnObjectItem { kind: String, index: usize },
    #[error("`{kind}[{index}]`: {message}")]
    WrongType {
        kind: String,
        index: usize,
        message: String,
    },
}

/// Keys of an export that are not types.
const NON_TYPE_KEYS: &[&str] = &["system", "package", "date"];

struct Candidate {
    kind: String,
    index: usize,
    uid: String,
    body: Value,
    exists: bool,
    errors: Vec<ErrorReport>,
    warnings: Vec<ErrorReport>,
}

pub struct Plan {
    pub report: ImportReport,
    pub change: MetadataChange,
}

/// DHIS2's metadata timestamp form: no zone, milliseconds.
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
    );
    t.format(&f).unwrap_or_default()
}

fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
    );
    time::PrimitiveDateTime::parse(s, &f)
        .ok()
        .map(|p| p.assume_utc())
}

fn error(
    kind: &str,
    uid: &str,
    code: &str,
    message: String,
    property: Option<&str>,
    value: Option<&str>,
) -> ErrorReport {
    ErrorReport {
        message,
        main_klass: klass(kind),
        main_id: Some(uid.to_string()),
        error_klass: None,
        error_property: property.map(str::to_string),
        error_properties: property.map(|p| vec![p.to_string()]).unwrap_or_default(),
        value: value.map(str::to_string),
        error_code: code.to_string(),
        args: vec![],
    }
}

/// Lift the pre-2.38 `userCredentials` nesting onto the user, as DHIS2 does.
fn normalize_user(body: &mut Map<String, Value>) {
    if let Some(Value::Object(creds)) = body.remove("userCredentials") {
        for key in [
            "username",
            "password",
            "userRoles",
            "disabled",
            "openId",
            "ldapId",
        ] {
            if let Some(v) = creds.get(key) {
                body.entry(key.to_string()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// Plan an import. `hash_password` turns a plain password into a stored hash.
pub fn plan(
    snapshot: &Snapshot,
    payload: Value,
    params: ImportParams,
    now: OffsetDateTime,
    hash_password: &(dyn Fn(&str) -> String + Sync),
) -> Result<Plan, PayloadError> {
    // The payload is taken by value: objects move into the plan rather than
    // being copied, which matters for a national org unit tree.
    let Value::Object(root) = payload else {
        return Err(PayloadError::NotAnObject);
    };

    // 1. Gather candidates in dependency order, checking shapes.
    let mut kinds: Vec<(String, Value)> = root
        .into_iter()
        .filter(|(k, _)| !NON_TYPE_KEYS.contains(&k.as_str()))
        .collect();
    kinds.sort_by_key(|(k, _)| import_rank(k));
    let mut candidates: Vec<Candidate> = Vec::new();
    for (kind, items) in kinds {
        let items = match items {
            Value::Array(items) => items,
            // e.g. a `settings` object; not a type
            Value::Object(_) | Value::Null => continue,
            _ => return Err(PayloadError::NotAnArray { kind }),
        };
        let kind = &kind;
        for (index, item) in items.into_iter().enumerate() {
            let Value::Object(mut body) = item else {
                return Err(PayloadError::NotAnObjectItem {
                    kind: kind.clone(),
                    index,
                });
            };
            if kind == "users" {
                normalize_user(&mut body);
            }
            if kind == "organisationUnits" {
                // Read-only in DHIS2: derived from `parent`, never taken from a payload.
                for derived in ["children", "ancestors", "leaf", "path", "level"] {
                    body.remove(derived);
                }
            }
            let body = Value::Object(body);
            check_types(kind, index, &body)?;
            let uid = body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| Uid::generate().to_string());
            let exists = snapshot.get_of(kind, &uid).is_some();
            candidates.push(Candidate {
                kind: kind.clone(),
                index,
                uid,
                body,
                exists,
                errors: vec![],
                warnings: vec![],
            });
        }
    }

    // 2. Per-object checks that need no other object.
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for c in candidates.iter_mut() {
        if let Err(e) = Uid::parse(&c.uid) {
            c.errors.push(error(
                &c.kind,
                &c.uid,
                "E4014",
                format!("Invalid UID `{}` for property `id`: {}", c.uid, e.reason),
                Some("id"),
                Some(&c.uid),
            ));
            continue;
        }
        if let Some((kind, index)) = seen.insert(c.uid.clone(), (c.kind.clone(), c.index)) {
            c.errors.push(error(
                &c.kind,
                &c.uid,
                "E5005",
                format!(
                    "Property `id` with value `{}` on object {} is not unique within the payload (also {}[{}])",
                    c.uid, c.uid, kind, index
                ),
                Some("id"),
                Some(&c.uid),
            ));
        }
        if let Some(other) = snapshot.get(&c.uid) {
            if other.kind != c.kind {
                c.errors.push(error(
                    &c.kind,
                    &c.uid,
                    "E5003",
                    format!(
                        "Property `id` with value `{}` is already used by an object of type {}",
                        c.uid,
                        schema::singular_of(&other.kind)
                    ),
                    Some("id"),
                    Some(&c.uid),
                ));
            }
        }
        match (params.strategy, c.exists) {
            (ImportStrategy::Create, true) => c.errors.push(error(
                &c.kind,
                &c.uid,
                "E5000",
                format!(
                    "Found matching object for reference, but import mode is CREATE. Identifier was {}",
                    c.uid
                ),
                None,
                None,
            )),
            (ImportStrategy::Update | ImportStrategy::Delete, false) => c.errors.push(error(
                &c.kind,
                &c.uid,
                "E5001",
                format!(
                    "No matching object for reference. Identifier was {}, and object was {}",
                    c.uid,
                    schema::singular_of(&c.kind)
                ),
                None,
                None,
            )),
            _ => {}
        }
        if params.strategy == ImportStrategy::Delete {
            continue;
        }
        if let Some(s) = schema::schema(&c.kind) {
            for prop in s.required {
                let present = match c.body.get(*prop) {
                    None | Some(Value::Null) => false,
                    Some(Value::String(s)) => !s.trim().is_empty(),
                    Some(_) => true,
                };
                if !present {
                    c.errors.push(error(
                        &c.kind,
                        &c.uid,
                        "E4000",
                        format!("Missing required property `{prop}`"),
                        Some(prop),
                        None,
                    ));
                }
            }
        }
        if c.kind == "users" {
            check_user(c, snapshot);
        }
        if c.kind == "organisationUnits" {
            let opening = c.body.get("openingDate").and_then(Value::as_str);
            let closed = c.body.get("closedDate").and_then(Value::as_str);
            for (prop, v) in [("openingDate", opening), ("closedDate", closed)] {
                if let Some(v) = v {
                    if parse_date(v).is_none() {
                        c.errors.push(error(
                            &c.kind,
                            &c.uid,
                            "E4000",
                            format!("Property `{prop}` has an invalid date `{v}`"),
                            Some(prop),
                            Some(v),
                        ));
                    }
                }
            }
            if let (Some(o), Some(cl)) = (opening.and_then(parse_date), closed.and_then(parse_date))
            {
                if cl < o {
                    c.errors.push(error(
                        &c.kind,
                        &c.uid,
                        "E4013",
                        format!(
                            "Invalid Closing date `{}`, must be after Opening date `{}`",
                            closed.unwrap_or_default(),
                            opening.unwrap_or_default()
                        ),
                        Some("closedDate"),
                        closed,
                    ));
                }
            }
        }
    }

    // 3. Code uniqueness within a type, against the payload and the store.
    let mut codes: HashMap<(String, String), String> = HashMap::new();
    for c in candidates.iter_mut() {
        if params.strategy == ImportStrategy::Delete {
            break;
        }
        let unique = schema::schema(&c.kind).is_none_or(|s| s.code_unique);
        let Some(code) = c.body.get("code").and_then(Value::as_str) else {
            continue;
        };
        if !unique {
            continue;
        }
        let key = (c.kind.clone(), code.to_string());
        let clash = match codes.get(&key) {
            Some(uid) if uid != &c.uid => Some(uid.clone()),
            _ => snapshot
                .uid_by_code(&c.kind, code)
                .filter(|uid| *uid != c.uid && !seen.contains_key(*uid))
                .map(str::to_string),
        };
        if let Some(other) = clash {
            c.errors.push(error(
                &c.kind,
                &c.uid,
                "E5003",
                format!(
                    "Property `code` with value `{code}` on object {} already exists on object {other}",
                    c.uid
                ),
                Some("code"),
                Some(code),
            ));
        }
        codes.insert(key, c.uid.clone());
    }

    // 4. References and the org unit tree, repeated until no new failures:
    // with atomicMode=NONE an object that references a failed one fails too.
    loop {
        let failed_before = candidates.iter().filter(|c| !c.errors.is_empty()).count();
        let live: HashMap<&str, &str> = candidates
            .iter()
            .filter(|c| c.errors.is_empty() && params.strategy != ImportStrategy::Delete)
            .map(|c| (c.uid.as_str(), c.kind.as_str()))
            .collect();
        let mut new_errors: Vec<(usize, ErrorReport)> = Vec::new();
        let mut dropped: Vec<(usize, &'static str, String, ErrorReport)> = Vec::new();
        if params.strategy != ImportStrategy::Delete {
            for (i, c) in candidates.iter().enumerate() {
                if !c.errors.is_empty() {
                    continue;
                }
                let Some(s) = schema::schema(&c.kind) else {
                    continue;
                };
                for r in s.references {
                    each_reference(&c.body, r.path, &mut |v| {
                        let Some(id) = reference_id(v) else {
                            new_errors.push((
                                i,
                                error(
                                    &c.kind,
                                    &c.uid,
                                    "E5002",
                                    format!(
                                        "Invalid reference on object {} ({}) for association `{}`: no `id`",
                                        c.uid,
                                        schema::singular_of(&c.kind),
                                        r.path
                                    ),
                                    Some(r.path),
                                    None,
                                ),
                            ));
                            return;
                        };
                        let ok = live.get(id).is_some_and(|k| *k == r.target)
                            || snapshot.get_of(r.target, id).is_some();
                        if !ok && r.soft {
                            let warning = error(
                                &c.kind,
                                &c.uid,
                                "E5002",
                                format!(
                                    "Invalid reference [{id}] ({}) on object {} ({}) for association `{}`: the reference was dropped",
                                    schema::singular_of(r.target),
                                    c.uid,
                                    schema::singular_of(&c.kind),
                                    r.path.trim_end_matches("[]")
                                ),
                                Some(r.path),
                                Some(id),
                            );
                            dropped.push((i, r.path, id.to_string(), warning));
                        } else if !ok {
                            new_errors.push((
                                i,
                                error(
                                    &c.kind,
                                    &c.uid,
                                    "E5002",
                                    format!(
                                        "Invalid reference [{id}] ({}) on object {} ({}) for association `{}`",
                                        schema::singular_of(r.target),
                                        c.uid,
                                        schema::singular_of(&c.kind),
                                        r.path.split('.').next().unwrap_or(r.path).trim_end_matches("[]")
                                    ),
                                    Some(r.path),
                                    Some(id),
                                ),
                            ));
                        }
                    });
                }
            }
        }
        for (i, e) in new_errors {
            candidates[i].errors.push(e);
        }
        for (i, path, id, warning) in dropped {
            drop_reference(&mut candidates[i].body, path, &id);
            candidates[i].warnings.push(warning);
        }
        if params.strategy != ImportStrategy::Delete {
            check_tree(&mut candidates, snapshot);
        }
        let failed_after = candidates.iter().filter(|c| !c.errors.is_empty()).count();
        if failed_after == failed_before {
            break;
        }
    }

    let any_error = candidates.iter().any(|c| !c.errors.is_empty());
    let rejected_whole = any_error && params.atomic == AtomicMode::All;
    let write = !(params.validate_only || rejected_whole);

    // 5. Build the change from the objects that passed.
    let mut change = MetadataChange::default();
    let mut per_kind: BTreeMap<(usize, String), TypeReport> = BTreeMap::new();
    let mut accepted: Vec<Candidate> = Vec::new();
    let mut any_warning = false;
    for c in candidates {
        let entry = per_kind
            .entry((import_rank(&c.kind), c.kind.clone()))
            .or_insert_with(|| TypeReport {
                klass: klass(&c.kind),
                stats: Stats::default(),
                object_reports: vec![],
            });
        entry.stats.total += 1;
        if !c.warnings.is_empty() && c.errors.is_empty() {
            any_warning = true;
            entry.object_reports.push(ObjectReport {
                klass: klass(&c.kind),
                index: c.index,
                uid: Some(c.uid.clone()),
                display_name: None,
                error_reports: c.warnings.clone(),
            });
        }
        let ok = c.errors.is_empty() && !rejected_whole;
        if !ok {
            entry.stats.ignored += 1;
            if !c.errors.is_empty() {
                entry.object_reports.push(ObjectReport {
                    klass: klass(&c.kind),
                    index: c.index,
                    uid: Some(c.uid.clone()),
                    display_name: c
                        .body
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    error_reports: c.errors.clone(),
                });
            }
            continue;
        }
        match (params.strategy, c.exists) {
            (ImportStrategy::Delete, _) => entry.stats.deleted += 1,
            (_, true) => entry.stats.updated += 1,
            (_, false) => entry.stats.created += 1,
        }
        accepted.push(c);
    }

    if params.strategy == ImportStrategy::Delete {
        change.deletes = accepted.iter().map(|c| c.uid.clone()).collect();
    } else {
        let mut bodies: HashMap<String, (String, Value)> = accepted
            .into_iter()
            .map(|c| (c.uid.clone(), (c.kind, c.body)))
            .collect();
        derive_option_combos(&mut bodies, snapshot, &mut per_kind);
        let org_units = place_org_units(&mut bodies, snapshot);
        change.org_units = org_units;
        let mut uids: Vec<(usize, String)> = bodies
            .iter()
            .map(|(u, (k, _))| (import_rank(k), u.clone()))
            .collect();
        uids.sort();
        let mut plain_passwords: Vec<Option<String>> = Vec::new();
        for (_, uid) in uids {
            let Some((kind, mut body)) = bodies.remove(&uid) else {
                continue;
            };
            let (uid, kind) = (&uid, &kind);
            let created = snapshot
                .get(uid)
                .and_then(|o| o.body.get("created"))
                .and_then(Value::as_str)
                .and_then(parse_timestamp)
                .unwrap_or(now);
            if let Value::Object(map) = &mut body {
                map.insert("id".into(), Value::String(uid.clone()));
                map.insert("created".into(), Value::String(format_timestamp(created)));
                map.insert("lastUpdated".into(), Value::String(format_timestamp(now)));
                if kind == "users" {
                    let password = map.remove("password");
                    let username = map
                        .get("username")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let disabled = map
                        .get("disabled")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    change.credentials.push(CredentialWrite {
                        user_uid: uid.clone(),
                        username,
                        password_hash: None,
                        disabled,
                    });
                    plain_passwords.push(
                        password
                            .as_ref()
                            .and_then(Value::as_str)
                            .filter(|p| !p.is_empty())
                            .map(str::to_string),
                    );
                }
            }
            change.upserts.push(ObjectWrite {
                uid: uid.clone(),
                kind: kind.clone(),
                code: body.get("code").and_then(Value::as_str).map(str::to_string),
                name: body
                    .get("name")
                    .or_else(|| body.get("username"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                body,
                created,
                last_updated: now,
            });
        }
        hash_all(&mut change.credentials, &plain_passwords, hash_password);
    }

    let type_reports: Vec<TypeReport> = per_kind.into_values().collect();
    let mut stats = Stats::default();
    for t in &type_reports {
        stats.add(&t.stats);
    }
    let report = ImportReport {
        response_type: "ImportReport".into(),
        status: if any_error {
            Status::Error
        } else if any_warning {
            Status::Warning
        } else {
            Status::Ok
        },
        stats,
        type_reports,
    };
    if !write {
        change = MetadataChange::default();
    }
    Ok(Plan { report, change })
}

/// Argon2 is slow on purpose; a payload with many users hashes on every core.
fn hash_all(
    credentials: &mut [CredentialWrite],
    plain: &[Option<String>],
    hash_password: &(dyn Fn(&str) -> String + Sync),
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = plain.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (creds, plains) in credentials.chunks_mut(chunk).zip(plain.chunks(chunk)) {
            scope.spawn(move || {
                for (c, p) in creds.iter_mut().zip(plains) {
                    c.password_hash = p.as_deref().map(hash_password);
                }
            });
        }
    });
}

/// Remove reference `id` found at `path` (`field` or `field[]`).
fn drop_reference(body: &mut Value, path: &str, id: &str) {
    let Value::Object(map) = body else { return };
    if let Some(field) = path.strip_suffix("[]") {
        if let Some(Value::Array(items)) = map.get_mut(field) {
            items.retain(|v| reference_id(v) != Some(id));
        }
    } else if map.get(path).and_then(reference_id) == Some(id) {
        map.remove(path);
    }
}

/// Types of the modeled fields must be right, or the payload is malformed.
fn check_types(kind: &str, index: usize, body: &Value) -> Result<(), PayloadError> {
    use hisa_shared::metadata as m;
    fn check<T: serde::de::DeserializeOwned>(
        kind: &str,
        index: usize,
        body: &Value,
    ) -> Result<(), PayloadError> {
        T::deserialize(body)
            .map(|_| ())
            .map_err(|e| PayloadError::WrongType {
                kind: kind.to_string(),
                index,
                message: e.to_string(),
            })
    }
    if let Some(id) = body.get("id") {
        if !id.is_string() {
            return Err(PayloadError::WrongType {
                kind: kind.to_string(),
                index,
                message: "`id` must be a string".into(),
            });
        }
    }
    match kind {
        "organisationUnits" => check::<m::OrgUnit>(kind, index, body),
        "organisationUnitLevels" => check::<m::OrgUnitLevel>(kind, index, body),
        "organisationUnitGroups" => check::<m::OrgUnitGroup>(kind, index, body),
        "dataElements" => check::<m::DataElement>(kind, index, body),
        "optionSets" => check::<m::OptionSet>(kind, index, body),
        "categoryOptions" => check::<m::CategoryOption>(kind, index, body),
        "categories" => check::<m::Category>(kind, index, body),
        "categoryCombos" => check::<m::CategoryCombo>(kind, index, body),
        "categoryOptionCombos" => check::<m::CategoryOptionCombo>(kind, index, body),
        "dataSets" => check::<m::DataSet>(kind, index, body),
        "sections" => check::<m::Section>(kind, index, body),
        "indicatorTypes" => check::<m::IndicatorType>(kind, index, body),
        "indicators" => check::<m::Indicator>(kind, index, body),
        "constants" => check::<m::Constant>(kind, index, body),
        "validationRules" => check::<m::ValidationRule>(kind, index, body),
        "programs" => check::<m::Program>(kind, index, body),
        "programStages" => check::<m::ProgramStage>(kind, index, body),
        "userRoles" => check::<m::UserRole>(kind, index, body),
        _ => Ok(()),
    }
}

fn check_user(c: &mut Candidate, snapshot: &Snapshot) {
    let username = c
        .body
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    if username.is_empty() {
        c.errors.push(error(
            &c.kind,
            &c.uid,
            "E4000",
            "Missing required property `username`".into(),
            Some("username"),
            None,
        ));
        return;
    }
    if let Some(owner) = snapshot.user_uid_by_username(&username) {
        if owner != c.uid {
            c.errors.push(error(
                &c.kind,
                &c.uid,
                "E5003",
                format!("Property `username` with value `{username}` on object {} already exists on object {owner}", c.uid),
                Some("username"),
                Some(&username),
            ));
        }
    }
    if let Some(p) = c.body.get("password") {
        if !p.is_string() && !p.is_null() {
            c.errors.push(error(
                &c.kind,
                &c.uid,
                "E4000",
                "Property `password` must be a string".into(),
                Some("password"),
                None,
            ));
        }
    }
}

/// Org unit tree checks: a parent chain must end at a root without a cycle.
fn check_tree(candidates: &mut [Candidate], snapshot: &Snapshot) {
    let mut parent: HashMap<String, Option<String>> = snapshot
        .org_units()
        .map(|(uid, n)| (uid.clone(), n.parent.clone()))
        .collect();
    for c in candidates.iter() {
        if c.kind == "organisationUnits" && c.errors.is_empty() {
            parent.insert(
                c.uid.clone(),
                c.body
                    .get("parent")
                    .and_then(reference_id)
                    .map(str::to_string),
            );
        }
    }
    for c in candidates.iter_mut() {
        if c.kind != "organisationUnits" || !c.errors.is_empty() {
            continue;
        }
        let mut cursor = Some(c.uid.clone());
        let mut steps = 0usize;
        while let Some(uid) = cursor {
            steps += 1;
            if steps > parent.len() + 1 {
                c.errors.push(error(
                    &c.kind,
                    &c.uid,
                    "H4001",
                    format!(
                        "Organisation unit {} is its own ancestor: the parent chain has a cycle",
                        c.uid
                    ),
                    Some("parent"),
                    None,
                ));
                break;
            }
            cursor = parent.get(&uid).cloned().flatten();
        }
    }
}

/// Add the category option combos that the payload's category combos imply
/// and that neither the payload nor the store has.
fn derive_option_combos(
    bodies: &mut HashMap<String, (String, Value)>,
    snapshot: &Snapshot,
    per_kind: &mut BTreeMap<(usize, String), TypeReport>,
) {
    let lookup =
        |bodies: &HashMap<String, (String, Value)>, kind: &str, uid: &str| -> Option<Value> {
            match bodies.get(uid) {
                Some((k, b)) if k == kind => Some(b.clone()),
                _ => snapshot.get_of(kind, uid).cloned(),
            }
        };
    let refs = |v: &Value, key: &str| -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(reference_id)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    // Combos touched directly, or through one of their categories.
    let touched_categories: HashSet<&String> = bodies
        .iter()
        .filter(|(_, (k, _))| k == "categories")
        .map(|(u, _)| u)
        .collect();
    let mut combos: Vec<String> = bodies
        .iter()
        .filter(|(_, (k, _))| k == "categoryCombos")
        .map(|(u, _)| u.clone())
        .collect();
    for combo in snapshot.all_of("categoryCombos") {
        if let Some(uid) = combo.get("id").and_then(Value::as_str) {
            if refs(combo, "categories")
                .iter()
                .any(|c| touched_categories.contains(c))
                && !bodies.contains_key(uid)
            {
                combos.push(uid.to_string());
            }
        }
    }
    combos.sort();

    // Existing COCs by (combo, option set).
    let mut existing: HashSet<(String, Vec<String>)> = HashSet::new();
    let mut note = |combo: &str, coc: &Value| {
        let mut key = refs(coc, "categoryOptions");
        key.sort();
        existing.insert((combo.to_string(), key));
    };
    for coc in snapshot.all_of("categoryOptionCombos") {
        if let Some(combo) = coc.get("categoryCombo").and_then(reference_id) {
            note(combo, coc);
        }
    }
    for (k, coc) in bodies.values() {
        if k == "categoryOptionCombos" {
            if let Some(combo) = coc.get("categoryCombo").and_then(reference_id) {
                note(combo, coc);
            }
        }
    }

    let mut generated: Vec<(String, Value)> = Vec::new();
    for combo_uid in combos {
        let Some(combo) = lookup(bodies, "categoryCombos", &combo_uid) else {
            continue;
        };
        let mut cats: Vec<Vec<(String, String)>> = Vec::new();
        for cat_uid in refs(&combo, "categories") {
            let Some(cat) = lookup(bodies, "categories", &cat_uid) else {
                continue;
            };
            let options = refs(&cat, "categoryOptions")
                .into_iter()
                .map(|o| {
                    let name = lookup(bodies, "categoryOptions", &o)
                        .and_then(|b| b.get("name").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or_else(|| o.clone());
                    (o, name)
                })
                .collect();
            cats.push(options);
        }
        for combination in combinations(&cats) {
            if existing.contains(&(combo_uid.clone(), combination.key())) {
                continue;
            }
            let uid = derived_coc_uid(&combo_uid, &combination);
            if bodies.contains_key(&uid) || snapshot.get(&uid).is_some() {
                continue;
            }
            let body = serde_json::json!({
                "id": uid,
                "name": if combo_uid == defaults::CATEGORY_COMBO { "default".to_string() } else { combination.name.clone() },
                "ignoreApproval": false,
                "categoryCombo": {"id": combo_uid},
                "categoryOptions": combination.option_ids.iter().map(|o| serde_json::json!({"id": o})).collect::<Vec<_>>(),
            });
            generated.push((uid, body));
        }
    }
    if generated.is_empty() {
        return;
    }
    let entry = per_kind
        .entry((
            import_rank("categoryOptionCombos"),
            "categoryOptionCombos".into(),
        ))
        .or_insert_with(|| TypeReport {
            klass: klass("categoryOptionCombos"),
            stats: Stats::default(),
            object_reports: vec![],
        });
    for (uid, body) in generated {
        entry.stats.created += 1;
        entry.stats.total += 1;
        bodies.insert(uid, ("categoryOptionCombos".into(), body));
    }
}

/// Compute path and level for every org unit whose place changed (new ones,
/// moved ones and all their descendants), write them into the bodies and
/// return the tree rows, parents first.
fn place_org_units(
    bodies: &mut HashMap<String, (String, Value)>,
    snapshot: &Snapshot,
) -> Vec<OrgUnitWrite> {
    let mut parent: HashMap<String, Option<String>> = snapshot
        .org_units()
        .map(|(uid, n)| (uid.clone(), n.parent.clone()))
        .collect();
    for (uid, (kind, body)) in bodies.iter() {
        if kind == "organisationUnits" {
            parent.insert(
                uid.clone(),
                body.get("parent")
                    .and_then(reference_id)
                    .map(str::to_string),
            );
        }
    }
    fn path_of(
        uid: &str,
        parent: &HashMap<String, Option<String>>,
        memo: &mut HashMap<String, String>,
    ) -> String {
        if let Some(p) = memo.get(uid) {
            return p.clone();
        }
        // Cycles were rejected before planning; the depth bound is a guard.
        let mut chain = vec![uid.to_string()];
        let mut cursor = parent.get(uid).cloned().flatten();
        while let Some(p) = cursor {
            if chain.len() > parent.len() {
                break;
            }
            if let Some(known) = memo.get(&p) {
                let mut path = known.clone();
                for u in chain.iter().rev() {
                    path.push('/');
                    path.push_str(u);
                }
                memo.insert(uid.to_string(), path.clone());
                return path;
            }
            chain.push(p.clone());
            cursor = parent.get(&p).cloned().flatten();
        }
        let mut path = String::new();
        for u in chain.iter().rev() {
            path.push('/');
            path.push_str(u);
        }
        memo.insert(uid.to_string(), path.clone());
        path
    }
    let mut memo = HashMap::new();
    let mut rows = Vec::new();
    let mut all: Vec<String> = parent.keys().cloned().collect();
    all.sort();
    for uid in all {
        let path = path_of(&uid, &parent, &mut memo);
        let level = path.matches('/').count() as i32;
        let in_payload = bodies
            .get(&uid)
            .is_some_and(|(k, _)| k == "organisationUnits");
        let stored = snapshot.org_unit(&uid);
        let moved = stored.is_some_and(|n| n.path != path);
        if !in_payload && !moved {
            continue;
        }
        if !in_payload {
            // A descendant of a moved unit: rewrite its stored body too.
            if let Some(b) = snapshot.get_of("organisationUnits", &uid) {
                bodies.insert(uid.clone(), ("organisationUnits".into(), b.clone()));
            }
        }
        let Some((_, body)) = bodies.get_mut(&uid) else {
            continue;
        };
        if let Value::Object(map) = body {
            map.insert("path".into(), Value::String(path.clone()));
            map.insert("level".into(), Value::from(level));
        }
        rows.push(OrgUnitWrite {
            uid: uid.clone(),
            parent_uid: parent.get(&uid).cloned().flatten(),
            path,
            level,
            opening_date: body
                .get("openingDate")
                .and_then(Value::as_str)
                .and_then(parse_date),
            closed_date: body
                .get("closedDate")
                .and_then(Value::as_str)
                .and_then(parse_date),
        });
    }
    rows.sort_by(|a, b| a.level.cmp(&b.level).then(a.uid.cmp(&b.uid)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn with_defaults() -> Snapshot {
        let plan = plan(
            &Snapshot::default(),
            defaults::payload(),
            ImportParams::default(),
            now(),
            &|p| p.to_string(),
        )
        .unwrap();
        assert_eq!(plan.report.status, Status::Ok, "{:?}", plan.report);
        Snapshot::build(
            1,
            plan.change
                .upserts
                .into_iter()
                .enumerate()
                .map(|(i, o)| crate::store::StoredObject {
                    id: i as i64 + 1,
                    uid: o.uid,
                    kind: o.kind,
                    body: o.body,
                })
                .collect(),
        )
    }

    #[test]
    fn defaults_import_cleanly() {
        let snap = with_defaults();
        assert!(snap
            .get_of("categoryOptionCombos", defaults::CATEGORY_OPTION_COMBO)
            .is_some());
        assert_eq!(snap.count_of("categoryOptionCombos"), 1);
    }

    #[test]
    fn derives_missing_option_combos() {
        let snap = with_defaults();
        let payload = json!({
            "categoryOptions": [{"id": "OptMale0001", "name": "Male"}, {"id": "OptFemale01", "name": "Female"}],
            "categories": [{"id": "CatSex00001", "name": "Sex", "dataDimensionType": "DISAGGREGATION",
                "categoryOptions": [{"id": "OptMale0001"}, {"id": "OptFemale01"}]}],
            "categoryCombos": [{"id": "ComboSex001", "name": "Sex", "dataDimensionType": "DISAGGREGATION",
                "categories": [{"id": "CatSex00001"}]}],
            "categoryOptionCombos": [{"id": "CocMale0001", "name": "Male",
                "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptMale0001"}]}]
        });
        let p = plan(&snap, payload, ImportParams::default(), now(), &|p| {
            p.into()
        })
        .unwrap();
        assert_eq!(p.report.status, Status::Ok);
        let cocs: Vec<_> = p
            .change
            .upserts
            .iter()
            .filter(|o| o.kind == "categoryOptionCombos")
            .collect();
        assert_eq!(cocs.len(), 2, "the given one kept, the missing one derived");
        assert!(cocs.iter().any(|o| o.uid == "CocMale0001"));
        assert!(cocs.iter().any(|o| o.name.as_deref() == Some("Female")));
    }

    #[test]
    fn unresolved_reference_writes_nothing() {
        let snap = with_defaults();
        let payload = json!({"dataElements": [{"id": "DeTest00001", "name": "x", "shortName": "x",
            "valueType": "NUMBER", "domainType": "AGGREGATE", "aggregationType": "SUM",
            "categoryCombo": {"id": "MissingCc01"}}],
            "indicatorTypes": [{"id": "ItPercent01", "name": "Percent", "factor": 100}]});
        let p = plan(&snap, payload, ImportParams::default(), now(), &|p| {
            p.into()
        })
        .unwrap();
        assert_eq!(p.report.status, Status::Error);
        assert!(p.change.upserts.is_empty());
        let e = p.report.errors().next().unwrap();
        assert_eq!(e.error_code, "E5002");
        assert_eq!(p.report.stats.ignored, 2);
    }

    #[test]
    fn atomic_none_keeps_the_valid_objects() {
        let snap = with_defaults();
        let payload = json!({"dataElements": [{"id": "DeTest00001", "name": "x", "shortName": "x",
            "valueType": "NUMBER", "domainType": "AGGREGATE", "aggregationType": "SUM",
            "categoryCombo": {"id": "MissingCc01"}}],
            "indicatorTypes": [{"id": "ItPercent01", "name": "Percent", "factor": 100}]});
        let params = ImportParams {
            atomic: AtomicMode::None,
            ..ImportParams::default()
        };
        let p = plan(&snap, payload, params, now(), &|p| p.into()).unwrap();
        assert_eq!(p.change.upserts.len(), 1);
        assert_eq!(p.change.upserts[0].uid, "ItPercent01");
    }

    #[test]
    fn org_unit_paths_and_cycles() {
        let snap = with_defaults();
        let payload = json!({"organisationUnits": [
            {"id": "OuChild0001", "name": "Child", "shortName": "C", "openingDate": "2000-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuRoot00001", "name": "Root", "shortName": "R", "openingDate": "2000-01-01"}
        ]});
        let p = plan(&snap, payload, ImportParams::default(), now(), &|p| {
            p.into()
        })
        .unwrap();
        assert_eq!(p.report.status, Status::Ok);
        assert_eq!(p.change.org_units[0].uid, "OuRoot00001");
        assert_eq!(p.change.org_units[1].path, "/OuRoot00001/OuChild0001");
        assert_eq!(p.change.org_units[1].level, 2);

        let cyclic = json!({"organisationUnits": [
            {"id": "OuA00000001", "name": "A", "shortName": "A", "openingDate": "2000-01-01", "parent": {"id": "OuB00000001"}},
            {"id": "OuB00000001", "name": "B", "shortName": "B", "openingDate": "2000-01-01", "parent": {"id": "OuA00000001"}}
        ]});
        let p = plan(&snap, cyclic, ImportParams::default(), now(), &|p| p.into()).unwrap();
        assert_eq!(p.report.status, Status::Error);
        assert!(p.report.errors().any(|e| e.error_code == "H4001"));
        assert!(p.change.upserts.is_empty());
    }

    #[test]
    fn invalid_and_duplicate_uids() {
        let snap = with_defaults();
        let payload = json!({"constants": [
            {"id": "bad", "name": "a", "value": 1},
            {"id": "Const000001", "name": "b", "value": 1},
            {"id": "Const000001", "name": "c", "value": 2}
        ]});
        let p = plan(&snap, payload, ImportParams::default(), now(), &|p| {
            p.into()
        })
        .unwrap();
        let codes: Vec<_> = p.report.errors().map(|e| e.error_code.as_str()).collect();
        assert_eq!(codes, ["E4014", "E5005"]);
    }

    #[test]
    fn wrong_types_reject_the_payload() {
        let snap = with_defaults();
        let payload =
            json!({"dataSets": [{"id": "DataSet0001", "name": "x", "periodType": "Fortnightly"}]});
        assert!(matches!(
            plan(&snap, payload, ImportParams::default(), now(), &|p| p
                .into()),
            Err(PayloadError::WrongType { .. })
        ));
        assert!(matches!(
            plan(&snap, json!([1]), ImportParams::default(), now(), &|p| p
                .into()),
            Err(PayloadError::NotAnObject)
        ));
    }

    #[test]
    fn users_get_hashed_passwords_and_unique_usernames() {
        let snap = with_defaults();
        let payload = json!({"users": [
            {"id": "UserA000001", "username": "amina", "password": "secret", "firstName": "A", "surname": "B"},
            {"id": "UserB000001", "userCredentials": {"username": "baraka", "password": "pw"}, "firstName": "B", "surname": "C"}
        ]});
        let p = plan(&snap, payload, ImportParams::default(), now(), &|p| {
            format!("hash:{p}")
        })
        .unwrap();
        assert_eq!(p.report.status, Status::Ok);
        assert_eq!(p.change.credentials.len(), 2);
        assert!(p
            .change
            .credentials
            .iter()
            .any(|c| c.username == "baraka" && c.password_hash.as_deref() == Some("hash:pw")));
        assert!(p
            .change
            .upserts
            .iter()
            .all(|o| o.body.get("password").is_none()));
    }

    #[test]
    fn a_users_missing_role_is_dropped_with_a_warning() {
        let snap = with_defaults();
        let payload = json!({"users": [{"id": "UserA000001", "username": "owner",
            "userRoles": [{"id": "NoSuchRole1"}], "firstName": "P", "surname": "A"}]});
        let p = plan(&snap, payload, ImportParams::default(), now(), &|p| {
            p.into()
        })
        .unwrap();
        assert_eq!(p.report.status, Status::Warning);
        assert_eq!(p.change.upserts.len(), 1);
        assert_eq!(p.change.upserts[0].body["userRoles"], json!([]));
        assert_eq!(p.report.errors().next().unwrap().error_code, "E5002");
    }
}
