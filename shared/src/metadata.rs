//! Typed views of DHIS2 metadata, with DHIS2's JSON field names.
//!
//! The stored form of a metadata object is its DHIS2 JSON (so that fields
//! Hisa does not model survive a round trip); these structs are what the
//! rest of Hisa reads from it. Deserialization is lenient about what it does
//! not need and strict about the types of what it does.

use serde::{Deserialize, Serialize};
use time::Date;

use crate::period::PeriodType;
use crate::value_type::ValueType;

/// DHIS2's built-in `default` objects: the same UIDs in every database.
pub mod defaults {
    pub const CATEGORY_OPTION: &str = "xYerKDKCefk";
    pub const CATEGORY: &str = "GLevLNI9wkl";
    pub const CATEGORY_COMBO: &str = "bjDvmb4bfuf";
    pub const CATEGORY_OPTION_COMBO: &str = "HllvX50cXC0";

    /// The four default objects as a metadata payload, in DHIS2's shape.
    pub fn payload() -> serde_json::Value {
        serde_json::json!({
            "categoryOptions": [{"id": CATEGORY_OPTION, "name": "default", "shortName": "default", "code": "default"}],
            "categories": [{"id": CATEGORY, "name": "default", "shortName": "default", "code": "default",
                "dataDimensionType": "DISAGGREGATION", "dataDimension": false,
                "categoryOptions": [{"id": CATEGORY_OPTION}]}],
            "categoryCombos": [{"id": CATEGORY_COMBO, "name": "default", "code": "default",
                "dataDimensionType": "DISAGGREGATION", "skipTotal": false,
                "categories": [{"id": CATEGORY}]}],
            "categoryOptionCombos": [{"id": CATEGORY_OPTION_COMBO, "name": "default", "code": "default",
                "ignoreApproval": false,
                "categoryCombo": {"id": CATEGORY_COMBO},
                "categoryOptions": [{"id": CATEGORY_OPTION}]}]
        })
    }

    pub fn is_default(uid: &str) -> bool {
        matches!(
            uid,
            CATEGORY_OPTION | CATEGORY | CATEGORY_COMBO | CATEGORY_OPTION_COMBO
        )
    }
}

/// A reference to another object: `{"id": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ref {
    pub id: String,
}

