//! Aggregate data values as DHIS2 exchanges them, and the import summary
//! DHIS2 clients parse after `POST /api/dataValueSets`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::webmessage::{Status, WebMessage};

/// How identifiers in a payload are to be read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IdScheme {
    #[default]
    Uid,
    Code,
    Name,
    /// `ATTRIBUTE:<attributeUid>`: the value of a unique attribute.
    Attribute(String),
}

impl IdScheme {
    /// DHIS2's spelling, case-insensitive; `ID` is an alias of `UID`.
    pub fn parse(s: &str) -> Option<IdScheme> {
        let upper = s.trim().to_ascii_uppercase();
        match upper.as_str() {
            "UID" | "ID" => Some(IdScheme::Uid),
            "CODE" => Some(IdScheme::Code),
            "NAME" => Some(IdScheme::Name),
            _ => upper
                .strip_prefix("ATTRIBUTE:")
                .map(|_| IdScheme::Attribute(s.trim()[10..].to_string())),
        }
    }

    pub fn name(&self) -> String {
        match self {
            IdScheme::Uid => "UID".into(),
            IdScheme::Code => "CODE".into(),
            IdScheme::Name => "NAME".into(),
            IdScheme::Attribute(a) => format!("ATTRIBUTE:{a}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataImportStrategy {
    #[default]
    CreateAndUpdate,
    Create,
    Update,
    Delete,
}

impl DataImportStrategy {
    /// DHIS2's names and their legacy aliases.
    pub fn parse(s: &str) -> Option<DataImportStrategy> {
        match s.trim().to_ascii_uppercase().as_str() {
            "CREATE_AND_UPDATE" | "NEW_AND_UPDATES" => Some(DataImportStrategy::CreateAndUpdate),
            "CREATE" | "NEW" => Some(DataImportStrategy::Create),
            "UPDATE" | "UPDATES" => Some(DataImportStrategy::Update),
            "DELETE" | "DELETES" => Some(DataImportStrategy::Delete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SummaryStatus {
    Success,
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCount {
    pub imported: u64,
    pub updated: u64,
    pub ignored: u64,
    pub deleted: u64,
}

/// One reason values were rejected. Values rejected for the same reason and
/// object are merged: `indexes` lists them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub object: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub objects: BTreeMap<String, String>,
    pub value: String,
    pub error_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub indexes: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub response_type: String,
    pub status: SummaryStatus,
    pub import_options: serde_json::Value,
    pub description: String,
    pub import_count: ImportCount,
    pub conflicts: Vec<Conflict>,
    pub rejected_indexes: Vec<usize>,
    pub data_set_complete: String,
}

/// At most this many distinct conflicts are listed; a million bad values
/// must not make a million-entry answer. Counts stay exact.
pub const MAX_CONFLICTS: usize = 1000;

impl ImportSummary {
    pub fn new(import_options: serde_json::Value) -> ImportSummary {
        ImportSummary {
            response_type: "ImportSummary".into(),
            status: SummaryStatus::Success,
            import_options,
            description: "Import process completed successfully".into(),
            import_count: ImportCount::default(),
            conflicts: vec![],
            rejected_indexes: vec![],
            data_set_complete: "false".into(),
        }
    }

    /// Record a rejected value (index `index` in the payload, when known).
    pub fn reject(&mut self, index: Option<usize>, conflict: Conflict) {
        self.import_count.ignored += 1;
        if let Some(i) = index {
            self.rejected_indexes.push(i);
        }
        self.add_conflict(index, conflict);
    }

    pub fn add_conflict(&mut self, index: Option<usize>, conflict: Conflict) {
        if self.status == SummaryStatus::Success {
            self.status = SummaryStatus::Warning;
        }
        if let Some(existing) = self
            .conflicts
            .iter_mut()
            .find(|c| c.error_code == conflict.error_code && c.object == conflict.object)
        {
            if let Some(i) = index {
                existing.indexes.push(i);
            }
            return;
        }
        if self.conflicts.len() < MAX_CONFLICTS {
            let mut conflict = conflict;
            conflict.indexes = index.into_iter().collect();
            self.conflicts.push(conflict);
        }
    }

    /// The whole payload was refused (a set-level check failed, or the body
    /// could not be read): DHIS2's ERROR with nothing imported.
    pub fn abort(&mut self, conflict: Conflict) {
        self.add_conflict(None, conflict);
        self.status = SummaryStatus::Error;
        self.description = "Import process was aborted".into();
    }

    /// The 2.38+ envelope: 200 for SUCCESS and WARNING, 409 for ERROR.
    pub fn into_web_message(self) -> WebMessage {
        let (code, status, message) = match self.status {
            SummaryStatus::Success => (200, Status::Ok, "Import was successful."),
            SummaryStatus::Warning => (
                200,
                Status::Warning,
                "Import completed with warnings, please check import summary.",
            ),
            SummaryStatus::Error => (
                409,
                Status::Error,
                "An error occurred, please check import summary.",
            ),
        };
        let body = serde_json::to_value(&self).unwrap_or(serde_json::Value::Null);
        WebMessage::new(code, status, message).with_response(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(code: &str, object: &str) -> Conflict {
        Conflict {
            object: object.into(),
            objects: BTreeMap::new(),
            value: "v".into(),
            error_code: code.into(),
            property: None,
            indexes: vec![],
        }
    }

    #[test]
    fn conflicts_merge_by_code_and_object() {
        let mut s = ImportSummary::new(serde_json::json!({}));
        s.reject(Some(1), conflict("E7610", "a"));
        s.reject(Some(4), conflict("E7610", "a"));
        s.reject(Some(5), conflict("E7610", "b"));
        assert_eq!(s.conflicts.len(), 2);
        assert_eq!(s.conflicts[0].indexes, [1, 4]);
        assert_eq!(s.import_count.ignored, 3);
        assert_eq!(s.rejected_indexes, [1, 4, 5]);
        assert_eq!(s.status, SummaryStatus::Warning);
        let m = s.into_web_message();
        assert_eq!(m.http_status_code, 200);
    }

    #[test]
    fn abort_is_a_409() {
        let mut s = ImportSummary::new(serde_json::json!({}));
        s.abort(conflict("E7600", "x"));
        assert_eq!(s.into_web_message().http_status_code, 409);
    }

    #[test]
    fn id_schemes() {
        assert_eq!(IdScheme::parse("id"), Some(IdScheme::Uid));
        assert_eq!(IdScheme::parse("Code"), Some(IdScheme::Code));
        assert_eq!(
            IdScheme::parse("ATTRIBUTE:abcdefghijk"),
            Some(IdScheme::Attribute("abcdefghijk".into()))
        );
        assert_eq!(IdScheme::parse("bogus"), None);
    }
}
