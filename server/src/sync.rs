//! Device sync (`docs/sync-protocol.md`): enrolment, device authentication,
//! effective policies, the metadata package a user's assignment needs,
//! submissions applied exactly once, forms sent down, revoke and wipe.
//!
//! The phone's side is `hisa-app`'s sync client; both speak the types in
//! `hisa_shared::sync`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use hisa_shared::authority;
use hisa_shared::period::Period;
use hisa_shared::sync::*;
use hisa_sms_gateway::directory::{
    ApplyReport, EventSubmission as StoredEvent, FormSubmission as StoredFormSubmission,
    FormValue as StoredFormValue, Rejection,
};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::{sha256_hex, Caller};
use crate::data::Channel;
use crate::error::{ServerError, ServerResult};
use crate::metadata::import::format_timestamp;
use crate::metadata::Snapshot;
use crate::sms::{prepare_form, store_event, PreparedForm};
use crate::state::Services;
use crate::store::{
    Claim, CompletionQuery, DataTx, DeviceAudit, DeviceRecord, DeviceWrite, PeriodIds, StoreError,
    SubmissionClaim, ValueQuery, WriteBehindTx,
};

/// Most submissions in one upload: a month's forms and events of a busy
/// health worker, and a bound on one request's work.
pub const MAX_BATCH: usize = 500;

/// A phone's clock this far ahead of the server's marks its submissions.
const CLOCK_TOLERANCE_MS: i64 = 5 * 60_000;

pub fn now_ms() -> i64 {
    hisa_sms_gateway::service::now_ms()
}

pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Authentication
// ------------------------------------------------------------------------------------------------

/// An authenticated phone: its record, its user as a caller, the metadata it was served under.
pub struct DeviceSession {
    pub device: DeviceRecord,
    pub caller: Caller,
    pub snap: Arc<Snapshot>,
}

/// Check `Authorization: Device <id>:<secret>`. A revoked device, a wiped
/// one, or one whose user is disabled or gone gets nothing (401).
pub async fn authenticate(svc: &Services, header: Option<&str>) -> ServerResult<DeviceSession> {
    let (uid, secret) = header
        .and_then(parse_authorization)
        .ok_or(ServerError::Unauthorized)?;
    let login = svc.store.devices().device_login(uid).await?;
    let given = sha256_hex(secret);
    let matches = login
        .as_ref()
        .is_some_and(|l| constant_eq(l.secret_hash.as_bytes(), given.as_bytes()));
    let Some(login) = login.filter(|_| matches) else {
        tracing::warn!(device = %uid, "device authentication failed");
        return Err(ServerError::Unauthorized);
    };
    let device = login.device;
    if device.revoked_at.is_some() {
        tracing::warn!(device = %uid, "revoked device refused");
        return Err(ServerError::Unauthorized);
    }
    if !login.user_active {
        return Err(ServerError::Unauthorized);
    }
    let snap = svc.metadata.snapshot().await?;
    let caller = Caller::from_user(&snap, &device.user_uid).ok_or(ServerError::Unauthorized)?;
    Ok(DeviceSession {
        device,
        caller,
        snap,
    })
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ------------------------------------------------------------------------------------------------
// Policies
// ------------------------------------------------------------------------------------------------

pub const SCOPES: &[&str] = &["DEFAULT", "ROLE", "ORG_UNIT", "DEVICE"];

/// Where each layer of an effective policy came from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectivePolicy {
    pub policy: DevicePolicy,
    pub version: String,
    /// Policy uids in precedence order (device, org unit, role, default).
    pub sources: Vec<Value>,
}

/// Precedence, field by field: the device's own policy, then the policy of
/// the nearest org unit above (or at) the user's org units, then the first
/// of the user's roles that has one, then the DEFAULT policy, then Hisa's
/// defaults.
pub async fn effective_policy(
    svc: &Services,
    snap: &Snapshot,
    device: Option<&str>,
    user: &str,
) -> ServerResult<EffectivePolicy> {
    let policies = svc.store.devices().policies().await?;
    let find = |scope: &str, target: &str| {
        policies
            .iter()
            .find(|p| p.scope == scope && p.target == target)
    };
    let mut layers = Vec::new();
    if let Some(d) = device {
        layers.extend(find("DEVICE", d));
    }
    let body = snap.get_of("users", user).cloned().unwrap_or(Value::Null);
    let refs = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The deepest org unit with a policy, over all of the user's units.
    let mut best: Option<(usize, &crate::store::PolicyRecord)> = None;
    for ou in refs("organisationUnits") {
        if let Some(node) = snap.org_unit(&ou) {
            let chain: Vec<&str> = node.path.split('/').filter(|s| !s.is_empty()).collect();
            for (depth, uid) in chain.iter().enumerate().rev() {
                if let Some(p) = find("ORG_UNIT", uid) {
                    if best.is_none_or(|(d, _)| depth > d) {
                        best = Some((depth, p));
                    }
                    break;
                }
            }
        }
    }
    layers.extend(best.map(|(_, p)| p));
    layers.extend(refs("userRoles").iter().find_map(|r| find("ROLE", r)));
    layers.extend(find("DEFAULT", ""));
    let mut rules = PolicyRules::default();
    let mut sources = Vec::new();
    for layer in &layers {
        let parsed: PolicyRules = serde_json::from_str(&layer.rules)
            .map_err(|e| ServerError::Internal(format!("policy {}: {e}", layer.uid)))?;
        rules = rules.over(&parsed);
        sources.push(json!({"id": layer.uid, "name": layer.name, "scope": layer.scope}));
    }
    let policy = rules.resolve();
    let version = short_hash(&serde_json::to_vec(&policy).unwrap_or_default());
    Ok(EffectivePolicy {
        policy,
        version,
        sources,
    })
}

/// Package versions by (metadata version, user): every answer carries the
/// user's current version, and building the package to hash it costs more
/// than the upload it answers.
#[derive(Default)]
pub struct PackageVersions {
    cache: std::sync::Mutex<(i64, HashMap<String, String>)>,
}

impl PackageVersions {
    pub fn version(&self, snap: &Snapshot, caller: &Caller) -> String {
        if let Ok(cache) = self.cache.lock() {
            if cache.0 == snap.version {
                if let Some(v) = cache.1.get(&caller.user_uid) {
                    return v.clone();
                }
            }
        }
        let version = build_package(snap, caller, None).version;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.0 != snap.version {
                *cache = (snap.version, HashMap::new());
            }
            cache.1.insert(caller.user_uid.clone(), version.clone());
        }
        version
    }
}