impl Ref {
    pub fn new(id: impl Into<String>) -> Ref {
        Ref { id: id.into() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrgUnit {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub parent: Option<Ref>,
    pub path: Option<String>,
    pub level: Option<u32>,
    pub opening_date: Option<String>,
    pub closed_date: Option<String>,
    pub geometry: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrgUnitLevel {
    pub id: String,
    pub name: String,
    pub level: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrgUnitGroup {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub organisation_units: Vec<Ref>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DomainType {
    #[default]
    Aggregate,
    Tracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AggregationType {
    #[default]
    Sum,
    Average,
    AverageSumOrgUnit,
    Last,
    LastAverageOrgUnit,
    LastLastOrgUnit,
    LastInPeriod,
    LastInPeriodAverageOrgUnit,
    First,
    FirstAverageOrgUnit,
    FirstFirstOrgUnit,
    Count,
    Stddev,
    Variance,
    Min,
    Max,
    MinSumOrgUnit,
    MaxSumOrgUnit,
    None,
    Custom,
    Default,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataElement {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub form_name: Option<String>,
    pub value_type: Option<ValueType>,
    pub domain_type: DomainType,
    pub aggregation_type: AggregationType,
    pub zero_is_significant: bool,
    pub category_combo: Option<Ref>,
    pub option_set: Option<Ref>,
    pub comment_option_set: Option<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OptionSet {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub value_type: Option<ValueType>,
    pub options: Vec<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetadataOption {
    pub id: String,
    pub code: String,
    pub name: String,
    pub option_set: Option<Ref>,
    pub sort_order: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataDimensionType {
    #[default]
    Disaggregation,
    Attribute,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CategoryOption {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub organisation_units: Vec<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Category {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub data_dimension_type: DataDimensionType,
    pub category_options: Vec<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CategoryCombo {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub data_dimension_type: DataDimensionType,
    pub categories: Vec<Ref>,
    pub skip_total: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CategoryOptionCombo {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub category_combo: Option<Ref>,
    pub category_options: Vec<Ref>,
    pub ignore_approval: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataSetElement {
    pub data_element: Option<Ref>,
    pub category_combo: Option<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataInputPeriod {
    pub period: Option<Ref>,
    pub opening_date: Option<String>,
    pub closing_date: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataSet {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub period_type: Option<PeriodType>,
    pub category_combo: Option<Ref>,
    pub data_set_elements: Vec<DataSetElement>,
    pub organisation_units: Vec<Ref>,
    pub expiry_days: f64,
    pub open_future_periods: i32,
    pub timely_days: f64,
    pub data_input_periods: Vec<DataInputPeriod>,
    pub workflow: Option<Ref>,
    pub sections: Vec<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Section {
    pub id: String,
    pub name: String,
    pub data_set: Option<Ref>,
    pub sort_order: Option<i64>,
    pub data_elements: Vec<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IndicatorType {
    pub id: String,
    pub name: String,
    pub factor: f64,
    pub number: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Indicator {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub numerator: String,
    pub denominator: String,
    pub indicator_type: Option<Ref>,
    pub annualized: bool,
    pub decimals: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Constant {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValidationSide {
    pub expression: String,
    pub description: Option<String>,
    pub missing_value_strategy: Option<String>,
    pub sliding_window: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValidationRule {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub instruction: Option<String>,
    pub importance: Option<String>,
    pub period_type: Option<PeriodType>,
    pub operator: String,
    pub left_side: ValidationSide,
    pub right_side: ValidationSide,
    pub organisation_unit_levels: Vec<u32>,
    pub skip_form_validation: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProgramStageDataElement {
    pub data_element: Option<Ref>,
    pub compulsory: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Program {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub program_type: Option<String>,
    pub organisation_units: Vec<Ref>,
    pub program_stages: Vec<Ref>,
    pub category_combo: Option<Ref>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProgramStage {
    pub id: String,
    pub name: String,
    pub program: Option<Ref>,
    pub program_stage_data_elements: Vec<ProgramStageDataElement>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserRole {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub authorities: Vec<String>,
}

/// Parse a DHIS2 date (`yyyy-MM-dd`, optionally followed by a time part as in
/// metadata exports: `1990-01-01T00:00:00.000`).
pub fn parse_date(value: &str) -> Option<Date> {
    let day = value.get(..10)?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(day, format).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_dhis2_data_element_and_ignores_unknown_fields() {
        let de: DataElement = serde_json::from_value(json!({
            "id": "ooksG6YB8Eq", "name": "x", "valueType": "INTEGER_ZERO_OR_POSITIVE",
            "domainType": "AGGREGATE", "aggregationType": "AVERAGE_SUM_ORG_UNIT",
            "categoryCombo": {"id": "bjDvmb4bfuf"}, "sharing": {"public": "r-------"}
        }))
        .unwrap();
        assert_eq!(de.aggregation_type, AggregationType::AverageSumOrgUnit);
        assert_eq!(de.category_combo, Some(Ref::new("bjDvmb4bfuf")));
    }

    #[test]
    fn wrong_types_are_errors() {
        let r: Result<DataSet, _> = serde_json::from_value(json!({"periodType": "Fortnightly"}));
        assert!(r.is_err());
        let r: Result<DataSet, _> = serde_json::from_value(json!({"expiryDays": "ten"}));
        assert!(r.is_err());
    }

    #[test]
    fn dates_with_and_without_time() {
        assert!(parse_date("1990-01-01").is_some());
        assert!(parse_date("1990-01-01T00:00:00.000").is_some());
        assert!(parse_date("1990-13-01").is_none());
        assert!(parse_date("x").is_none());
    }
}
