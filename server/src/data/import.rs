//! Importing aggregate data values: every value checked against the
//! metadata, the caller's scope and the data set's locks, then written in
//! batches with an audit row for every change.
//!
//! Values arrive one at a time from a streaming parser ([`DataImporter::push`]),
//! so a body of a million values never sits in memory. As in DHIS2, valid
//! values are stored and invalid ones reported; with `atomic` nothing is
//! stored unless every value is valid.

use std::collections::HashMap;
use std::sync::Arc;

use hisa_shared::authority;
use hisa_shared::datavalue::{
    Conflict, DataImportStrategy, IdScheme, ImportSummary, SummaryStatus,
};
use hisa_shared::metadata::{defaults, AggregationType};
use hisa_shared::period::Period;
use hisa_shared::value_type::{is_zero, validate_comment, validate_value, OptionCodes};
use serde_json::json;
use time::{Date, OffsetDateTime};

use super::index::{DataIndex, DataSetRules, ElementRules};
use super::Channel;
use crate::auth::Caller;
use crate::error::ServerResult;
use crate::metadata::Snapshot;
use crate::store::{
    AuditWrite, CompletionWrite, DataTx, DataValueWrite, PeriodRow, Store, StoredValue, ValueKey,
};

/// Values validated before a batch is written.
const BATCH: usize = 2_000;

/// The savepoint of an import inside a caller's transaction.
const IMPORT_SAVEPOINT: &str = "hisa_import";

#[derive(Debug, Clone)]
pub struct DataImportOptions {
    pub strategy: DataImportStrategy,
    pub dry_run: bool,
    /// Hisa's all-or-nothing: any rejected value rejects the payload.
    pub atomic: bool,
    pub skip_existing_check: bool,
    pub data_element_scheme: IdScheme,
    pub org_unit_scheme: IdScheme,
    pub category_option_combo_scheme: IdScheme,
    pub data_set_scheme: IdScheme,
    /// Superuser only: ignore expiry, future-period and input-period locks.
    pub force: bool,
    pub channel: Channel,
    pub device: Option<String>,
}

impl Default for DataImportOptions {
    fn default() -> Self {
        DataImportOptions {
            strategy: DataImportStrategy::CreateAndUpdate,
            dry_run: false,
            atomic: false,
            skip_existing_check: false,
            data_element_scheme: IdScheme::Uid,
            org_unit_scheme: IdScheme::Uid,
            category_option_combo_scheme: IdScheme::Uid,
            data_set_scheme: IdScheme::Uid,
            force: false,
            channel: Channel::Api,
            device: None,
        }
    }
}

impl DataImportOptions {
    /// Set one id scheme for everything (`idScheme`), before the specific ones.
    pub fn set_all_schemes(&mut self, scheme: IdScheme) {
        self.data_element_scheme = scheme.clone();
        self.org_unit_scheme = scheme.clone();
        self.category_option_combo_scheme = scheme.clone();
        self.data_set_scheme = scheme;
    }

    fn echo(&self) -> serde_json::Value {
        json!({
            "idSchemes": {
                "dataElementIdScheme": self.data_element_scheme.name(),
                "orgUnitIdScheme": self.org_unit_scheme.name(),
                "categoryOptionComboIdScheme": self.category_option_combo_scheme.name(),
                "dataSetIdScheme": self.data_set_scheme.name(),
            },
            "dryRun": self.dry_run,
            "async": false,
            "importStrategy": self.strategy,
            "skipExistingCheck": self.skip_existing_check,
            "atomic": self.atomic,
            "force": self.force,
        })
    }
}

/// Set-level members of a data value set: defaults for its values.
#[derive(Debug, Clone, Default)]
pub struct SetLevel {
    pub data_set: Option<String>,
    pub period: Option<String>,
    pub org_unit: Option<String>,
    pub attribute_option_combo: Option<String>,
    pub attribute_category_options: Vec<String>,
    pub complete_date: Option<String>,
}

/// One value as a parser read it: identifiers unresolved, text untrimmed.
#[derive(Debug, Clone, Default)]
pub struct RawValue {
    pub data_element: Option<String>,
    pub period: Option<String>,
    pub org_unit: Option<String>,
    pub category_option_combo: Option<String>,
    pub attribute_option_combo: Option<String>,
    pub value: Option<String>,
    pub comment: Option<String>,
    pub follow_up: Option<bool>,
    pub stored_by: Option<String>,
    pub deleted: Option<bool>,
    /// ADX disaggregation: (category, category option) pairs, resolved by code.
    pub category_options: Vec<(String, String)>,
}

/// A value that passed every check, ready to be compared with what is stored.
#[derive(Debug, Clone)]
struct Checked {
    key: ValueKey,
    period: Period,
    value: Option<String>,
    comment: Option<String>,
    follow_up: Option<bool>,
    stored_by: String,
    delete: bool,
    insignificant_zero: bool,
}

struct Rejection {
    code: &'static str,
    object: String,
    property: &'static str,
    message: String,
}

fn reject(
    code: &'static str,
    property: &'static str,
    object: impl Into<String>,
    message: String,
) -> Rejection {
    Rejection {
        code,
        object: object.into(),
        property,
        message,
    }
}

