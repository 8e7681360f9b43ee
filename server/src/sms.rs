//! The server's side of SMS: the [`SmsDirectory`] the gateway asks (users
//! by phone number, a catalog of the metadata SMS refer to, storing forms
//! through the data importer and events through the event importer), and
//! the device registry that issues per-device SMS keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use hisa_shared::authority;
use hisa_shared::hisa_sms::FormLayout;
use hisa_shared::metadata::{defaults, Program, ProgramStage};
use hisa_shared::period::Period;
use hisa_sms_gateway::directory::*;
use hisa_sms_gateway::plaintext::Dialect;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::data::import::{DataImportOptions, DataImporter, RawValue, SetLevel};
use crate::data::Channel;
use crate::error::{ServerError, ServerResult};
use crate::events::{import_events, TrackerParams};
use crate::metadata::Snapshot;
use crate::state::{Services, ServicesInner};
use crate::store::{DataTx, PeriodRow, ValueKey};
use hisa_shared::datavalue::ImportSummary;

/// Lock codes of the data importer: the whole form is closed, not one value.
const LOCK_CODES: &[&str] = &["E7640", "E7641", "E7642", "E7643"];

struct CachedCatalog {
    version: i64,
    catalog: Arc<Catalog>,
    /// E.164 phone number → user uid (the first user registered with it).
    phones: Arc<HashMap<String, String>>,
}

/// The gateway's view of Hisa. Holds the services weakly: they own the
/// gateway, which owns this.
#[derive(Default)]
pub struct Directory {
    services: OnceLock<Weak<ServicesInner>>,
    cache: Mutex<Option<CachedCatalog>>,
    country_code: Option<String>,
}

impl Directory {
    pub fn new(country_code: Option<String>) -> Directory {
        Directory {
            country_code,
            ..Default::default()
        }
    }

    pub fn attach(&self, services: &Services) {
        let _ = self.services.set(Arc::downgrade(&services.0));
    }

    fn services(&self) -> DirectoryResult<Services> {
        self.services
            .get()
            .and_then(Weak::upgrade)
            .map(Services)
            .ok_or_else(|| DirectoryError("the server is shutting down".into()))
    }

    async fn cached(&self) -> DirectoryResult<(Arc<Catalog>, Arc<HashMap<String, String>>)> {
        let svc = self.services()?;
        let snap = svc.metadata.snapshot().await.map_err(dir_err)?;
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.as_ref().filter(|c| c.version == snap.version) {
                return Ok((c.catalog.clone(), c.phones.clone()));
            }
        }
        let (catalog, phones) = build_catalog(&snap, self.country_code.as_deref());
        let catalog = Arc::new(catalog);
        let phones = Arc::new(phones);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some(CachedCatalog {
                version: snap.version,
                catalog: catalog.clone(),
                phones: phones.clone(),
            });
        }
        Ok((catalog, phones))
    }

    async fn sender(
        &self,
        svc: &Services,
        snap: &Snapshot,
        user: &str,
    ) -> DirectoryResult<Option<Sender>> {
        let Some(body) = snap.get_of("users", user) else {
            return Ok(None);
        };
        let credential = svc
            .store
            .credential_by_user_uid(user)
            .await
            .map_err(|e| DirectoryError(e.to_string()))?;
        let disabled = body
            .get("disabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || credential.as_ref().is_some_and(|c| c.disabled);
        let org_units: Vec<String> = body
            .get("organisationUnits")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str))
                    .filter(|uid| snap.org_unit(uid).is_some())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let org_unit_paths = org_units
            .iter()
            .filter_map(|uid| snap.org_unit(uid).map(|n| n.path.clone()))
            .collect();
        let locale = body
            .pointer("/settings/keyUiLocale")
            .or_else(|| body.get("keyUiLocale"))
            .or_else(|| body.get("locale"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Some(Sender {
            user: user.to_string(),
            username: body
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            org_units,
            org_unit_paths,
            locale,
            disabled,
        }))
    }
}

fn dir_err(e: ServerError) -> DirectoryError {
    DirectoryError(e.to_string())
}

fn id_of(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| v.get("id").and_then(Value::as_str).or_else(|| v.as_str()))
        .map(str::to_string)
}

