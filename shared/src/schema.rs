//! What Hisa knows about each DHIS2 metadata type: its plural name (the key
//! in a metadata payload and the `/api/{resource}` path), its Java class name
//! (DHIS2 clients read `klass` in import reports), required properties, and
//! which properties reference which other types.
//!
//! Types not listed here (dashboards, visualizations, maps, predictors …) are
//! still imported, stored and exported unchanged: Hisa keeps what it does not
//! model rather than failing a country's package.

/// One reference property. `path` uses `[]` for "each element of an array":
/// `organisationUnits[]` is an array of `{id}`; `dataSetElements[].dataElement`
/// is an array of embedded objects each holding a `{id}` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefField {
    pub path: &'static str,
    pub target: &'static str,
    /// An unresolved soft reference is dropped with a warning instead of
    /// failing the object. Used where dropping only ever takes rights away
    /// (a user's roles and org units): DHIS2 packages ship an owner user
    /// whose roles are not in the package.
    pub soft: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    pub plural: &'static str,
    pub singular: &'static str,
    pub klass: &'static str,
    pub required: &'static [&'static str],
    pub references: &'static [RefField],
    /// Codes of this type are unique among live objects (DHIS2's E5003).
    pub code_unique: bool,
}

const fn r(path: &'static str, target: &'static str) -> RefField {
    RefField {
        path,
        target,
        soft: false,
    }
}

const fn soft(path: &'static str, target: &'static str) -> RefField {
    RefField {
        path,
        target,
        soft: true,
    }
}

