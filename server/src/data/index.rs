//! Data entry rules read off the metadata once per snapshot: which data sets
//! hold an element, where and when a data set may be entered, which option
//! combos belong to which combo. Built on first use, shared by every import
//! until metadata changes.

use std::collections::{HashMap, HashSet};

use hisa_shared::metadata::{
    defaults, parse_date, AggregationType, CategoryOption, CategoryOptionCombo, DataElement,
    DataSet, OptionSet,
};
use hisa_shared::period::PeriodType;
use hisa_shared::value_type::ValueType;
use serde_json::Value;
use time::Date;

use crate::metadata::Snapshot;

#[derive(Debug, Clone)]
pub struct DataSetRules {
    pub uid: String,
    pub id: i64,
    pub period_type: Option<PeriodType>,
    pub elements: HashSet<String>,
    /// A data set may disaggregate an element by another combo than its own.
    pub element_combos: HashMap<String, String>,
    pub org_units: HashSet<String>,
    pub attribute_combo: String,
    pub expiry_days: f64,
    pub open_future_periods: i32,
    pub timely_days: f64,
    /// `(period ISO, opening, closing)`; empty means any period may be entered.
    pub input_periods: Vec<(String, Option<Date>, Option<Date>)>,
    /// The approval workflow whose approvals lock this data set's data.
    pub workflow: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ElementRules {
    pub uid: String,
    pub id: i64,
    pub value_type: ValueType,
    pub category_combo: String,
    pub option_codes: Option<HashSet<String>>,
    pub zero_is_significant: bool,
    pub aggregation_type: AggregationType,
    pub data_sets: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OptionRules {
    pub start: Option<Date>,
    pub end: Option<Date>,
    pub org_units: Vec<String>,
}

#[derive(Debug, Default)]
pub struct DataIndex {
    pub data_sets: HashMap<String, DataSetRules>,
    pub elements: HashMap<String, ElementRules>,
    /// Category option combo → its category combo.
    pub coc_combo: HashMap<String, String>,
    /// Category option combo → its category options.
    pub coc_options: HashMap<String, Vec<String>>,
    pub category_options: HashMap<String, OptionRules>,
}

fn ref_of(v: &Option<hisa_shared::metadata::Ref>) -> String {
    v.as_ref()
        .map(|r| r.id.clone())
        .unwrap_or_else(|| defaults::CATEGORY_COMBO.to_string())
}

impl DataIndex {
    pub fn build(snap: &Snapshot) -> DataIndex {
        let mut index = DataIndex::default();
        let typed = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_string);
        for body in snap.all_of("categoryOptionCombos") {
            let Ok(coc) = CategoryOptionCombo::deserialize_from(body) else {
                continue;
            };
            index
                .coc_combo
                .insert(coc.id.clone(), ref_of(&coc.category_combo));
            index.coc_options.insert(
                coc.id.clone(),
                coc.category_options.iter().map(|r| r.id.clone()).collect(),
            );
        }
        for body in snap.all_of("categoryOptions") {
            let Ok(o) = CategoryOption::deserialize_from(body) else {
                continue;
            };
            index.category_options.insert(
                o.id.clone(),
                OptionRules {
                    start: o.start_date.as_deref().and_then(parse_date),
                    end: o.end_date.as_deref().and_then(parse_date),
                    org_units: o.organisation_units.iter().map(|r| r.id.clone()).collect(),
                },
            );
        }
        for body in snap.all_of("dataSets") {
            let Ok(ds) = DataSet::deserialize_from(body) else {
                continue;
            };
            let Some(id) = typed(body).and_then(|u| snap.get(&u).map(|o| o.id)) else {
                continue;
            };
            let mut elements = HashSet::new();
            let mut element_combos = HashMap::new();
            for dse in &ds.data_set_elements {
                if let Some(de) = &dse.data_element {
                    elements.insert(de.id.clone());
                    if let Some(cc) = &dse.category_combo {
                        element_combos.insert(de.id.clone(), cc.id.clone());
                    }
                }
            }
            let input_periods = ds
                .data_input_periods
                .iter()
                .filter_map(|p| {
                    let iso = p.period.as_ref()?.id.clone();
                    Some((
                        iso,
                        p.opening_date.as_deref().and_then(parse_date),
                        p.closing_date.as_deref().and_then(parse_date),
                    ))
                })
                .collect();
            index.data_sets.insert(
                ds.id.clone(),
                DataSetRules {
                    uid: ds.id.clone(),
                    id,
                    period_type: ds.period_type,
                    elements,
                    element_combos,
                    org_units: ds.organisation_units.iter().map(|r| r.id.clone()).collect(),
                    attribute_combo: ref_of(&ds.category_combo),
                    expiry_days: ds.expiry_days,
                    open_future_periods: ds.open_future_periods,
                    timely_days: ds.timely_days,
                    input_periods,
                    workflow: body
                        .get("workflow")
                        .and_then(|w| w.get("id"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                },
            );
        }
        let mut option_sets: HashMap<String, HashSet<String>> = HashMap::new();
        for body in snap.all_of("optionSets") {
            let Ok(os) = OptionSet::deserialize_from(body) else {
                continue;
            };
            let codes = os
                .options
                .iter()
                .filter_map(|r| snap.get_of("options", &r.id))
                .filter_map(|o| o.get("code").and_then(Value::as_str).map(str::to_string))
                .collect();
            option_sets.insert(os.id, codes);
        }
        for body in snap.all_of("dataElements") {
            let Ok(de) = DataElement::deserialize_from(body) else {
                continue;
            };
            let Some(obj) = snap.get(&de.id) else {
                continue;
            };
            let mut data_sets: Vec<String> = index
                .data_sets
                .values()
                .filter(|ds| ds.elements.contains(&de.id))
                .map(|ds| ds.uid.clone())
                .collect();
            data_sets.sort();
            index.elements.insert(
                de.id.clone(),
                ElementRules {
                    uid: de.id.clone(),
                    id: obj.id,
                    value_type: de.value_type.unwrap_or(ValueType::Text),
                    category_combo: ref_of(&de.category_combo),
                    option_codes: de
                        .option_set
                        .as_ref()
                        .and_then(|r| option_sets.get(&r.id).cloned()),
                    zero_is_significant: de.zero_is_significant,
                    aggregation_type: de.aggregation_type,
                    data_sets,
                },
            );
        }
        index
    }

    /// The combo an element is disaggregated by in a data set.
    pub fn combo_in(&self, element: &ElementRules, data_set: Option<&DataSetRules>) -> String {
        data_set
            .and_then(|ds| ds.element_combos.get(&element.uid).cloned())
            .unwrap_or_else(|| element.category_combo.clone())
    }

    /// The attribute option combo of `combo` made of exactly `options`.
    pub fn coc_of(&self, combo: &str, options: &[String]) -> Option<String> {
        let mut wanted: Vec<&String> = options.iter().collect();
        wanted.sort();
        self.coc_options.iter().find_map(|(coc, opts)| {
            if self.coc_combo.get(coc).map(String::as_str) != Some(combo) {
                return None;
            }
            let mut have: Vec<&String> = opts.iter().collect();
            have.sort();
            (have == wanted).then(|| coc.clone())
        })
    }
}

/// Lenient typed reads: a shape problem makes the object unusable for data
/// entry, never a panic.
trait DeserializeFrom: Sized {
    fn deserialize_from(v: &Value) -> Result<Self, serde_json::Error>;
}

impl<T: serde::de::DeserializeOwned> DeserializeFrom for T {
    fn deserialize_from(v: &Value) -> Result<Self, serde_json::Error> {
        T::deserialize(v)
    }
}