fn text_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The catalog of one metadata snapshot, and the phone number index.
pub fn build_catalog(
    snap: &Snapshot,
    country_code: Option<&str>,
) -> (Catalog, HashMap<String, String>) {
    let index = snap.data_index();
    let mut combo_cocs: HashMap<&str, Vec<String>> = HashMap::new();
    for (coc, combo) in &index.coc_combo {
        combo_cocs
            .entry(combo.as_str())
            .or_default()
            .push(coc.clone());
    }
    for cocs in combo_cocs.values_mut() {
        cocs.sort();
    }
    let cocs_of = |combo: &str| -> Vec<String> {
        combo_cocs
            .get(combo)
            .cloned()
            .unwrap_or_else(|| vec![defaults::CATEGORY_OPTION_COMBO.to_string()])
    };
    let mut data_sets = Vec::new();
    for ds in index.data_sets.values() {
        let Some(period_type) = ds.period_type else {
            continue;
        };
        let elements = ds.elements.iter().filter_map(|de| {
            let element = index.elements.get(de)?;
            Some((de.clone(), cocs_of(&index.combo_in(element, Some(ds)))))
        });
        let layout = FormLayout::new(&ds.uid, elements);
        let name = snap
            .get_of("dataSets", &ds.uid)
            .and_then(|d| text_of(d, "name"))
            .unwrap_or_else(|| ds.uid.clone());
        data_sets.push(DataSetEntry {
            uid: ds.uid.clone(),
            name,
            period_type,
            fingerprint: layout.fingerprint(),
            layout,
            attribute_option_combos: cocs_of(&ds.attribute_combo),
            org_units: ds.org_units.clone(),
        });
    }
    data_sets.sort_by(|a, b| a.uid.cmp(&b.uid));
    let mut programs = Vec::new();
    for body in snap.all_of("programs") {
        let Ok(program) = serde_json::from_value::<Program>(body.clone()) else {
            continue;
        };
        if program.program_type.as_deref() != Some("WITHOUT_REGISTRATION") {
            continue;
        }
        let Some(stage_ref) = program.program_stages.first() else {
            continue;
        };
        let Some(stage) = snap.typed::<ProgramStage>("programStages", &stage_ref.id) else {
            continue;
        };
        let elements = stage
            .program_stage_data_elements
            .iter()
            .filter_map(|p| p.data_element.as_ref().map(|r| r.id.clone()));
        let layout = FormLayout::for_program(&program.id, elements);
        let combo = program
            .category_combo
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_else(|| defaults::CATEGORY_COMBO.to_string());
        programs.push(ProgramEntry {
            uid: program.id.clone(),
            name: program.name.clone(),
            stage: stage.id.clone(),
            fingerprint: layout.fingerprint(),
            layout,
            attribute_option_combos: cocs_of(&combo),
            org_units: program
                .organisation_units
                .iter()
                .map(|r| r.id.clone())
                .collect(),
        });
    }
    programs.sort_by(|a, b| a.uid.cmp(&b.uid));
    let org_unit_paths = snap
        .org_units()
        .map(|(uid, node)| (uid.clone(), node.path.clone()))
        .collect();
    let mut users = Vec::new();
    let mut phones = HashMap::new();
    for user in snap.all_of("users") {
        let Some(uid) = text_of(user, "id") else {
            continue;
        };
        if let Some(phone) = text_of(user, "phoneNumber") {
            let key = hisa_sms_gateway::msisdn::normalize(&phone, country_code).unwrap_or(phone);
            phones.entry(key).or_insert_with(|| uid.clone());
        }
        users.push(uid);
    }
    let commands = snap.all_of("smsCommands").filter_map(command_of).collect();
    (
        Catalog {
            version: snap.version,
            data_sets,
            programs,
            org_unit_paths,
            users,
            commands,
        },
        phones,
    )
}