/// Import order: a type comes after every type it references, so that a
/// partial failure report reads naturally and the org unit tree is known
/// before anything is assigned to it.
pub static SCHEMAS: &[Schema] = &[
    Schema {
        plural: "organisationUnitLevels",
        singular: "organisationUnitLevel",
        klass: "org.hisp.dhis.organisationunit.OrganisationUnitLevel",
        required: &["name", "level"],
        references: &[],
        code_unique: true,
    },
    Schema {
        plural: "organisationUnits",
        singular: "organisationUnit",
        klass: "org.hisp.dhis.organisationunit.OrganisationUnit",
        required: &["name", "shortName", "openingDate"],
        references: &[r("parent", "organisationUnits")],
        code_unique: true,
    },
    Schema {
        plural: "organisationUnitGroups",
        singular: "organisationUnitGroup",
        klass: "org.hisp.dhis.organisationunit.OrganisationUnitGroup",
        required: &["name"],
        references: &[r("organisationUnits[]", "organisationUnits")],
        code_unique: true,
    },
    Schema {
        plural: "organisationUnitGroupSets",
        singular: "organisationUnitGroupSet",
        klass: "org.hisp.dhis.organisationunit.OrganisationUnitGroupSet",
        required: &["name"],
        references: &[r("organisationUnitGroups[]", "organisationUnitGroups")],
        code_unique: true,
    },
    Schema {
        plural: "categoryOptions",
        singular: "categoryOption",
        klass: "org.hisp.dhis.category.CategoryOption",
        required: &["name"],
        references: &[r("organisationUnits[]", "organisationUnits")],
        code_unique: true,
    },
    Schema {
        plural: "categories",
        singular: "category",
        klass: "org.hisp.dhis.category.Category",
        required: &["name"],
        references: &[r("categoryOptions[]", "categoryOptions")],
        code_unique: true,
    },
    Schema {
        plural: "categoryCombos",
        singular: "categoryCombo",
        klass: "org.hisp.dhis.category.CategoryCombo",
        required: &["name"],
        references: &[r("categories[]", "categories")],
        code_unique: true,
    },
    Schema {
        plural: "categoryOptionCombos",
        singular: "categoryOptionCombo",
        klass: "org.hisp.dhis.category.CategoryOptionCombo",
        required: &[],
        references: &[
            r("categoryCombo", "categoryCombos"),
            r("categoryOptions[]", "categoryOptions"),
        ],
        code_unique: true,
    },
    Schema {
        plural: "optionSets",
        singular: "optionSet",
        klass: "org.hisp.dhis.option.OptionSet",
        required: &["name", "valueType"],
        references: &[r("options[]", "options")],
        code_unique: true,
    },
    Schema {
        plural: "options",
        singular: "option",
        klass: "org.hisp.dhis.option.Option",
        required: &["name", "code"],
        references: &[r("optionSet", "optionSets")],
        code_unique: false,
    },
    Schema {
        plural: "dataElements",
        singular: "dataElement",
        klass: "org.hisp.dhis.dataelement.DataElement",
        required: &[
            "name",
            "shortName",
            "valueType",
            "domainType",
            "aggregationType",
        ],
        references: &[
            r("categoryCombo", "categoryCombos"),
            r("optionSet", "optionSets"),
            r("commentOptionSet", "optionSets"),
        ],
        code_unique: true,
    },
    Schema {
        plural: "dataElementGroups",
        singular: "dataElementGroup",
        klass: "org.hisp.dhis.dataelement.DataElementGroup",
        required: &["name"],
        references: &[r("dataElements[]", "dataElements")],
        code_unique: true,
    },
    Schema {
        plural: "indicatorTypes",
        singular: "indicatorType",
        klass: "org.hisp.dhis.indicator.IndicatorType",
        required: &["name", "factor"],
        references: &[],
        code_unique: true,
    },
    Schema {
        plural: "indicators",
        singular: "indicator",
        klass: "org.hisp.dhis.indicator.Indicator",
        required: &[
            "name",
            "shortName",
            "numerator",
            "denominator",
            "indicatorType",
        ],
        references: &[r("indicatorType", "indicatorTypes")],
        code_unique: true,
    },
    Schema {
        plural: "indicatorGroups",
        singular: "indicatorGroup",
        klass: "org.hisp.dhis.indicator.IndicatorGroup",
        required: &["name"],
        references: &[r("indicators[]", "indicators")],
        code_unique: true,
    },
    Schema {
        plural: "dataApprovalLevels",
        singular: "dataApprovalLevel",
        klass: "org.hisp.dhis.dataapproval.DataApprovalLevel",
        required: &["name", "orgUnitLevel"],
        references: &[],
        code_unique: true,
    },
    Schema {
        plural: "dataApprovalWorkflows",
        singular: "dataApprovalWorkflow",
        klass: "org.hisp.dhis.dataapproval.DataApprovalWorkflow",
        required: &["name", "periodType"],
        references: &[r("dataApprovalLevels[]", "dataApprovalLevels")],
        code_unique: true,
    },
    Schema {
        plural: "dataSets",
        singular: "dataSet",
        klass: "org.hisp.dhis.dataset.DataSet",
        required: &["name", "periodType"],
        references: &[
            r("categoryCombo", "categoryCombos"),
            r("dataSetElements[].dataElement", "dataElements"),
            r("dataSetElements[].categoryCombo", "categoryCombos"),
            r("organisationUnits[]", "organisationUnits"),
            r("indicators[]", "indicators"),
            r("workflow", "dataApprovalWorkflows"),
            r(
                "compulsoryDataElementOperands[].dataElement",
                "dataElements",
            ),
        ],
        code_unique: true,
    },
    Schema {
        plural: "sections",
        singular: "section",
        klass: "org.hisp.dhis.dataset.Section",
        required: &["name", "dataSet"],
        references: &[
            r("dataSet", "dataSets"),
            r("dataElements[]", "dataElements"),
            r("indicators[]", "indicators"),
        ],
        code_unique: false,
    },
    Schema {
        plural: "constants",
        singular: "constant",
        klass: "org.hisp.dhis.constant.Constant",
        required: &["name", "value"],
        references: &[],
        code_unique: true,
    },
    Schema {
        plural: "validationRules",
        singular: "validationRule",
        klass: "org.hisp.dhis.validation.ValidationRule",
        required: &["name", "periodType", "operator", "leftSide", "rightSide"],
        references: &[],
        code_unique: true,
    },
    Schema {
        plural: "validationRuleGroups",
        singular: "validationRuleGroup",
        klass: "org.hisp.dhis.validation.ValidationRuleGroup",
        required: &["name"],
        references: &[r("validationRules[]", "validationRules")],
        code_unique: true,
    },
    Schema {
        plural: "programs",
        singular: "program",
        klass: "org.hisp.dhis.program.Program",
        required: &["name"],
        references: &[
            r("organisationUnits[]", "organisationUnits"),
            r("categoryCombo", "categoryCombos"),
        ],
        code_unique: true,
    },
    Schema {
        plural: "programStages",
        singular: "programStage",
        klass: "org.hisp.dhis.program.ProgramStage",
        required: &["name", "program"],
        references: &[
            r("program", "programs"),
            r("programStageDataElements[].dataElement", "dataElements"),
        ],
        code_unique: true,
    },
    Schema {
        plural: "smsCommands",
        singular: "smsCommand",
        klass: "org.hisp.dhis.sms.command.SMSCommand",
        required: &["name", "parserType"],
        references: &[
            r("dataset", "dataSets"),
            r("program", "programs"),
            r("programStage", "programStages"),
            r("smsCodes[].dataElement", "dataElements"),
        ],
        code_unique: false,
    },
    Schema {
        plural: "userRoles",
        singular: "userRole",
        klass: "org.hisp.dhis.user.UserRole",
        required: &["name"],
        references: &[],
        code_unique: true,
    },
    Schema {
        plural: "users",
        singular: "user",
        klass: "org.hisp.dhis.user.User",
        required: &[],
        references: &[
            soft("userRoles[]", "userRoles"),
            soft("organisationUnits[]", "organisationUnits"),
            soft("dataViewOrganisationUnits[]", "organisationUnits"),
            soft("teiSearchOrganisationUnits[]", "organisationUnits"),
        ],
        code_unique: true,
    },
];