fn clean(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub struct DataImporter {
    snap: Arc<Snapshot>,
    store: Arc<dyn Store>,
    caller: Caller,
    opts: DataImportOptions,
    summary: ImportSummary,
    header: SetLevel,
    /// Every header seen: each may register its data set complete.
    headers: Vec<SetLevel>,
    aborted: bool,
    index: usize,
    batch: Vec<Checked>,
    tx: Option<Box<dyn DataTx>>,
    periods: HashMap<String, i64>,
    now: OffsetDateTime,
    today: Date,
    /// Loaded at the first value: approved data refuses writes.
    approval_locks: Option<crate::approval::ApprovalLocks>,
    /// Values wait for `finish_in` instead of being written in batches.
    deferred: bool,
    /// `tx` is the caller's: never committed or dropped here.
    outer: bool,
}

impl DataImporter {
    pub fn new(
        snap: Arc<Snapshot>,
        store: Arc<dyn Store>,
        caller: Caller,
        mut opts: DataImportOptions,
    ) -> DataImporter {
        // Forcing past locks is a superuser's privilege only.
        opts.force = opts.force && caller.is_superuser();
        let now = OffsetDateTime::now_utc();
        DataImporter {
            summary: ImportSummary::new(opts.echo()),
            snap,
            store,
            caller,
            opts,
            header: SetLevel::default(),
            headers: Vec::new(),
            aborted: false,
            index: 0,
            batch: Vec::with_capacity(BATCH),
            tx: None,
            periods: HashMap::new(),
            now,
            today: now.date(),
            approval_locks: None,
            deferred: false,
            outer: false,
        }
    }

    fn resolve<'a>(&'a self, kind: &str, scheme: &IdScheme, ident: &str) -> Option<&'a str> {
        let snap = &*self.snap;
        match scheme {
            IdScheme::Uid => snap
                .get_of(kind, ident)
                .and_then(|o| o.get("id").and_then(|v| v.as_str())),
            IdScheme::Code => snap.uid_by_code(kind, ident),
            IdScheme::Name => snap.uid_by_name(kind, ident),
            IdScheme::Attribute(attr) => snap.all_of(kind).find_map(|o| {
                let matches = o
                    .get("attributeValues")
                    .and_then(|a| a.as_array())
                    .is_some_and(|values| {
                        values.iter().any(|av| {
                            av.get("attribute")
                                .and_then(|a| a.get("id"))
                                .and_then(|i| i.as_str())
                                == Some(attr.as_str())
                                && av.get("value").and_then(|v| v.as_str()) == Some(ident)
                        })
                    });
                if matches {
                    o.get("id").and_then(|v| v.as_str())
                } else {
                    None
                }
            }),
        }
    }

    /// Record the set-level members; a failing set-level check aborts the payload.
    pub fn set_header(&mut self, header: SetLevel) {
        let abort = |s: &mut ImportSummary, code: &str, object: &str, message: String| {
            s.abort(Conflict {
                object: object.to_string(),
                objects: Default::default(),
                value: message,
                error_code: code.to_string(),
                property: None,
                indexes: vec![],
            });
        };
        if let Some(ds) = header.data_set.as_deref().filter(|s| !s.is_empty()) {
            if self
                .resolve("dataSets", &self.opts.data_set_scheme, ds)
                .is_none()
            {
                abort(
                    &mut self.summary,
                    "E7600",
                    ds,
                    format!("Data set not found or not accessible: `{ds}`"),
                );
                self.aborted = true;
            }
        }
        if let Some(ou) = header.org_unit.as_deref().filter(|s| !s.is_empty()) {
            if self
                .resolve("organisationUnits", &self.opts.org_unit_scheme, ou)
                .is_none()
            {
                abort(
                    &mut self.summary,
                    "E7603",
                    ou,
                    format!("Org unit not found or not accessible: `{ou}`"),
                );
                self.aborted = true;
            }
        }
        if let Some(aoc) = header
            .attribute_option_combo
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            if self
                .resolve(
                    "categoryOptionCombos",
                    &self.opts.category_option_combo_scheme,
                    aoc,
                )
                .is_none()
            {
                abort(
                    &mut self.summary,
                    "E7604",
                    aoc,
                    format!("Attribute option combo not found or not accessible: `{aoc}`"),
                );
                self.aborted = true;
            }
        }
        if let Some(pe) = header.period.as_deref().filter(|s| !s.is_empty()) {
            if Period::parse(pe).is_err() {
                abort(
                    &mut self.summary,
                    "E7611",
                    pe,
                    format!("Period not valid: `{pe}`"),
                );
                self.aborted = true;
            }
        }
        self.headers.push(header.clone());
        self.header = header;
    }

    /// Abort because the body could not be read past some point.
    pub fn fail_input(&mut self, message: String) {
        self.summary.abort(Conflict {
            object: "body".into(),
            objects: Default::default(),
            value: message,
            error_code: "E7600".into(),
            property: None,
            indexes: vec![],
        });
        self.summary.description = "The import could not be read".into();
        self.aborted = true;
    }

    pub fn aborted(&self) -> bool {
        self.aborted
    }

    pub async fn push(&mut self, raw: RawValue) -> ServerResult<()> {
        let index = self.index;
        self.index += 1;
        if self.aborted {
            return Ok(());
        }
        if self.approval_locks.is_none() {
            let rows = self.store.approvals().all_approvals().await?;
            self.approval_locks = Some(crate::approval::ApprovalLocks::new(rows));
        }
        match self.check(&raw) {
            Ok(checked) => self.batch.push(checked),
            Err(r) => {
                let mut objects = std::collections::BTreeMap::new();
                objects.insert(r.property.to_string(), r.object.clone());
                self.summary.reject(
                    Some(index),
                    Conflict {
                        object: r.object,
                        objects,
                        value: r.message,
                        error_code: r.code.to_string(),
                        property: Some(r.property.to_string()),
                        indexes: vec![],
                    },
                );
            }
        }
        if self.batch.len() >= BATCH && !self.deferred {
            self.flush().await?;
        }
        Ok(())
    }

    fn check(&self, raw: &RawValue) -> Result<Checked, Rejection> {
        let data_index: &DataIndex = self.snap.data_index();
        let de_ident = clean(&raw.data_element).unwrap_or_default();
        let element: &ElementRules = self
            .resolve("dataElements", &self.opts.data_element_scheme, &de_ident)
            .and_then(|uid| data_index.elements.get(uid))
            .ok_or_else(|| {
                reject(
                    "E7610",
                    "dataElement",
                    &de_ident,
                    format!("Data element not found or not accessible: `{de_ident}`"),
                )
            })?;

        let pe_text = clean(&raw.period)
            .or_else(|| clean(&self.header.period))
            .unwrap_or_default();
        let period = Period::parse(&pe_text).map_err(|e| {
            reject(
                "E7611",
                "period",
                &pe_text,
                format!("Period not valid: `{pe_text}`: {e}"),
            )
        })?;

        let ou_ident = clean(&raw.org_unit)
            .or_else(|| clean(&self.header.org_unit))
            .unwrap_or_default();
        let ou_uid = self
            .resolve("organisationUnits", &self.opts.org_unit_scheme, &ou_ident)
            .ok_or_else(|| {
                reject(
                    "E7612",
                    "orgUnit",
                    &ou_ident,
                    format!("Org unit not found or not accessible: `{ou_ident}`"),
                )
            })?
            .to_string();
        let ou = self.snap.org_unit(&ou_uid).ok_or_else(|| {
            reject(
                "E7612",
                "orgUnit",
                &ou_ident,
                format!("Org unit not found or not accessible: `{ou_ident}`"),
            )
        })?;

        // The data set the value is entered through.
        let header_ds = clean(&self.header.data_set).and_then(|d| {
            self.resolve("dataSets", &self.opts.data_set_scheme, &d)
                .map(str::to_string)
        });
        let candidates: Vec<&DataSetRules> = match &header_ds {
            Some(ds) => {
                let rules = data_index.data_sets.get(ds).ok_or_else(|| {
                    reject(
                        "E7600",
                        "dataSet",
                        ds,
                        format!("Data set not found or not accessible: `{ds}`"),
                    )
                })?;
                if !rules.elements.contains(&element.uid) {
                    return Err(reject(
                        "E7633",
                        "dataElement",
                        &element.uid,
                        format!(
                            "Data element `{}` is not part of data set `{ds}`",
                            element.uid
                        ),
                    ));
                }
                vec![rules]
            }
            None => element
                .data_sets
                .iter()
                .filter_map(|d| data_index.data_sets.get(d))
                .collect(),
        };
        if candidates.is_empty() {
            return Err(reject(
                "E7633",
                "dataElement",
                &element.uid,
                format!(
                    "Data element `{}` is not part of any data set, so it cannot take values",
                    element.uid
                ),
            ));
        }
        let of_type: Vec<&DataSetRules> = candidates
            .into_iter()
            .filter(|ds| ds.period_type == Some(period.period_type()))
            .collect();
        if of_type.is_empty() {
            return Err(reject("E7632", "period", period.iso(), format!(
                "Period type of period `{}` is not valid for data element `{}`: its data sets take another period type",
                period.iso(), element.uid)));
        }
        let assigned: Vec<&DataSetRules> = of_type
            .into_iter()
            .filter(|ds| ds.org_units.contains(&ou_uid))
            .collect();
        if assigned.is_empty() {
            return Err(reject(
                "E7636",
                "orgUnit",
                &ou_uid,
                format!(
                    "Data element `{}` is not assigned through a data set to org unit `{ou_uid}`",
                    element.uid
                ),
            ));
        }

        // Category option combo: in the element's combo (or the data set's override).
        let coc_ident = clean(&raw.category_option_combo);
        let coc_uid = match coc_ident {
            Some(c) => self
                .resolve(
                    "categoryOptionCombos",
                    &self.opts.category_option_combo_scheme,
                    &c,
                )
                .ok_or_else(|| {
                    reject(
                        "E7613",
                        "categoryOptionCombo",
                        &c,
                        format!("Category option combo not found or not accessible: `{c}`"),
                    )
                })?
                .to_string(),
            None if !raw.category_options.is_empty() => {
                let mut options = Vec::new();
                for (category, option) in &raw.category_options {
                    let uid =
                        self.snap
                            .uid_by_code("categoryOptions", option)
                            .or_else(|| {
                                self.snap
                                    .get_of("categoryOptions", option)
                                    .and(Some(option.as_str()))
                            })
                            .ok_or_else(|| {
                                reject(
                                    "E7613",
                                    "categoryOptionCombo",
                                    option,
                                    format!(
                            "Category option `{option}` of category `{category}` not found"),
                                )
                            })?;
                    options.push(uid.to_string());
                }
                let combo = data_index.combo_in(element, assigned.first().copied());
                data_index.coc_of(&combo, &options).ok_or_else(|| {
                    reject("E7613", "categoryOptionCombo", element.uid.clone(), format!(
                        "No category option combo of data element `{}` matches the categories given", element.uid))
                })?
            }
            None => defaults::CATEGORY_OPTION_COMBO.to_string(),
        };
        let coc_combo = data_index
            .coc_combo
            .get(&coc_uid)
            .cloned()
            .unwrap_or_default();
        let combo_ok = assigned
            .iter()
            .any(|ds| data_index.combo_in(element, Some(ds)) == coc_combo);
        if !combo_ok {
            return Err(reject("E7634", "categoryOptionCombo", &coc_uid, format!(
                "Category option combo `{coc_uid}` is not part of the category combo of data element `{}`", element.uid)));
        }

        // Attribute option combo: given, from attribute options, or default.
        let aoc_uid = match clean(&raw.attribute_option_combo)
            .or_else(|| clean(&self.header.attribute_option_combo))
        {
            Some(a) => self
                .resolve(
                    "categoryOptionCombos",
                    &self.opts.category_option_combo_scheme,
                    &a,
                )
                .ok_or_else(|| {
                    reject(
                        "E7615",
                        "attributeOptionCombo",
                        &a,
                        format!("Attribute option combo not found or not accessible: `{a}`"),
                    )
                })?
                .to_string(),
            None if !self.header.attribute_category_options.is_empty() => {
                let combo = &assigned[0].attribute_combo;
                let options: Vec<String> = self
                    .header
                    .attribute_category_options
                    .iter()
                    .map(|o| {
                        self.snap
                            .uid_by_code("categoryOptions", o)
                            .map(str::to_string)
                            .unwrap_or_else(|| o.clone())
                    })
                    .collect();
                data_index
                    .coc_of(combo, &options)
                    .ok_or_else(|| reject("E7615", "attributeOptionCombo", combo.clone(), format!(
                        "No attribute option combo of `{combo}` is made of the attribute category options given")))?
            }
            None => defaults::CATEGORY_OPTION_COMBO.to_string(),
        };
        let aoc_combo = data_index
            .coc_combo
            .get(&aoc_uid)
            .cloned()
            .unwrap_or_default();
        let open_sets: Vec<&DataSetRules> = assigned
            .into_iter()
            .filter(|ds| ds.attribute_combo == aoc_combo)
            .collect();
        if open_sets.is_empty() {
            return Err(reject("E7635", "attributeOptionCombo", &aoc_uid, format!(
                "Attribute option combo `{aoc_uid}` is not part of the attribute category combo of the data set")));
        }
        for option in data_index.coc_options.get(&aoc_uid).into_iter().flatten() {
            if let Some(rules) = data_index.category_options.get(option) {
                if rules.start.is_some_and(|s| period.end_date() < s)
                    || rules.end.is_some_and(|e| period.start_date() > e)
                {
                    return Err(reject(
                        "E7638",
                        "period",
                        period.iso(),
                        format!(
                            "Period `{}` is outside the dates of attribute option `{option}`",
                            period.iso()
                        ),
                    ));
                }
                if !rules.org_units.is_empty() && !self.snap.within_any(&ou_uid, &rules.org_units) {
                    return Err(reject("E7639", "orgUnit", &ou_uid, format!(
                        "Org unit `{ou_uid}` is not among the org units of attribute option `{option}`")));
                }
            }
        }

        if !self.caller.can_capture(&self.snap, &ou_uid) {
            return Err(reject(
                "E7617",
                "orgUnit",
                &ou_uid,
                format!(
                    "Org unit `{ou_uid}` is not in the hierarchy of the user `{}`",
                    self.caller.username
                ),
            ));
        }

        // The org unit must be open during the period.
        if ou.opening_date.is_some_and(|o| o > period.end_date())
            || ou.closed_date.is_some_and(|c| c < period.start_date())
        {
            return Err(reject(
                "E8031",
                "orgUnit",
                &ou_uid,
                format!(
                    "Org unit `{ou_uid}` is not open during period `{}`",
                    period.iso()
                ),
            ));
        }

        // Locks: expiry, future periods, input periods. Open in any data set is open.
        if !self.opts.force {
            let mut first: Option<Rejection> = None;
            let mut open = false;
            for ds in &open_sets {
                match self.lock_of(ds, &period) {
                    None => {
                        open = true;
                        break;
                    }
                    Some(r) if first.is_none() => first = Some(r),
                    Some(_) => {}
                }
            }
            if !open {
                if let Some(r) = first {
                    return Err(r);
                }
            }
        }

        // Approved data stays as approved, even for a superuser: unapprove first.
        if let Some(locks) = &self.approval_locks {
            let iso = period.iso();
            let approved: Vec<(String, String)> = open_sets
                .iter()
                .filter_map(|ds| {
                    let wf = ds.workflow.as_ref()?;
                    locks
                        .approved_at(wf, &iso, &ou.path, &aoc_uid)
                        .map(|unit| (ds.uid.clone(), unit))
                })
                .collect();
            if approved.len() == open_sets.len() {
                if let Some((ds, unit)) = approved.first() {
                    return Err(reject("E7642", "period", &iso, format!(
                        "Data of data set `{ds}` for period `{iso}` is approved at org unit `{unit}`; it cannot be changed until it is unapproved")));
                }
            }
        }

        let delete = self.opts.strategy == DataImportStrategy::Delete || raw.deleted == Some(true);
        let value = clean(&raw.value);
        let comment = clean(&raw.comment);
        if !delete && value.is_none() && comment.is_none() {
            return Err(reject(
                "E7618",
                "value",
                &element.uid,
                format!(
                    "Data value or comment not specified for data element `{}`",
                    element.uid
                ),
            ));
        }
        let value = match value {
            Some(v) => {
                let codes = element.option_codes.as_ref().map(|c| c as &dyn OptionCodes);
                Some(validate_value(element.value_type, &v, codes).map_err(|e| {
                    reject(
                        if e.code() == "E7621" {
                            "E7621"
                        } else {
                            "E7619"
                        },
                        "value",
                        &element.uid,
                        format!("{e} (data element `{}`, {})", element.uid, e.reason_key()),
                    )
                })?)
            }
            None => None,
        };
        if let Some(c) = &comment {
            validate_comment(c)
                .map_err(|e| reject("E7620", "comment", &element.uid, e.to_string()))?;
        }
        let stored_by = clean(&raw.stored_by).unwrap_or_else(|| self.caller.username.clone());
        if stored_by.chars().count() > 255 {
            return Err(reject(
                "E7637",
                "storedBy",
                &element.uid,
                "`storedBy` is longer than 255 characters".into(),
            ));
        }
        let insignificant_zero = value.as_deref().is_some_and(is_zero)
            && element.value_type.is_numeric()
            && !element.zero_is_significant
            && !matches!(
                element.aggregation_type,
                AggregationType::Average | AggregationType::AverageSumOrgUnit
            );

        let id_of = |uid: &str| self.snap.get(uid).map(|o| o.id);
        let (Some(coc_id), Some(aoc_id)) = (id_of(&coc_uid), id_of(&aoc_uid)) else {
            return Err(reject(
                "E7613",
                "categoryOptionCombo",
                &coc_uid,
                "Category option combo not stored".into(),
            ));
        };
        Ok(Checked {
            key: ValueKey {
                org_unit_id: ou.id,
                period_id: 0,
                data_element_id: element.id,
                category_option_combo_id: coc_id,
                attribute_option_combo_id: aoc_id,
            },
            period,
            value,
            comment,
            follow_up: raw.follow_up,
            stored_by,
            delete,
            insignificant_zero,
        })
    }

    /// Why a data set is closed for a period now, or `None` when open.
    fn lock_of(&self, ds: &DataSetRules, period: &Period) -> Option<Rejection> {
        let iso = period.iso();
        if ds.expiry_days > 0.0 && !self.caller.has(authority::EDIT_EXPIRED) {
            let end = period.end_date().midnight().assume_utc() + time::Duration::days(1);
            let expires = end + time::Duration::seconds_f64(ds.expiry_days * 86_400.0);
            if self.now > expires {
                return Some(reject(
                    "E7640",
                    "period",
                    &iso,
                    format!(
                        "Period `{iso}` of data set `{}` expired {} days after it ended",
                        ds.uid, ds.expiry_days
                    ),
                ));
            }
        }
        if let Some(pt) = ds.period_type {
            // openFuturePeriods = 0: the running period is still closed.
            let mut latest = Period::containing(pt, self.today);
            if ds.open_future_periods <= 0 {
                latest = latest.previous();
            } else {
                for _ in 1..ds.open_future_periods {
                    latest = latest.next();
                }
            }
            if period.start_date() > latest.start_date() {
                return Some(reject(
                    "E7641",
                    "period",
                    &iso,
                    format!(
                        "Period `{iso}` is after the latest open period of data set `{}` ({})",
                        ds.uid,
                        latest.iso()
                    ),
                ));
            }
        }
        if !ds.input_periods.is_empty() {
            let open = ds.input_periods.iter().any(|(p, opening, closing)| {
                *p == iso
                    && opening.is_none_or(|o| self.today >= o)
                    && closing.is_none_or(|c| self.today <= c)
            });
            if !open {
                return Some(reject(
                    "E7643",
                    "period",
                    &iso,
                    format!(
                        "Period `{iso}` is not open for data input in data set `{}`",
                        ds.uid
                    ),
                ));
            }
        }
        None
    }

    async fn tx(&mut self) -> ServerResult<&mut Box<dyn DataTx>> {
        if self.tx.is_none() {
            self.tx = Some(self.store.begin_data().await?);
        }
        Ok(self.tx.as_mut().expect("just set"))
    }

    /// Compare a batch with what is stored, count, and write.
    async fn flush(&mut self) -> ServerResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        // A batch holds few periods (a form, one): name each once.
        let mut isos: HashMap<Period, String> = HashMap::new();
        for c in &batch {
            isos.entry(c.period).or_insert_with(|| c.period.iso());
        }
        let missing: Vec<PeriodRow> = isos
            .iter()
            .filter(|(_, iso)| !self.periods.contains_key(*iso))
            .map(|(p, _)| PeriodRow::of(p))
            .collect();
        if !missing.is_empty() {
            let ids = self.tx().await?.ensure_periods(&missing).await?;
            self.periods.extend(ids);
        }
        let ids: HashMap<Period, i64> = isos
            .iter()
            .map(|(p, iso)| (*p, self.periods.get(iso).copied().unwrap_or_default()))
            .collect();
        for c in batch.iter_mut() {
            c.key.period_id = ids.get(&c.period).copied().unwrap_or_default();
        }
        let existing: HashMap<ValueKey, StoredValue> = if self.opts.skip_existing_check {
            HashMap::new()
        } else {
            let keys: Vec<ValueKey> = batch.iter().map(|c| c.key).collect();
            self.tx()
                .await?
                .existing_values(&keys)
                .await?
                .into_iter()
                .map(|v| (v.key, v))
                .collect()
        };
        // Later values for the same key see earlier ones of this payload.
        let mut current: HashMap<ValueKey, Option<StoredValue>> = HashMap::new();
        let mut writes = Vec::new();
        let mut audits = Vec::new();
        let strategy = self.opts.strategy;
        for c in batch {
            let live = current
                .get(&c.key)
                .cloned()
                .unwrap_or_else(|| existing.get(&c.key).cloned())
                .filter(|v| !v.deleted);
            let count = &mut self.summary.import_count;
            let delete_it = c.delete
                || (c.insignificant_zero
                    && live.is_some()
                    && strategy != DataImportStrategy::Create);
            if c.insignificant_zero && !delete_it {
                continue; // DHIS2 leaves insignificant zeros unstored and uncounted.
            }
            let audit = |kind: &str, previous: Option<String>, value: Option<String>| AuditWrite {
                key: c.key,
                previous_value: previous,
                value,
                audit_type: kind.to_string(),
                modified_by: Some(self.caller.username.clone()),
                created: self.now,
                channel: self.opts.channel.as_str().to_string(),
                device: self.opts.device.clone(),
            };
            let row = |value: Option<String>,
                       comment: Option<String>,
                       follow_up: bool,
                       created: OffsetDateTime,
                       deleted: bool| DataValueWrite {
                data_element_id: c.key.data_element_id,
                period_id: c.key.period_id,
                org_unit_id: c.key.org_unit_id,
                category_option_combo_id: c.key.category_option_combo_id,
                attribute_option_combo_id: c.key.attribute_option_combo_id,
                value,
                comment,
                follow_up,
                stored_by: Some(c.stored_by.clone()),
                created,
                last_updated: self.now,
                deleted,
            };
            let new_state = match (&live, delete_it) {
                (Some(old), true) => {
                    count.deleted += 1;
                    writes.push(row(
                        old.value.clone(),
                        old.comment.clone(),
                        old.follow_up,
                        old.created,
                        true,
                    ));
                    audits.push(audit("DELETE", old.value.clone(), None));
                    let mut gone = old.clone();
                    gone.deleted = true;
                    Some(gone)
                }
                (None, true) => {
                    count.ignored += 1;
                    continue;
                }
                (Some(_), false) if strategy == DataImportStrategy::Create => {
                    count.ignored += 1;
                    continue;
                }
                (Some(old), false) => {
                    let follow_up = c.follow_up.unwrap_or(old.follow_up);
                    if old.value == c.value
                        && old.comment == c.comment
                        && old.follow_up == follow_up
                    {
                        count.ignored += 1;
                        continue;
                    }
                    count.updated += 1;
                    writes.push(row(
                        c.value.clone(),
                        c.comment.clone(),
                        follow_up,
                        old.created,
                        false,
                    ));
                    audits.push(audit("UPDATE", old.value.clone(), c.value.clone()));
                    let mut next = old.clone();
                    next.value = c.value.clone();
                    next.comment = c.comment.clone();
                    next.follow_up = follow_up;
                    Some(next)
                }
                (None, false) if strategy == DataImportStrategy::Update => {
                    count.ignored += 1;
                    continue;
                }
                (None, false) => {
                    count.imported += 1;
                    let follow_up = c.follow_up.unwrap_or(false);
                    writes.push(row(
                        c.value.clone(),
                        c.comment.clone(),
                        follow_up,
                        self.now,
                        false,
                    ));
                    audits.push(audit("CREATE", None, c.value.clone()));
                    Some(StoredValue {
                        key: c.key,
                        period_iso: isos.get(&c.period).cloned().unwrap_or_default(),
                        value: c.value.clone(),
                        comment: c.comment.clone(),
                        follow_up,
                        stored_by: Some(c.stored_by.clone()),
                        created: self.now,
                        last_updated: self.now,
                        deleted: false,
                    })
                }
            };
            current.insert(c.key, new_state);
        }
        if !self.opts.dry_run && !writes.is_empty() {
            // A payload may name one key twice; one statement may touch a row
            // once (PostgreSQL refuses more), so the last write wins here.
            let mut last: HashMap<ValueKey, usize> = HashMap::with_capacity(writes.len());
            for (i, w) in writes.iter().enumerate() {
                last.insert(w.key(), i);
            }
            if last.len() < writes.len() {
                let keep: std::collections::HashSet<usize> = last.into_values().collect();
                writes = writes
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| keep.contains(i))
                    .map(|(_, w)| w)
                    .collect();
            }
            let tx = self.tx().await?;
            tx.put_values(&writes).await?;
            tx.put_audits(&audits).await?;
        }
        Ok(())
    }

    /// Flush, register completion, commit; the summary to answer with.
    pub async fn finish(mut self) -> ServerResult<ImportSummary> {
        let summary = self.complete().await?;
        if let Some(tx) = self.tx.take() {
            if self.opts.dry_run {
                drop(tx);
            } else {
                tx.commit().await?;
            }
        }
        Ok(summary)
    }

    /// The keys of the values waiting to be written, their periods not yet
    /// resolved to ids (`period_id` 0), each with its period.
    pub fn waiting_keys(&self) -> impl Iterator<Item = (ValueKey, &Period)> {
        self.batch.iter().map(|c| (c.key, &c.period))
    }

    /// A copy of an importer that has written nothing yet, so the same
    /// values can be written again should the first attempt's transaction
    /// be lost; `None` once it holds a transaction.
    pub fn duplicate(&self) -> Option<DataImporter> {
        if self.tx.is_some() {
            return None;
        }
        Some(DataImporter {
            snap: self.snap.clone(),
            store: self.store.clone(),
            caller: self.caller.clone(),
            opts: self.opts.clone(),
            summary: self.summary.clone(),
            header: self.header.clone(),
            headers: self.headers.clone(),
            aborted: self.aborted,
            index: self.index,
            batch: self.batch.clone(),
            tx: None,
            periods: self.periods.clone(),
            now: self.now,
            today: self.today,
            approval_locks: self.approval_locks.clone(),
            deferred: self.deferred,
            outer: self.outer,
        })
    }

    /// Hold every value until [`DataImporter::finish_in`]: nothing is
    /// written, and no transaction begun, before the caller's.
    pub fn defer_writes(&mut self) {
        self.deferred = true;
    }

    /// Write in the caller's transaction (`slot`, which must hold one) and
    /// leave it uncommitted, so the caller can add its own statements to
    /// the same commit. What the import drops (atomic with rejections, dry
    /// run) is undone to a savepoint; the caller's earlier work stays. On an
    /// error the caller undoes to a savepoint of its own (which also closes
    /// any the import left open).
    pub async fn finish_in(
        mut self,
        slot: &mut Option<Box<dyn DataTx>>,
    ) -> ServerResult<ImportSummary> {
        if self.tx.is_some() || slot.is_none() {
            return Err(crate::error::ServerError::Internal(
                "finish_in needs the caller's transaction and an importer that wrote nothing"
                    .into(),
            ));
        }
        std::mem::swap(&mut self.tx, slot);
        self.outer = true;
        let result = self.finish_outer().await;
        std::mem::swap(&mut self.tx, slot);
        result
    }

    async fn finish_outer(&mut self) -> ServerResult<ImportSummary> {
        // Only an atomic import or a dry run can drop writes made (values
        // wait for this call, so an aborted one has written nothing): the
        // others spare the savepoint's statements.
        let undoable = self.opts.atomic || self.opts.dry_run;
        if undoable {
            self.tx().await?.savepoint(IMPORT_SAVEPOINT).await?;
        }
        let summary = self.complete().await?;
        if undoable {
            let dry_run = self.opts.dry_run;
            let tx = self.tx().await?;
            if dry_run {
                tx.rollback_to(IMPORT_SAVEPOINT).await?;
            } else {
                tx.release(IMPORT_SAVEPOINT).await?;
            }
        }
        Ok(summary)
    }

    /// Drop what this import wrote: its own transaction, or the caller's
    /// back to the import's savepoint.
    async fn discard(&mut self) -> ServerResult<()> {
        if !self.outer {
            self.tx = None;
        } else if self.opts.atomic || self.opts.dry_run {
            if let Some(tx) = self.tx.as_mut() {
                tx.rollback_to(IMPORT_SAVEPOINT).await?;
                tx.savepoint(IMPORT_SAVEPOINT).await?;
            }
        }
        Ok(())
    }

    /// Flush and register completion, uncommitted.
    async fn complete(&mut self) -> ServerResult<ImportSummary> {
        if self.aborted {
            self.discard().await?;
            self.summary.import_count = Default::default();
            self.summary.rejected_indexes.clear();
            return Ok(self.summary.clone());
        }
        self.flush().await?;
        if self.opts.atomic
            && self.summary.import_count.ignored > 0
            && !self.summary.conflicts.is_empty()
        {
            // All or nothing: drop the writes, report everything ignored.
            self.discard().await?;
            let total = self.index as u64;
            self.summary.import_count = hisa_shared::datavalue::ImportCount {
                ignored: total,
                ..Default::default()
            };
            self.summary.status = SummaryStatus::Error;
            self.summary.description =
                "Import was atomic and some values were rejected: nothing was imported".into();
            return Ok(self.summary.clone());
        }
        for header in std::mem::take(&mut self.headers) {
            self.register_completion(&header).await?;
        }
        Ok(self.summary.clone())
    }

    async fn register_completion(&mut self, header: &SetLevel) -> ServerResult<()> {
        let (Some(ds), Some(pe), Some(ou), Some(date)) = (
            clean(&header.data_set),
            clean(&header.period),
            clean(&header.org_unit),
            clean(&header.complete_date),
        ) else {
            return Ok(());
        };
        if date.eq_ignore_ascii_case("false") {
            return Ok(());
        }
        let completed_at = if date.eq_ignore_ascii_case("true") {
            self.now
        } else {
            match hisa_shared::metadata::parse_date(&date) {
                // A future date is clamped to today, as DHIS2 does.
                Some(d) if d <= self.today => d.midnight().assume_utc(),
                Some(_) => self.now,
                None => {
                    self.summary.add_conflict(
                        None,
                        Conflict {
                            object: date.clone(),
                            objects: Default::default(),
                            value: format!("completeDate `{date}` is not a date"),
                            error_code: "E7600".into(),
                            property: Some("completeDate".into()),
                            indexes: vec![],
                        },
                    );
                    return Ok(());
                }
            }
        };
        let Some(ds_uid) = self
            .resolve("dataSets", &self.opts.data_set_scheme, &ds)
            .map(str::to_string)
        else {
            return Ok(());
        };
        let Some(ou_uid) = self
            .resolve("organisationUnits", &self.opts.org_unit_scheme, &ou)
            .map(str::to_string)
        else {
            return Ok(());
        };
        if !self.caller.can_capture(&self.snap, &ou_uid) {
            return Ok(());
        }
        let Ok(period) = Period::parse(&pe) else {
            return Ok(());
        };
        let aoc = clean(&header.attribute_option_combo)
            .and_then(|a| {
                self.resolve(
                    "categoryOptionCombos",
                    &self.opts.category_option_combo_scheme,
                    &a,
                )
                .map(str::to_string)
            })
            .unwrap_or_else(|| defaults::CATEGORY_OPTION_COMBO.to_string());
        let ids = (
            self.snap.get(&ds_uid).map(|o| o.id),
            self.snap.get(&ou_uid).map(|o| o.id),
            self.snap.get(&aoc).map(|o| o.id),
        );
        let (Some(ds_id), Some(ou_id), Some(aoc_id)) = ids else {
            return Ok(());
        };
        // An approved form cannot be completed again (nor its values changed).
        let workflow = self
            .snap
            .data_index()
            .data_sets
            .get(&ds_uid)
            .and_then(|d| d.workflow.clone());
        if let (Some(wf), Some(node)) = (workflow, self.snap.org_unit(&ou_uid)) {
            if self.approval_locks.is_none() {
                let rows = self.store.approvals().all_approvals().await?;
                self.approval_locks = Some(crate::approval::ApprovalLocks::new(rows));
            }
            let approved = self
                .approval_locks
                .as_ref()
                .and_then(|l| l.approved_at(&wf, &period.iso(), &node.path, &aoc));
            if let Some(unit) = approved {
                self.summary.reject(
                    None,
                    Conflict {
                        object: ds_uid.clone(),
                        objects: Default::default(),
                        value: format!(
                            "Data set `{ds_uid}` for period `{}` is approved at org unit `{unit}`; it cannot be completed again",
                            period.iso()
                        ),
                        error_code: "E7642".into(),
                        property: Some("completeDate".into()),
                        indexes: vec![],
                    },
                );
                return Ok(());
            }
        }
        let row = PeriodRow::of(&period);
        let dry_run = self.opts.dry_run;
        let channel = self.opts.channel.as_str();
        let device = self.opts.device.clone();
        let username = self.caller.username.clone();
        let period_id = match self.periods.get(&row.iso) {
            Some(id) => *id,
            None => {
                let ids = self.tx().await?.ensure_periods(&[row]).await?;
                let (iso, id) = ids.into_iter().next().ok_or_else(|| {
                    crate::error::ServerError::Internal("a period was not stored".into())
                })?;
                self.periods.insert(iso, id);
                id
            }
        };
        let tx = self.tx().await?;
        let completion = CompletionWrite {
            data_set_id: ds_id,
            period_id,
            org_unit_id: ou_id,
            attribute_option_combo_id: aoc_id,
            completed_by: Some(username),
            completed_at,
        };
        if !dry_run {
            tx.put_completion(&completion, true).await?;
            tx.audit_completion(&completion, "CREATE", channel, device.as_deref())
                .await?;
        }
        self.summary.data_set_complete = completed_at.date().to_string();
        Ok(())
    }
}