/// DHIS2's `smsCommands` JSON → the gateway's command.
fn command_of(body: &Value) -> Option<SmsCommand> {
    let uid = text_of(body, "id")?;
    let name = text_of(body, "name")?;
    let codes = body
        .get("smsCodes")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some(CommandCode {
                        code: text_of(c, "code")?,
                        data_element: id_of(c.get("dataElement"))
                            .or_else(|| id_of(c.get("trackedEntityAttribute")))?,
                        category_option_combo: id_of(c.get("optionId")),
                        compulsory: c
                            .get("compulsory")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        formula: text_of(c, "formula"),
                        text: c.get("text").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let special_characters = body
        .get("specialCharacters")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some((text_of(c, "name")?, text_of(c, "value").unwrap_or_default()))
                })
                .collect()
        })
        .unwrap_or_default();
    let dialect = body
        .get("smsDialect")
        .cloned()
        .and_then(|d| serde_json::from_value::<Dialect>(d).ok())
        .unwrap_or(Dialect::Auto);
    Some(SmsCommand {
        uid,
        name,
        parser_type: text_of(body, "parserType").unwrap_or_else(|| "ALERT_PARSER".into()),
        separator: body
            .get("separator")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string),
        dialect,
        data_set: id_of(body.get("dataset")).or_else(|| id_of(body.get("dataSet"))),
        program: id_of(body.get("program")),
        program_stage: id_of(body.get("programStage")),
        codes,
        special_characters,
        current_period_used_for_reporting: body
            .get("currentPeriodUsedForReporting")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        completeness_method: text_of(body, "completenessMethod")
            .unwrap_or_else(|| "AT_LEAST_ONE_DATAVALUE".into()),
        texts: CommandTexts {
            default_message: text_of(body, "defaultMessage"),
            received_message: text_of(body, "receivedMessage"),
            wrong_format_message: text_of(body, "wrongFormatMessage"),
            no_user_message: text_of(body, "noUserMessage"),
            more_than_one_org_unit_message: text_of(body, "moreThanOneOrgUnitMessage"),
            success_message: text_of(body, "successMessage"),
        },
    })
}

#[async_trait]
impl SmsDirectory for Directory {
    async fn catalog(&self) -> DirectoryResult<Arc<Catalog>> {
        Ok(self.cached().await?.0)
    }

    async fn sender_by_phone(&self, phone: &str) -> DirectoryResult<Option<Sender>> {
        let (_, phones) = self.cached().await?;
        let Some(user) = phones.get(phone) else {
            return Ok(None);
        };
        let svc = self.services()?;
        let snap = svc.metadata.snapshot().await.map_err(dir_err)?;
        self.sender(&svc, &snap, user).await
    }

    async fn sender_by_user(&self, user: &str) -> DirectoryResult<Option<Sender>> {
        let svc = self.services()?;
        let snap = svc.metadata.snapshot().await.map_err(dir_err)?;
        self.sender(&svc, &snap, user).await
    }

    async fn apply_form(
        &self,
        sender: &Sender,
        form: &FormSubmission,
        origin: &Origin,
    ) -> DirectoryResult<ApplyReport> {
        let svc = self.services()?;
        store_form(
            &svc,
            &sender.user,
            form,
            Channel::Sms,
            origin.device.clone(),
        )
        .await
        .map_err(dir_err)
    }

    async fn apply_event(
        &self,
        sender: &Sender,
        event: &EventSubmission,
        _origin: &Origin,
    ) -> DirectoryResult<ApplyReport> {
        let svc = self.services()?;
        store_event(&svc, &sender.user, event, Channel::Sms)
            .await
            .map_err(dir_err)
    }
}

// ------------------------------------------------------------------------------------------------
// Storing forms and events (SMS and device sync)
// ------------------------------------------------------------------------------------------------

/// Store one form as `user`, all its checks applied: the user's rights and
/// scope, the data set's assignment, period type and locks, each value's
/// type. One transaction; refused values are reported, not stored.
pub async fn store_form(
    svc: &Services,
    user: &str,
    form: &FormSubmission,
    channel: Channel,
    device: Option<String>,
) -> ServerResult<ApplyReport> {
    let snap = svc.metadata.snapshot().await?;
    prepare_form(svc, snap, user, form.clone(), channel, device)
        .await?
        .apply()
        .await
}

/// A form checked against the metadata as far as it can be without
/// writing: either decided already (rejected as a whole) or an import whose
/// values are all checked and wait to be written.
pub struct PreparedForm {
    form: FormSubmission,
    step: FormStep,
}

enum FormStep {
    Decided(ApplyReport),
    Import(Box<DataImporter>),
}