/// Schema of a modeled type by its plural name.
pub fn schema(plural: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.plural == plural)
}

/// Position of a type in [`SCHEMAS`]; unmodeled types sort after all modeled ones.
pub fn import_rank(plural: &str) -> usize {
    SCHEMAS
        .iter()
        .position(|s| s.plural == plural)
        .unwrap_or(SCHEMAS.len())
}

/// DHIS2's class name for a type, modeled or not: clients read `klass`.
pub fn klass(plural: &str) -> String {
    if let Some(s) = schema(plural) {
        return s.klass.to_string();
    }
    let singular = singular_of(plural);
    let mut class = singular.clone();
    if let Some(first) = class.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    format!("org.hisp.dhis.{}.{}", singular.to_ascii_lowercase(), class)
}

/// The singular name of a type: `dataElements` → `dataElement`.
pub fn singular_of(plural: &str) -> String {
    if let Some(s) = schema(plural) {
        return s.singular.to_string();
    }
    if let Some(stem) = plural.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = plural.strip_suffix('s') {
        stem.to_string()
    } else {
        plural.to_string()
    }
}

/// Visit every reference id found at `path` in `obj`.
pub fn each_reference<'a>(
    obj: &'a serde_json::Value,
    path: &str,
    f: &mut dyn FnMut(&'a serde_json::Value),
) {
    fn walk<'a>(
        value: &'a serde_json::Value,
        segments: &[&str],
        f: &mut dyn FnMut(&'a serde_json::Value),
    ) {
        let Some((head, rest)) = segments.split_first() else {
            // The end of the path: a `{id}` object or a bare id string.
            if !value.is_null() {
                f(value);
            }
            return;
        };
        let (name, each) = match head.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*head, false),
        };
        let Some(child) = value.get(name) else { return };
        if each {
            if let Some(items) = child.as_array() {
                for item in items {
                    walk(item, rest, f);
                }
            }
        } else {
            walk(child, rest, f);
        }
    }
    let segments: Vec<&str> = path.split('.').collect();
    walk(obj, &segments, f);
}

/// The id inside a reference value: `{"id": "…"}` or a bare string.
pub fn reference_id(value: &serde_json::Value) -> Option<&str> {
    match value {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Object(map) => map.get("id").and_then(|v| v.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_reference_target_is_modeled() {
        for s in SCHEMAS {
            for r in s.references {
                assert!(schema(r.target).is_some(), "{} → {}", s.plural, r.target);
            }
        }
    }

    #[test]
    fn walks_nested_reference_paths() {
        let ds = json!({"dataSetElements": [
            {"dataElement": {"id": "a"}}, {"dataElement": {"id": "b"}, "categoryCombo": {"id": "c"}}
        ], "categoryCombo": {"id": "d"}});
        let mut ids = vec![];
        each_reference(&ds, "dataSetElements[].dataElement", &mut |v| {
            ids.push(reference_id(v).unwrap().to_string())
        });
        assert_eq!(ids, ["a", "b"]);
        let mut ids = vec![];
        each_reference(&ds, "categoryCombo", &mut |v| {
            ids.push(reference_id(v).unwrap().to_string())
        });
        assert_eq!(ids, ["d"]);
    }

    #[test]
    fn klass_for_unmodeled_types() {
        assert_eq!(klass("dashboards"), "org.hisp.dhis.dashboard.Dashboard");
        assert_eq!(
            klass("dataElements"),
            "org.hisp.dhis.dataelement.DataElement"
        );
        assert_eq!(singular_of("categories"), "category");
    }
}