pub async fn instructions(svc: &Services, session: &DeviceSession) -> ServerResult<Instructions> {
    let effective = effective_policy(
        svc,
        &session.snap,
        Some(&session.device.uid),
        &session.device.user_uid,
    )
    .await?;
    let metadata_version = svc.sync_versions.version(&session.snap, &session.caller);
    Ok(Instructions {
        server_time: rfc3339(now_ms()),
        policy: effective.policy,
        policy_version: effective.version,
        metadata_version,
        wipe: session.device.wipe_requested_at.is_some(),
    })
}

// ------------------------------------------------------------------------------------------------
// Enrolment
// ------------------------------------------------------------------------------------------------

fn audit(device: &str, action: &str, by: Option<&str>, detail: Option<String>) -> DeviceAudit {
    DeviceAudit {
        device: device.to_string(),
        action: action.to_string(),
        by_user: by.map(str::to_string),
        at: now_ms(),
        detail,
    }
}

/// Enrol a phone for `caller` (signed in, by password or by a code).
pub async fn enrol_device(
    svc: &Services,
    caller: &Caller,
    info: DeviceInfo,
) -> ServerResult<Enrolment> {
    if caller.user_uid.is_empty() {
        return Err(ServerError::BadRequest(
            "Only a user can enrol a device".into(),
        ));
    }
    caller.require_any(&[
        authority::MOBILE_SYNC,
        authority::MOBILE_SMS,
        authority::DATAVALUE_ADD,
    ])?;
    let clip = |s: Option<String>| s.map(|s| s.chars().take(200).collect::<String>());
    // OsRng, not thread_rng: the handler's future must be Send.
    let mut rng = rand::rngs::OsRng;
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let mut sms_key = [0u8; 32];
    rng.fill_bytes(&mut sms_key);
    let secret_text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let uid = hisa_shared::Uid::generate().to_string();
    let registry = svc.store.devices();
    // Key ids are random, so one cannot guess another device's from one's own.
    let mut created = None;
    for _ in 0..8 {
        let sms_key_id = rng.next_u32() & 0x7fff_ffff;
        if sms_key_id == 0 {
            continue;
        }
        let write = DeviceWrite {
            uid: uid.clone(),
            user_uid: caller.user_uid.clone(),
            name: clip(info.name.clone()),
            model: clip(info.model.clone()),
            app_version: clip(info.app_version.clone()),
            secret_hash: sha256_hex(&secret_text),
            sms_key_id,
            sms_key: sms_key.to_vec(),
            enrolled_at: now_ms(),
        };
        match registry.create_device(&write).await {
            Ok(()) => {
                created = Some(sms_key_id);
                break;
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let sms_key_id =
        created.ok_or_else(|| ServerError::Internal("could not pick a free SMS key id".into()))?;
    registry
        .audit_device(&audit(
            &uid,
            "ENROL",
            Some(&caller.username),
            info.model.clone(),
        ))
        .await?;
    tracing::info!(device = %uid, user = %caller.username, "device enrolled");
    let snap = svc.metadata.snapshot().await?;
    let effective = effective_policy(svc, &snap, Some(&uid), &caller.user_uid).await?;
    if effective.policy.revoke_previous_on_enrol {
        for old in registry
            .revoke_user_devices(&caller.user_uid, &uid, now_ms())
            .await?
        {
            registry
                .audit_device(&audit(
                    &old,
                    "REVOKE",
                    Some(&caller.username),
                    Some(format!("replaced by {uid}")),
                ))
                .await?;
        }
    }
    let session = DeviceSession {
        device: registry
            .device(&uid)
            .await?
            .ok_or_else(|| ServerError::Internal("enrolled device vanished".into()))?,
        caller: caller.clone(),
        snap,
    };
    Ok(Enrolment {
        protocol_version: PROTOCOL_VERSION,
        device: uid,
        user: caller.user_uid.clone(),
        username: caller.username.clone(),
        secret: secret_text,
        sms_key_id,
        sms_key: base64::engine::general_purpose::STANDARD.encode(sms_key),
        instructions: instructions(svc, &session).await?,
    })
}

/// `POST /api/sync/v1/enrol`: with a username and password, or a code.
pub async fn enrol(svc: &Services, request: EnrolRequest) -> ServerResult<Enrolment> {
    let user = match (&request.code, &request.username, &request.password) {
        (Some(code), _, _) => {
            let hash = sha256_hex(&normalize_code(code));
            svc.store
                .devices()
                .use_enrolment_code(&hash, now_ms())
                .await?
                .ok_or_else(|| {
                    tracing::warn!("unknown, used or expired enrolment code");
                    ServerError::Unauthorized
                })?
        }
        (None, Some(username), Some(password)) => {
            crate::auth::check_password(svc, username, password).await?
        }
        _ => {
            return Err(ServerError::BadRequest(
                "Enrol with `username` and `password`, or with `code`".into(),
            ))
        }
    };
    let snap = svc.metadata.snapshot().await?;
    let caller = Caller::from_user(&snap, &user).ok_or(ServerError::Unauthorized)?;
    enrol_device(svc, &caller, request.device).await
}

/// Codes are typed from paper: case, spaces and dashes do not matter.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A one-time enrolment code for `user`, made by an admin. Returns the code
/// as printed (`ABCD-EFGH-JKMN`), and when it expires.
pub async fn create_enrolment_code(
    svc: &Services,
    caller: &Caller,
    user: &str,
    hours: i64,
) -> ServerResult<(String, i64)> {
    caller.require_any(&[authority::MOBILE_SETTINGS, authority::USER_ADD])?;
    let snap = svc.metadata.snapshot().await?;
    let target = Caller::from_user(&snap, user)
        .ok_or_else(|| ServerError::NotFound(format!("No user with id {user}")))?;
    // A user manager may make codes only for users inside their own subtrees.
    if !caller.is_superuser()
        && !target
            .capture_roots
            .iter()
            .all(|ou| caller.can_capture(&snap, ou))
    {
        return Err(ServerError::Forbidden(format!(
            "User {user} is outside your org units"
        )));
    }
    if !(1..=24 * 30).contains(&hours) {
        return Err(ServerError::BadRequest(
            "expiresInHours must be 1 to 720".into(),
        ));
    }
    // No 0/O or 1/I/L: read aloud and typed from paper.
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let mut bytes = [0u8; 12];
    rng.fill_bytes(&mut bytes);
    let raw: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    let code = format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12]);
    let now = now_ms();
    let expires = now + hours * 3_600_000;
    svc.store
        .devices()
        .create_enrolment_code(
            &sha256_hex(&normalize_code(&code)),
            user,
            &caller.username,
            now,
            expires,
        )
        .await?;
    tracing::info!(user, by = %caller.username, "enrolment code made");
    Ok((code, expires))
}

// ------------------------------------------------------------------------------------------------
// Metadata package
// ------------------------------------------------------------------------------------------------

fn pick(obj: &Value, keys: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for k in keys {
        if let Some(v) = obj.get(*k) {
            if !v.is_null() {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn ref_ids(obj: &Value, key: &str) -> Vec<String> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn ref_id(obj: &Value, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// UIDs inside `#{…}` items of an expression.
fn expression_elements(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("#{") {
        rest = &rest[i + 2..];
        let end = rest.find('}').unwrap_or(rest.len());
        if let Some(uid) = rest[..end].split('.').next() {
            out.push(uid.trim().to_string());
        }
        rest = &rest[end..];
    }
    out
}

const COMMON: &[&str] = &[
    "id",
    "name",
    "shortName",
    "code",
    "displayName",
    "translations",
    "lastUpdated",
];

fn keys(extra: &[&'static str]) -> Vec<&'static str> {
    COMMON.iter().chain(extra).copied().collect()
}

/// Exactly what `caller`'s assignment needs, trimmed to the fields the app
/// uses. With `since`, only objects changed after it, but always the ids of
/// everything present. The version is a hash of the full package.
pub fn build_package(snap: &Snapshot, caller: &Caller, since: Option<&str>) -> MetadataPackage {
    let mut objects: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut add = |kind: &str, obj: Value| {
        objects.entry(kind.to_string()).or_default().push(obj);
    };
    // Org units: the user's capture subtrees.
    let mut units: BTreeSet<String> = BTreeSet::new();
    for (uid, _) in snap.org_units() {
        if snap.within_any(uid, &caller.capture_roots) {
            units.insert(uid.clone());
        }
    }
    for uid in &units {
        if let (Some(obj), Some(node)) = (snap.get_of("organisationUnits", uid), snap.org_unit(uid))
        {
            let mut o = pick(obj, &keys(&["parent", "openingDate", "closedDate"]));
            o["path"] = json!(node.path);
            o["level"] = json!(node.level);
            add("organisationUnits", o);
        }
    }
    let mut elements: BTreeSet<String> = BTreeSet::new();
    let mut combos: BTreeSet<String> = BTreeSet::new();
    let mut option_sets: BTreeSet<String> = BTreeSet::new();
    let mut data_sets: Vec<String> = Vec::new();
    for ds in snap.all_of("dataSets") {
        let assigned: Vec<String> = ref_ids(ds, "organisationUnits")
            .into_iter()
            .filter(|ou| units.contains(ou))
            .collect();
        if assigned.is_empty() {
            continue;
        }
        let Some(uid) = ds.get("id").and_then(Value::as_str) else {
            continue;
        };
        data_sets.push(uid.to_string());
        let mut o = pick(
            ds,
            &keys(&[
                "periodType",
                "categoryCombo",
                "expiryDays",
                "openFuturePeriods",
                "timelyDays",
                "formType",
                "dataSetElements",
                "compulsoryFieldsCompleteOnly",
                "fieldCombinationRequired",
            ]),
        );
        o["organisationUnits"] = json!(assigned
            .iter()
            .map(|id| json!({"id": id}))
            .collect::<Vec<_>>());
        combos.extend(ref_id(ds, "categoryCombo"));
        for dse in ds
            .get("dataSetElements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            elements.extend(ref_id(dse, "dataElement"));
            combos.extend(ref_id(dse, "categoryCombo"));
        }
        add("dataSets", o);
    }
    for section in snap.all_of("sections") {
        if ref_id(section, "dataSet").is_some_and(|d| data_sets.contains(&d)) {
            add(
                "sections",
                pick(
                    section,
                    &keys(&["dataSet", "sortOrder", "dataElements", "description"]),
                ),
            );
        }
    }
    let mut programs_stages: Vec<String> = Vec::new();
    for program in snap.all_of("programs") {
        if program.get("programType").and_then(Value::as_str) != Some("WITHOUT_REGISTRATION") {
            continue;
        }
        let assigned: Vec<String> = ref_ids(program, "organisationUnits")
            .into_iter()
            .filter(|ou| units.contains(ou))
            .collect();
        if assigned.is_empty() {
            continue;
        }
        let mut o = pick(
            program,
            &keys(&["programType", "categoryCombo", "programStages"]),
        );
        o["organisationUnits"] = json!(assigned
            .iter()
            .map(|id| json!({"id": id}))
            .collect::<Vec<_>>());
        combos.extend(ref_id(program, "categoryCombo"));
        programs_stages.extend(ref_ids(program, "programStages"));
        add("programs", o);
    }
    for stage in &programs_stages {
        if let Some(s) = snap.get_of("programStages", stage) {
            for psde in s
                .get("programStageDataElements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                elements.extend(ref_id(psde, "dataElement"));
            }
            add(
                "programStages",
                pick(
                    s,
                    &keys(&["program", "programStageDataElements", "sortOrder"]),
                ),
            );
        }
    }
    for de in &elements {
        if let Some(o) = snap.get_of("dataElements", de) {
            combos.extend(ref_id(o, "categoryCombo"));
            option_sets.extend(ref_id(o, "optionSet"));
            add(
                "dataElements",
                pick(
                    o,
                    &keys(&[
                        "formName",
                        "valueType",
                        "domainType",
                        "aggregationType",
                        "zeroIsSignificant",
                        "categoryCombo",
                        "optionSet",
                        "description",
                    ]),
                ),
            );
        }
    }
    let mut categories: BTreeSet<String> = BTreeSet::new();
    for combo in &combos {
        if let Some(o) = snap.get_of("categoryCombos", combo) {
            categories.extend(ref_ids(o, "categories"));
            add(
                "categoryCombos",
                pick(o, &keys(&["dataDimensionType", "categories"])),
            );
        }
    }
    let mut options: BTreeSet<String> = BTreeSet::new();
    for cat in &categories {
        if let Some(o) = snap.get_of("categories", cat) {
            options.extend(ref_ids(o, "categoryOptions"));
            add(
                "categories",
                pick(o, &keys(&["dataDimensionType", "categoryOptions"])),
            );
        }
    }
    for opt in &options {
        if let Some(o) = snap.get_of("categoryOptions", opt) {
            add("categoryOptions", pick(o, &keys(&["startDate", "endDate"])));
        }
    }
    for coc in snap.all_of("categoryOptionCombos") {
        if ref_id(coc, "categoryCombo").is_some_and(|c| combos.contains(&c)) {
            add(
                "categoryOptionCombos",
                pick(coc, &keys(&["categoryCombo", "categoryOptions"])),
            );
        }
    }
    for set in &option_sets {
        if let Some(o) = snap.get_of("optionSets", set) {
            add("optionSets", pick(o, &keys(&["valueType", "options"])));
            for opt in ref_ids(o, "options") {
                if let Some(op) = snap.get_of("options", &opt) {
                    add("options", pick(op, &keys(&["optionSet", "sortOrder"])));
                }
            }
        }
    }
    // Rules and indicators the phone can evaluate: every element they use is here.
    let usable = |exprs: &[Option<&str>]| {
        let used: Vec<String> = exprs
            .iter()
            .flatten()
            .flat_map(|e| expression_elements(e))
            .collect();
        !used.is_empty() && used.iter().all(|uid| elements.contains(uid))
    };
    for rule in snap.all_of("validationRules") {
        let left = rule.pointer("/leftSide/expression").and_then(Value::as_str);
        let right = rule
            .pointer("/rightSide/expression")
            .and_then(Value::as_str);
        if usable(&[left, right]) {
            add(
                "validationRules",
                pick(
                    rule,
                    &keys(&[
                        "leftSide",
                        "rightSide",
                        "operator",
                        "importance",
                        "periodType",
                        "instruction",
                        "description",
                    ]),
                ),
            );
        }
    }
    let mut indicator_types: BTreeSet<String> = BTreeSet::new();
    for ind in snap.all_of("indicators") {
        let num = ind.get("numerator").and_then(Value::as_str);
        let den = ind.get("denominator").and_then(Value::as_str);
        if usable(&[num, den]) {
            indicator_types.extend(ref_id(ind, "indicatorType"));
            add(
                "indicators",
                pick(
                    ind,
                    &keys(&[
                        "numerator",
                        "denominator",
                        "indicatorType",
                        "annualized",
                        "decimals",
                    ]),
                ),
            );
        }
    }
    for t in &indicator_types {
        if let Some(o) = snap.get_of("indicatorTypes", t) {
            add("indicatorTypes", pick(o, &keys(&["factor", "number"])));
        }
    }
    for c in snap.all_of("constants") {
        add("constants", pick(c, &keys(&["value"])));
    }
    let mut present: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, list) in &mut objects {
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        present.insert(
            kind.clone(),
            list.iter()
                .filter_map(|o| o["id"].as_str().map(str::to_string))
                .collect(),
        );
    }
    let version = short_hash(&serde_json::to_vec(&objects).unwrap_or_default());
    if let Some(since) = since {
        for list in objects.values_mut() {
            list.retain(|o| {
                o.get("lastUpdated")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u > since)
            });
        }
        objects.retain(|_, list| !list.is_empty());
    }
    MetadataPackage {
        version,
        as_of: format_timestamp(OffsetDateTime::now_utc()),
        since: since.map(str::to_string),
        objects,
        present,
    }
}

// ------------------------------------------------------------------------------------------------
// Data up
// ------------------------------------------------------------------------------------------------

fn is_submission_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn result_of(
    report: &ApplyReport,
    id: &str,
    received_at: i64,
    future_dated: bool,
) -> SubmissionResult {
    let conflicts: Vec<Conflict> = report
        .conflicts
        .iter()
        .map(|c| Conflict {
            data_element: c.data_element.clone(),
            category_option_combo: c.category_option_combo.clone(),
            code: c.code.clone(),
            message: c.message.clone(),
        })
        .collect();
    let (status, message) = match &report.rejection {
        Some(r) => (SubmissionStatus::Rejected, Some(rejection_text(r))),
        None if conflicts.is_empty() => (SubmissionStatus::Accepted, None),
        None => (SubmissionStatus::AcceptedWithWarnings, None),
    };
    SubmissionResult {
        id: id.to_string(),
        status,
        duplicate: false,
        received_at: rfc3339(received_at),
        future_dated,
        message,
        conflicts,
    }
}

fn rejection_text(r: &Rejection) -> String {
    match r {
        Rejection::UnknownDataSet => "The data set does not exist".into(),
        Rejection::UnknownProgram => "The program does not exist".into(),
        Rejection::InvalidPeriod(p) => format!("Period `{p}` is not valid for this data set"),
        Rejection::UnknownAttributeOptionCombo => {
            "The attribute option combo is not valid for this data set".into()
        }
        Rejection::OrgUnitNotAssigned => {
            "The org unit does not report this data set or program".into()
        }
        Rejection::OrgUnitOutsideScope => "The org unit is outside the user's org units".into(),
        Rejection::PeriodLocked(p) => format!("Period `{p}` is closed for data entry"),
        Rejection::NotAuthorised(m) => m.clone(),
        Rejection::ValuesRefused => "No value could be stored".into(),
        Rejection::Other(m) => m.clone(),
    }
}

fn rejected(id: &str, received_at: i64, message: String) -> SubmissionResult {
    SubmissionResult {
        id: id.to_string(),
        status: SubmissionStatus::Rejected,
        duplicate: false,
        received_at: rfc3339(received_at),
        future_dated: false,
        message: Some(message),
        conflicts: Vec::new(),
    }
}

/// The answer to a submission id seen before: its stored result, or
/// `IN_PROGRESS` while another request applies it.
fn answer_existing(
    id: &str,
    status: &str,
    result: Option<String>,
    received_at: i64,
    future_dated: bool,
) -> SubmissionResult {
    let stored = result.and_then(|r| serde_json::from_str::<SubmissionResult>(&r).ok());
    match stored {
        Some(mut r) if status != "IN_PROGRESS" => {
            r.duplicate = true;
            r
        }
        _ => SubmissionResult {
            id: id.to_string(),
            status: SubmissionStatus::InProgress,
            duplicate: true,
            received_at: rfc3339(received_at),
            future_dated,
            message: Some("Being applied by another request; ask again".into()),
            conflicts: Vec::new(),
        },
    }
}

fn status_text(status: SubmissionStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One form of an upload: checked, its claim ready, its writes waiting.
struct FormWrite {
    /// Its place among the upload's results.
    index: usize,
    claim: SubmissionClaim,
    form: PreparedForm,
}

/// The device's contact, recorded with an upload's last write.
#[derive(Clone)]
struct DeviceTouch {
    device: String,
    skew: Option<i64>,
    /// What the phone holds before the results of this write are counted.
    pending: i64,
}

/// Consecutive forms of one upload, written with their claims and results
/// (and the device's touch) in one transaction.
pub struct UploadWrite {
    forms: Vec<FormWrite>,
    stale_before: i64,
    touch: Option<DeviceTouch>,
}

impl UploadWrite {
    /// A copy to write again should the first attempt's transaction be lost.
    fn duplicate(&self) -> Option<UploadWrite> {
        let forms = self
            .forms
            .iter()
            .map(|f| {
                Some(FormWrite {
                    index: f.index,
                    claim: f.claim.clone(),
                    form: f.form.duplicate()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(UploadWrite {
            forms,
            stale_before: self.stale_before,
            touch: self.touch.clone(),
        })
    }

    fn claim_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.forms.iter().map(|f| f.claim.id.clone())
    }
}

type WriteResults = ServerResult<Vec<(usize, SubmissionResult)>>;

/// Savepoint of one submission inside a write: its failure undoes it alone.
const SUBMISSION_SAVEPOINT: &str = "hisa_submission";

fn held(slot: &mut Option<Box<dyn DataTx>>) -> ServerResult<&mut Box<dyn DataTx>> {
    slot.as_mut()
        .ok_or_else(|| ServerError::Internal("the upload's transaction was lost".into()))
}

/// Apply and record each form, each under its own savepoint; then the
/// touch. A form that fails is undone and ends the write with its error;
/// the forms before it stay, as they would had each committed alone.
async fn write_forms(slot: &mut Option<Box<dyn DataTx>>, write: UploadWrite) -> WriteResults {
    let mut out = Vec::with_capacity(write.forms.len());
    for form in write.forms {
        held(slot)?.savepoint(SUBMISSION_SAVEPOINT).await?;
        match write_form(slot, form, write.stale_before).await {
            Ok(r) => {
                held(slot)?.release(SUBMISSION_SAVEPOINT).await?;
                out.push(r);
            }
            Err(e) => {
                held(slot)?.rollback_to(SUBMISSION_SAVEPOINT).await?;
                return Err(e);
            }
        }
    }
    if let Some(touch) = write.touch {
        let settled = out.iter().filter(|(_, r)| r.status.is_final()).count();
        let left = touch.pending.saturating_sub(settled as i64).max(0);
        held(slot)?
            .touch_device(&touch.device, now_ms(), None, Some(left), touch.skew)
            .await?;
    }
    Ok(out)
}

/// Apply a form, then claim its id with the result in one statement: a
/// duplicate is rare, and then what was applied is undone. Exactly once
/// all the same, as the form and its claim commit together or not at all.
async fn write_form(
    slot: &mut Option<Box<dyn DataTx>>,
    write: FormWrite,
    stale_before: i64,
) -> ServerResult<(usize, SubmissionResult)> {
    let FormWrite { index, claim, form } = write;
    let report = form.apply_in(slot).await?;
    let result = result_of(&report, &claim.id, claim.received_at, claim.future_dated);
    let recorded = held(slot)?
        .record_submission(
            &claim,
            &status_text(result.status),
            &serde_json::to_string(&result).unwrap_or_default(),
            stale_before,
        )
        .await?;
    if recorded {
        return Ok((index, result));
    }
    let tx = held(slot)?;
    tx.rollback_to(SUBMISSION_SAVEPOINT).await?;
    // Balanced by `write_forms`' release.
    tx.savepoint(SUBMISSION_SAVEPOINT).await?;
    match tx.submission(&claim.id).await? {
        Some(Claim::Existing {
            status,
            result,
            received_at,
        }) => Ok((
            index,
            answer_existing(&claim.id, &status, result, received_at, claim.future_dated),
        )),
        _ => Err(ServerError::Internal(format!(
            "submission {} was claimed and then vanished",
            claim.id
        ))),
    }
}

/// Most uploads one SQLite transaction takes in.
const GROUP_MAX: usize = 256;

/// Writer lanes on PostgreSQL.
const POSTGRES_LANES: usize = 2;

struct Queued {
    write: UploadWrite,
    reply: tokio::sync::oneshot::Sender<WriteResults>,
}

/// Writes uploads' forms. A lane is a thread that takes every upload
/// waiting for it and writes them in one [`WriteBehindTx`], so one commit
/// and a handful of multi-row statements serve them all (group commit).
/// SQLite has one writer, so one lane: a commit per upload made it the
/// bottleneck. PostgreSQL takes two: with one, the lane's round trips left
/// the database's other core idle (517–583 submissions/s against 761–900
/// with two in the sync bench). Should two lanes' groups collide on a
/// claim, the losing group has written nothing and its uploads are written
/// again alone. Instances over one PostgreSQL each have their own lanes.
pub struct UploadWriter {
    store: Arc<dyn crate::store::Store>,
    periods: PeriodIds,
    lanes: Vec<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Queued>>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl UploadWriter {
    pub fn new(store: Arc<dyn crate::store::Store>) -> UploadWriter {
        let lanes = match store.backend() {
            crate::store::Backend::Sqlite => 1,
            crate::store::Backend::Postgres => POSTGRES_LANES,
        };
        UploadWriter {
            store,
            periods: PeriodIds::default(),
            lanes: (0..lanes).map(|_| std::sync::Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    async fn write(&self, write: UploadWrite) -> WriteResults {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lane = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.lanes.len();
        self.sender(lane)?
            .send(Queued { write, reply })
            .map_err(|_| ServerError::Internal("the upload writer stopped".into()))?;
        answer
            .await
            .map_err(|_| ServerError::Internal("the upload writer dropped a write".into()))?
    }

    /// A lane's queue, its thread started at the lane's first write and
    /// again should it have died.
    fn sender(&self, lane: usize) -> ServerResult<tokio::sync::mpsc::UnboundedSender<Queued>> {
        let mut queue = self.lanes[lane]
            .lock()
            .map_err(|_| ServerError::Internal("the upload writer's lock is poisoned".into()))?;
        if let Some(sender) = queue.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let store = self.store.clone();
        let periods = self.periods.clone();
        // A thread of its own: the writer is a chain of statements, and on
        // the requests' runtime each of its wake-ups queued behind every
        // request task ready to run.
        std::thread::Builder::new()
            .name(format!("hisa-upload-writer-{lane}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(write_groups(store, periods, receiver)),
                    Err(e) => tracing::error!(error = %e, "the upload writer could not start"),
                }
            })
            .map_err(|e| {
                ServerError::Internal(format!("could not start the upload writer: {e}"))
            })?;
        *queue = Some(sender.clone());
        Ok(sender)
    }
}

/// Write uploads in one transaction whose writes wait in memory until
/// commit ([`WriteBehindTx`]): reads are the only statements before it.
/// An error means nothing was written; the uploads' answers are each
/// upload's own outcome.
async fn write_held(
    store: &dyn crate::store::Store,
    periods: &PeriodIds,
    writes: Vec<UploadWrite>,
) -> ServerResult<Vec<WriteResults>> {
    let mut held = WriteBehindTx::new(store.begin_data().await?, periods.clone());
    let ids: Vec<String> = writes.iter().flat_map(UploadWrite::claim_ids).collect();
    held.read_claims(&ids).await?;
    let keys = writes
        .iter()
        .flat_map(|w| w.forms.iter().flat_map(|f| f.form.value_keys()))
        .collect();
    held.read_values(keys).await?;
    let mut slot: Option<Box<dyn DataTx>> = Some(Box::new(held));
    let mut answers = Vec::with_capacity(writes.len());
    for write in writes {
        answers.push(write_forms(&mut slot, write).await);
    }
    slot.take()
        .ok_or_else(|| ServerError::Internal("the upload's transaction was lost".into()))?
        .commit()
        .await?;
    Ok(answers)
}

/// The slow way, after a held write failed: a transaction of its own,
/// each form under a savepoint of the database, so one form's failure is
/// its own and an id recorded meanwhile by another request is seen.
async fn write_again(store: &dyn crate::store::Store, write: Option<UploadWrite>) -> WriteResults {
    let write = write
        .ok_or_else(|| ServerError::Internal("the upload could not be written again".into()))?;
    let mut slot = Some(store.begin_data().await?);
    let written = write_forms(&mut slot, write).await;
    if let Some(tx) = slot.take() {
        tx.commit().await?;
    }
    written
}

/// The writer's loop: everything queued, one transaction, one commit;
/// should that fail, each upload again in its own.
async fn write_groups(
    store: Arc<dyn crate::store::Store>,
    periods: PeriodIds,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Queued>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let spares: Vec<Option<UploadWrite>> = group.iter().map(|q| q.write.duplicate()).collect();
        let (replies, writes): (Vec<_>, Vec<_>) =
            group.into_iter().map(|q| (q.reply, q.write)).unzip();
        match write_held(&*store, &periods, writes).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The request may be gone (its link cut); the phone will ask again.
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, uploads = replies.len(), "upload group not committed; writing each upload alone");
                for (reply, spare) in replies.into_iter().zip(spares) {
                    let _ = reply.send(write_again(&*store, spare).await);
                }
            }
        }
    }
}

/// Apply each submission once. A repeated id gets its stored result; an id
/// another request is applying gets `IN_PROGRESS`; the rest are applied
/// each under its own savepoint, so one bad form never holds back another.
/// A form's claim, writes and result commit together; events are applied
/// one by one, between claim and result.
pub async fn upload(
    svc: &Services,
    session: &DeviceSession,
    request: UploadRequest,
) -> ServerResult<UploadResponse> {
    if request.submissions.len() > MAX_BATCH {
        return Err(ServerError::BadRequest(format!(
            "At most {MAX_BATCH} submissions per upload; send the rest in the next one"
        )));
    }
    let registry = svc.store.devices();
    let now = now_ms();
    let stale_before = now - svc.config.sync_claim_stale_ms;
    let skew = parse_rfc3339_ms(&request.device_time).map(|t| t - now);
    let today = OffsetDateTime::now_utc().date();
    let mut results: Vec<Option<SubmissionResult>> = vec![None; request.submissions.len()];
    // Forms wait here until an event or the end of the upload.
    let mut forms: Vec<FormWrite> = Vec::new();
    for (index, submission) in request.submissions.into_iter().enumerate() {
        let id = submission.id.trim().to_string();
        if !is_submission_id(&id) {
            results[index] = Some(rejected(
                &id,
                now,
                "The submission id must be 8 to 64 letters, digits or dashes (a UUID)".into(),
            ));
            continue;
        }
        if session.device.wipe_requested_at.is_some() {
            results[index] = Some(rejected(
                &id,
                now,
                "This device is being wiped; nothing is accepted from it".into(),
            ));
            continue;
        }
        let captured_ahead = submission
            .captured_at
            .as_deref()
            .and_then(parse_rfc3339_ms)
            .is_some_and(|t| t > now + CLOCK_TOLERANCE_MS);
        let (kind, dated_ahead) = match &submission.body {
            SubmissionBody::Form(f) => (
                "form",
                Period::parse(&f.period).is_ok_and(|p| p.start_date() > today),
            ),
            SubmissionBody::Event(e) => (
                "event",
                hisa_shared::metadata::parse_date(&e.occurred_at).is_some_and(|d| d > today),
            ),
        };
        let future_dated = captured_ahead || dated_ahead;
        let claim = SubmissionClaim {
            id: id.clone(),
            device: session.device.uid.clone(),
            user: session.device.user_uid.clone(),
            kind: kind.to_string(),
            received_at: now,
            device_time: Some(request.device_time.clone()),
            captured_at: submission.captured_at.clone(),
            future_dated,
        };
        match submission.body {
            SubmissionBody::Form(f) => {
                let form = StoredFormSubmission {
                    data_set: f.data_set,
                    period: f.period,
                    org_unit: f.org_unit,
                    attribute_option_combo: f.attribute_option_combo,
                    complete: f.complete,
                    atomic: false,
                    values: f
                        .values
                        .into_iter()
                        .map(|v| StoredFormValue {
                            data_element: v.data_element,
                            category_option_combo: v.category_option_combo,
                            value: v.value,
                            comment: v.comment,
                        })
                        .collect(),
                };
                // Checked here, in the request's task: the writer only writes.
                let form = prepare_form(
                    svc,
                    session.snap.clone(),
                    &session.device.user_uid,
                    form,
                    Channel::App,
                    Some(session.device.uid.clone()),
                )
                .await?;
                forms.push(FormWrite { index, claim, form });
            }
            SubmissionBody::Event(e) => {
                if !forms.is_empty() {
                    let write = UploadWrite {
                        forms: std::mem::take(&mut forms),
                        stale_before,
                        touch: None,
                    };
                    for (i, r) in svc.upload_writer.write(write).await? {
                        results[i] = Some(r);
                    }
                }
                let claimed = registry.claim_submission(&claim, stale_before).await?;
                if let Claim::Existing {
                    status,
                    result,
                    received_at,
                } = claimed
                {
                    results[index] = Some(answer_existing(
                        &id,
                        &status,
                        result,
                        received_at,
                        future_dated,
                    ));
                    continue;
                }
                let result = if !hisa_shared::Uid::is_valid(&e.event) {
                    rejected(
                        &id,
                        now,
                        format!("Event id `{}` is not a valid UID", e.event),
                    )
                } else {
                    let event = StoredEvent {
                        completed: e.status == "COMPLETED",
                        values: e
                            .data_values
                            .into_iter()
                            .map(|v| (v.data_element, v.value))
                            .collect(),
                        event: e.event,
                        program: e.program,
                        program_stage: e.program_stage,
                        org_unit: e.org_unit,
                        attribute_option_combo: e.attribute_option_combo,
                        occurred_at: e.occurred_at,
                    };
                    let report =
                        store_event(svc, &session.device.user_uid, &event, Channel::App).await?;
                    result_of(&report, &id, now, future_dated)
                };
                registry
                    .finish_submission(
                        &id,
                        &status_text(result.status),
                        &serde_json::to_string(&result).unwrap_or_default(),
                        now_ms(),
                    )
                    .await?;
                results[index] = Some(result);
            }
        }
    }
    // What the phone still holds once it has these answers: recorded with
    // the last forms if there are any, else on its own.
    let settled = results
        .iter()
        .flatten()
        .filter(|r| r.status.is_final())
        .count();
    let pending = i64::from(request.pending).saturating_sub(settled as i64);
    if forms.is_empty() {
        registry
            .touch_device(
                &session.device.uid,
                now_ms(),
                None,
                Some(pending.max(0)),
                skew,
            )
            .await?;
    } else {
        let write = UploadWrite {
            forms,
            stale_before,
            touch: Some(DeviceTouch {
                device: session.device.uid.clone(),
                skew,
                pending,
            }),
        };
        for (i, r) in svc.upload_writer.write(write).await? {
            results[i] = Some(r);
        }
    }
    let results = results
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ServerError::Internal("a submission went unanswered".into()))?;
    Ok(UploadResponse {
        results,
        instructions: instructions(svc, session).await?,
    })
}

// ------------------------------------------------------------------------------------------------
// Data down
// ------------------------------------------------------------------------------------------------

/// The forms of the user's org units for the current period and the
/// policy's `pastPeriodsKept` before it, per data set.
pub async fn download(svc: &Services, session: &DeviceSession) -> ServerResult<DownloadResponse> {
    let instructions = instructions(svc, session).await?;
    if instructions.wipe {
        return Ok(DownloadResponse {
            periods: BTreeMap::new(),
            forms: Vec::new(),
            approvals: Vec::new(),
            messages: Vec::new(),
            instructions,
        });
    }
    let snap = &session.snap;
    let index = snap.data_index();
    let keep = instructions.policy.past_periods_kept as usize;
    let today = OffsetDateTime::now_utc().date();
    let mut periods_out = BTreeMap::new();
    let mut forms: BTreeMap<(String, String, String, String), StoredForm> = BTreeMap::new();
    let mut data_sets: Vec<_> = index.data_sets.values().collect();
    data_sets.sort_by(|a, b| a.uid.cmp(&b.uid));
    for ds in data_sets {
        let Some(pt) = ds.period_type else { continue };
        let units: Vec<&String> = ds
            .org_units
            .iter()
            .filter(|ou| snap.within_any(ou, &session.caller.capture_roots))
            .collect();
        if units.is_empty() {
            continue;
        }
        let mut periods = vec![Period::containing(pt, today)];
        for _ in 0..keep {
            let previous = periods[periods.len() - 1].previous();
            periods.push(previous);
        }
        let isos: Vec<String> = periods.iter().map(Period::iso).collect();
        periods_out.insert(ds.uid.clone(), isos.clone());
        let period_ids = crate::store::period_filter(&*svc.store, &isos).await?;
        let unit_ids: HashMap<i64, &String> = units
            .iter()
            .filter_map(|ou| snap.org_unit(ou).map(|n| (n.id, *ou)))
            .collect();
        let element_ids: Vec<i64> = ds
            .elements
            .iter()
            .filter_map(|de| snap.get(de).map(|o| o.id))
            .collect();
        let query = ValueQuery {
            data_element_ids: element_ids,
            period_ids: period_ids.clone(),
            org_unit_ids: unit_ids.keys().copied().collect(),
            limit: 100_000,
            ..Default::default()
        };
        for v in svc.store.query_values(&query).await? {
            let (Some(ou), Some(de), Some(coc), Some(aoc)) = (
                unit_ids.get(&v.key.org_unit_id),
                snap.uid_of(v.key.data_element_id),
                snap.uid_of(v.key.category_option_combo_id),
                snap.uid_of(v.key.attribute_option_combo_id),
            ) else {
                continue;
            };
            let key = (
                ds.uid.clone(),
                v.period_iso.clone(),
                (*ou).clone(),
                aoc.to_string(),
            );
            let form = forms.entry(key).or_insert_with(|| StoredForm {
                data_set: ds.uid.clone(),
                period: v.period_iso.clone(),
                org_unit: (*ou).clone(),
                attribute_option_combo: aoc.to_string(),
                complete: false,
                values: Vec::new(),
            });
            form.values.push(FormValue {
                data_element: de.to_string(),
                category_option_combo: Some(coc.to_string()),
                value: v.value.clone(),
                comment: v.comment.clone(),
            });
        }
        let completions = svc
            .store
            .query_completions(&CompletionQuery {
                data_set_ids: vec![ds.id],
                period_ids,
                org_unit_ids: unit_ids.keys().copied().collect(),
                limit: 100_000,
                ..Default::default()
            })
            .await?;
        for c in completions.iter().filter(|c| c.completed) {
            let (Some(ou), Some(aoc)) = (
                unit_ids.get(&c.org_unit_id),
                snap.uid_of(c.attribute_option_combo_id),
            ) else {
                continue;
            };
            let key = (
                ds.uid.clone(),
                c.period_iso.clone(),
                (*ou).clone(),
                aoc.to_string(),
            );
            forms
                .entry(key)
                .or_insert_with(|| StoredForm {
                    data_set: ds.uid.clone(),
                    period: c.period_iso.clone(),
                    org_unit: (*ou).clone(),
                    attribute_option_combo: aoc.to_string(),
                    complete: true,
                    values: Vec::new(),
                })
                .complete = true;
        }
    }
    let approvals = form_approvals(svc, session, &periods_out).await?;
    let messages = svc
        .store
        .approvals()
        .messages_for(&session.device.user_uid, 50)
        .await?
        .into_iter()
        .map(|m| UserMessage {
            id: m.uid,
            subject: m.subject,
            text: m.text,
            sender: m.sender,
            created: rfc3339(m.created_at),
            context: m.context.and_then(|c| serde_json::from_str(&c).ok()),
        })
        .collect();
    Ok(DownloadResponse {
        periods: periods_out,
        forms: forms.into_values().collect(),
        approvals,
        messages,
        instructions,
    })
}

/// Approval state (and any return) of each form the phone keeps whose data
/// set has a workflow.
async fn form_approvals(
    svc: &Services,
    session: &DeviceSession,
    periods: &BTreeMap<String, Vec<String>>,
) -> ServerResult<Vec<FormApproval>> {
    let snap = &session.snap;
    let index = snap.data_index();
    let store = svc.store.approvals();
    let mut out = Vec::new();
    for (ds_uid, isos) in periods {
        let Some(ds) = index.data_sets.get(ds_uid) else {
            continue;
        };
        let Some(wf) = ds.workflow.as_deref() else {
            continue;
        };
        let Some(workflow) = crate::approval::Workflow::of(snap, wf) else {
            continue;
        };
        let mut units: Vec<&String> = ds
            .org_units
            .iter()
            .filter(|ou| snap.within_any(ou, &session.caller.capture_roots))
            .collect();
        units.sort();
        for iso in isos {
            let Ok(period) = Period::parse(iso) else {
                continue;
            };
            let rows = store.approvals(wf, iso).await?;
            for ou in &units {
                let target = crate::approval::Target {
                    workflow: workflow.clone(),
                    period,
                    org_unit: (*ou).clone(),
                    aoc: hisa_shared::metadata::defaults::CATEGORY_OPTION_COMBO.to_string(),
                };
                let status = crate::approval::status_from(snap, &session.caller, &target, &rows);
                if status.state == crate::approval::State::Unapprovable {
                    continue;
                }
                let audits = store.audits(wf, iso, ou).await?;
                let returned = audits
                    .iter()
                    .rposition(|a| a.action == "RETURN")
                    .filter(|i| !audits[i + 1..].iter().any(|a| a.action == "APPROVE"))
                    .map(|i| Returned {
                        comment: audits[i].comment.clone().unwrap_or_default(),
                        by: audits[i].by_user.clone(),
                        at: rfc3339(audits[i].at),
                    });
                out.push(FormApproval {
                    data_set: ds_uid.clone(),
                    period: iso.clone(),
                    org_unit: (*ou).clone(),
                    attribute_option_combo: target.aoc.clone(),
                    state: serde_json::to_value(status.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    returned,
                });
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// Status, wipe, revoke
// ------------------------------------------------------------------------------------------------

pub async fn status(
    svc: &Services,
    session: &DeviceSession,
    report: StatusReport,
) -> ServerResult<Instructions> {
    let now = now_ms();
    let skew = report
        .device_time
        .as_deref()
        .and_then(parse_rfc3339_ms)
        .map(|t| t - now);
    svc.store
        .devices()
        .touch_device(
            &session.device.uid,
            now,
            report.app_version.as_deref(),
            Some(i64::from(report.pending)),
            skew,
        )
        .await?;
    instructions(svc, session).await
}

/// The phone says it deleted its data: from now on it is revoked.
pub async fn confirm_wipe(svc: &Services, session: &DeviceSession) -> ServerResult<()> {
    let registry = svc.store.devices();
    if !registry.confirm_wipe(&session.device.uid, now_ms()).await? {
        return Err(ServerError::conflict(
            "No wipe was requested for this device",
            "E7001",
        ));
    }
    registry
        .audit_device(&audit(
            &session.device.uid,
            "WIPED",
            Some(&session.caller.username),
            None,
        ))
        .await?;
    tracing::warn!(device = %session.device.uid, "device confirmed wipe; revoked");
    Ok(())
}

fn may_manage(caller: &Caller, snap: &Snapshot, device: &DeviceRecord) -> ServerResult<()> {
    if device.user_uid == caller.user_uid || caller.has(authority::MOBILE_SETTINGS) {
        return Ok(());
    }
    // A user manager may act on devices of users inside their subtrees.
    if caller.has(authority::USER_ADD) {
        if let Some(owner) = Caller::from_user(snap, &device.user_uid) {
            if owner
                .capture_roots
                .iter()
                .all(|ou| caller.can_capture(snap, ou))
            {
                return Ok(());
            }
        }
    }
    Err(ServerError::Forbidden(
        "You need the authority F_MOBILE_SETTINGS to manage this device".into(),
    ))
}

pub async fn request_wipe(svc: &Services, caller: &Caller, uid: &str) -> ServerResult<()> {
    let registry = svc.store.devices();
    let device = registry
        .device(uid)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("No device with id {uid}")))?;
    let snap = svc.metadata.snapshot().await?;
    may_manage(caller, &snap, &device)?;
    if device.wiped_at.is_some() {
        return Err(ServerError::conflict(
            format!("Device {uid} was already wiped"),
            "E7002",
        ));
    }
    registry.request_wipe(uid, now_ms()).await?;
    registry
        .audit_device(&audit(uid, "WIPE_REQUESTED", Some(&caller.username), None))
        .await?;
    tracing::warn!(device = %uid, by = %caller.username, "device wipe requested");
    Ok(())
}

pub async fn revoke(svc: &Services, caller: &Caller, uid: &str) -> ServerResult<()> {
    let registry = svc.store.devices();
    let device = registry
        .device(uid)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("No device with id {uid}")))?;
    let snap = svc.metadata.snapshot().await?;
    may_manage(caller, &snap, &device)?;
    registry.revoke_device(uid, now_ms()).await?;
    registry
        .audit_device(&audit(uid, "REVOKE", Some(&caller.username), None))
        .await?;
    tracing::warn!(device = %uid, by = %caller.username, "device revoked");
    Ok(())
}

/// A device as the admin list shows it, with its effective policy.
pub async fn device_view(svc: &Services, snap: &Snapshot, d: &DeviceRecord) -> ServerResult<Value> {
    let effective = effective_policy(svc, snap, Some(&d.uid), &d.user_uid).await?;
    let ms = |v: Option<i64>| v.map(rfc3339);
    Ok(json!({
        "id": d.uid,
        "user": {"id": d.user_uid, "username": snap.get_of("users", &d.user_uid).and_then(|u| u.get("username")).cloned()},
        "name": d.name,
        "model": d.model,
        "appVersion": d.app_version,
        "smsKeyId": d.sms_key_id,
        "enrolled": rfc3339(d.enrolled_at),
        "lastSeen": ms(d.last_seen_at),
        "pendingSubmissions": d.pending_reported,
        "clockSkewSeconds": d.clock_skew_ms.map(|s| s / 1000),
        "revoked": ms(d.revoked_at),
        "wipeRequested": ms(d.wipe_requested_at),
        "wiped": ms(d.wiped_at),
        "status": if d.wiped_at.is_some() { "WIPED" } else if d.revoked_at.is_some() { "REVOKED" } else if d.wipe_requested_at.is_some() { "WIPE_PENDING" } else { "ACTIVE" },
        "policy": effective,
    }))
}

/// Users whose devices `caller` may list: all with the authority, else their own.
pub fn visible_user(caller: &Caller) -> Option<&str> {
    (!caller.has(authority::MOBILE_SETTINGS)).then_some(caller.user_uid.as_str())
}