/// Everything [`store_form`] checks before it writes, done in the calling
/// task; the writes wait for [`PreparedForm::apply`] or
/// [`PreparedForm::apply_in`].
pub async fn prepare_form(
    svc: &Services,
    snap: Arc<Snapshot>,
    user: &str,
    form: FormSubmission,
    channel: Channel,
    device: Option<String>,
) -> ServerResult<PreparedForm> {
    let decided = |form: FormSubmission, r: Rejection| PreparedForm {
        form,
        step: FormStep::Decided(ApplyReport {
            rejection: Some(r),
            ..Default::default()
        }),
    };
    let Some(caller) = Caller::from_user(&snap, user) else {
        return Ok(decided(
            form,
            Rejection::NotAuthorised("the user is gone".into()),
        ));
    };
    if !caller.has(authority::DATAVALUE_ADD) {
        return Ok(decided(
            form,
            Rejection::NotAuthorised("the user may not enter data".into()),
        ));
    }
    let index = snap.data_index();
    let Some(ds) = index.data_sets.get(&form.data_set) else {
        return Ok(decided(form, Rejection::UnknownDataSet));
    };
    if !caller.can_capture(&snap, &form.org_unit) {
        return Ok(decided(form, Rejection::OrgUnitOutsideScope));
    }
    if !ds.org_units.contains(&form.org_unit) {
        return Ok(decided(form, Rejection::OrgUnitNotAssigned));
    }
    match Period::parse(&form.period) {
        Ok(p) if Some(p.period_type()) == ds.period_type => {}
        _ => {
            let period = form.period.clone();
            return Ok(decided(form, Rejection::InvalidPeriod(period)));
        }
    }
    if let Some(aoc) = &form.attribute_option_combo {
        if index.coc_combo.get(aoc) != Some(&ds.attribute_combo) {
            return Ok(decided(form, Rejection::UnknownAttributeOptionCombo));
        }
    }
    let options = DataImportOptions {
        atomic: form.atomic,
        channel,
        device,
        ..Default::default()
    };
    let mut importer = DataImporter::new(snap.clone(), svc.store.clone(), caller, options);
    importer.defer_writes();
    importer.set_header(SetLevel {
        data_set: Some(form.data_set.clone()),
        period: Some(form.period.clone()),
        org_unit: Some(form.org_unit.clone()),
        attribute_option_combo: form.attribute_option_combo.clone(),
        complete_date: form
            .complete
            .then(|| time::OffsetDateTime::now_utc().date().to_string()),
        ..Default::default()
    });
    for v in &form.values {
        importer
            .push(RawValue {
                data_element: Some(v.data_element.clone()),
                category_option_combo: v.category_option_combo.clone(),
                value: v.value.clone(),
                deleted: Some(v.value.is_none()),
                comment: v.comment.clone(),
                ..Default::default()
            })
            .await?;
    }
    Ok(PreparedForm {
        form,
        step: FormStep::Import(Box::new(importer)),
    })
}

impl PreparedForm {
    /// Write in a transaction of its own.
    pub async fn apply(self) -> ServerResult<ApplyReport> {
        match self.step {
            FormStep::Decided(report) => Ok(report),
            FormStep::Import(importer) => Ok(report_of(&self.form, importer.finish().await?)),
        }
    }

    /// Write in the caller's transaction, uncommitted (see
    /// [`DataImporter::finish_in`]).
    /// The keys its values will be written at (periods unresolved, as
    /// [`DataImporter::waiting_keys`]).
    pub fn value_keys(&self) -> Vec<(ValueKey, PeriodRow)> {
        match &self.step {
            FormStep::Decided(_) => Vec::new(),
            FormStep::Import(importer) => importer
                .waiting_keys()
                .map(|(key, period)| (key, PeriodRow::of(period)))
                .collect(),
        }
    }

    /// A copy to apply again should the first attempt's transaction be
    /// lost; `None` once its importer holds a transaction.
    pub fn duplicate(&self) -> Option<PreparedForm> {
        let step = match &self.step {
            FormStep::Decided(report) => FormStep::Decided(report.clone()),
            FormStep::Import(importer) => FormStep::Import(Box::new(importer.duplicate()?)),
        };
        Some(PreparedForm {
            form: self.form.clone(),
            step,
        })
    }

    pub async fn apply_in(self, tx: &mut Option<Box<dyn DataTx>>) -> ServerResult<ApplyReport> {
        match self.step {
            FormStep::Decided(report) => Ok(report),
            FormStep::Import(importer) => Ok(report_of(&self.form, importer.finish_in(tx).await?)),
        }
    }
}

/// The importer's summary as the gateway's report on the form.
fn report_of(form: &FormSubmission, summary: ImportSummary) -> ApplyReport {
    let count = &summary.import_count;
    let mut report = ApplyReport {
        imported: count.imported as usize,
        updated: count.updated as usize,
        deleted: count.deleted as usize,
        ignored: count.ignored as usize,
        ..Default::default()
    };
    for c in &summary.conflicts {
        let value = c.indexes.first().and_then(|i| form.values.get(*i));
        report.conflicts.push(ValueConflict {
            data_element: value
                .map(|v| v.data_element.clone())
                .or_else(|| Some(c.object.clone())),
            category_option_combo: value.and_then(|v| v.category_option_combo.clone()),
            code: Some(c.error_code.clone()),
            message: c.value.clone(),
        });
    }
    let locked = !summary.conflicts.is_empty()
        && summary
            .conflicts
            .iter()
            .all(|c| LOCK_CODES.contains(&c.error_code.as_str()));
    if report.stored() == 0 && locked {
        report.rejection = Some(Rejection::PeriodLocked(form.period.clone()));
    } else if !report.conflicts.is_empty() && (form.atomic || report.stored() == 0) {
        report.rejection = Some(Rejection::ValuesRefused);
    }
    report.completed = form.complete
        && report.rejection.is_none()
        && !summary.data_set_complete.is_empty()
        && summary.data_set_complete != "false";
    report
}

/// Store one single event as `user` (create or replace by its UID).
pub async fn store_event(
    svc: &Services,
    user: &str,
    event: &EventSubmission,
    channel: Channel,
) -> ServerResult<ApplyReport> {
    let snap = svc.metadata.snapshot().await?;
    let Some(caller) = Caller::from_user(&snap, user) else {
        return Ok(ApplyReport {
            rejection: Some(Rejection::NotAuthorised("the user is gone".into())),
            ..Default::default()
        });
    };
    if !caller.can_capture(&snap, &event.org_unit) {
        return Ok(ApplyReport {
            rejection: Some(Rejection::OrgUnitOutsideScope),
            ..Default::default()
        });
    }
    let existed = !svc
        .store
        .events_by_uid(std::slice::from_ref(&event.event))
        .await?
        .is_empty();
    let mut body = json!({
        "event": event.event,
        "program": event.program,
        "orgUnit": event.org_unit,
        "occurredAt": event.occurred_at,
        "status": if event.completed { "COMPLETED" } else { "ACTIVE" },
        "dataValues": event.values.iter().map(|(de, v)| json!({"dataElement": de, "value": v})).collect::<Vec<_>>(),
    });
    if let Some(stage) = &event.program_stage {
        body["programStage"] = json!(stage);
    }
    if let Some(aoc) = &event.attribute_option_combo {
        body["attributeOptionCombo"] = json!(aoc);
    }
    let params = TrackerParams {
        channel,
        ..Default::default()
    };
    let result = import_events(svc, &caller, &json!({"events": [body]}), params).await;
    let (status, report_json) = match result {
        Ok(r) => r,
        Err(ServerError::Forbidden(m)) => {
            return Ok(ApplyReport {
                rejection: Some(Rejection::NotAuthorised(m)),
                ..Default::default()
            })
        }
        Err(e) => return Err(e),
    };
    if status == 200 {
        return Ok(ApplyReport {
            imported: usize::from(!existed),
            updated: usize::from(existed),
            completed: event.completed,
            ..Default::default()
        });
    }
    let conflicts: Vec<ValueConflict> = report_json
        .pointer("/validationReport/errorReports")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let message = text_of(e, "message").unwrap_or_default();
                    ValueConflict {
                        data_element: message
                            .split('`')
                            .nth(1)
                            .filter(|s| s.len() == 11)
                            .map(str::to_string),
                        category_option_combo: None,
                        code: text_of(e, "errorCode"),
                        message,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let rejection = if conflicts.iter().any(|c| c.code.as_deref() == Some("E1029")) {
        Rejection::OrgUnitNotAssigned
    } else {
        Rejection::ValuesRefused
    };
    Ok(ApplyReport {
        conflicts,
        rejection: Some(rejection),
        ..Default::default()
    })
}
