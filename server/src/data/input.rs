//! Reading data value sets in DHIS2's three formats without holding the
//! body: JSON (set-level members first, as every DHIS2 export writes them),
//! CSV (DHIS2's column order) and ADX. Each parser runs on a blocking thread
//! over a `Read` and emits [`Event`]s.

use std::io::Read;

use hisa_shared::period::Period;
use quick_xml::events::Event as XmlEvent;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use tokio::sync::mpsc::Sender;

use super::import::{RawValue, SetLevel};

#[derive(Debug)]
pub enum Event {
    Header(SetLevel),
    Value(RawValue),
    /// The body could not be read past this point.
    Malformed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Adx,
}

impl Format {
    /// From a content type (`application/json`, `application/csv`, `text/csv`,
    /// `application/adx+xml`) or a file name's extension.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let ct = ct.to_ascii_lowercase();
        if ct.contains("adx") {
            Some(Format::Adx)
        } else if ct.contains("csv") {
            Some(Format::Csv)
        } else if ct.contains("json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    pub fn from_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        let lower = lower.strip_suffix(".gz").unwrap_or(&lower);
        if lower.ends_with(".json") {
            Some(Format::Json)
        } else if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".adx") || lower.ends_with(".xml") {
            Some(Format::Adx)
        } else {
            None
        }
    }
}

/// Parse `reader` as `format`, sending events until the body ends or the
/// receiver goes away. `csv_header_row`: the first CSV row holds names.
pub fn parse(
    format: Format,
    reader: impl Read,
    csv_header_row: bool,
    data_set: Option<String>,
    tx: Sender<Event>,
) {
    let result = match format {
        Format::Json => parse_json(reader, &tx),
        Format::Csv => parse_csv(reader, csv_header_row, data_set, &tx),
        Format::Adx => parse_adx(reader, &tx),
    };
    if let Err(message) = result {
        let _ = tx.blocking_send(Event::Malformed(message));
    }
}

fn send(tx: &Sender<Event>, event: Event) -> Result<(), String> {
    tx.blocking_send(event)
        .map_err(|_| "the import stopped reading".to_string())
}

// ---- JSON -------------------------------------------------------------------

fn parse_json(reader: impl Read, tx: &Sender<Event>) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    let late = de.deserialize_map(SetVisitor { tx }).map_err(|e| {
        format!(
            "Malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    de.end()
        .map_err(|e| format!("Malformed JSON after the data value set: {e}"))?;
    if let Some(key) = late {
        return Err(format!(
            "Set-level member `{key}` comes after `dataValues`; put set-level members first"
        ));
    }
    Ok(())
}

struct SetVisitor<'a> {
    tx: &'a Sender<Event>,
}

fn text_of(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

impl<'de> Visitor<'de> for SetVisitor<'_> {
    /// The name of a set-level member found after the values, if any.
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a data value set object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut header = SetLevel::default();
        let mut values_seen = false;
        let mut late = None;
        while let Some(key) = map.next_key::<String>()? {
            let set_level = matches!(
                key.as_str(),
                "dataSet"
                    | "period"
                    | "orgUnit"
                    | "attributeOptionCombo"
                    | "completeDate"
                    | "attributeCategoryOptions"
            );
            if set_level && values_seen && late.is_none() {
                late = Some(key.clone());
            }
            match key.as_str() {
                "dataSet" => header.data_set = text_of(map.next_value()?),
                "period" => header.period = text_of(map.next_value()?),
                "orgUnit" => header.org_unit = text_of(map.next_value()?),
                "attributeOptionCombo" => {
                    header.attribute_option_combo = text_of(map.next_value()?)
                }
                "completeDate" => header.complete_date = text_of(map.next_value()?),
                "attributeCategoryOptions" => {
                    let v: serde_json::Value = map.next_value()?;
                    header.attribute_category_options = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|o| o.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                }
                "dataValues" => {
                    values_seen = true;
                    send(self.tx, Event::Header(header.clone()))
                        .map_err(serde::de::Error::custom)?;
                    map.next_value_seed(ValuesSeed { tx: self.tx })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !values_seen {
            send(self.tx, Event::Header(header)).map_err(serde::de::Error::custom)?;
        }
        Ok(late)
    }
}

struct ValuesSeed<'a> {
    tx: &'a Sender<Event>,
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of data values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<JsonValue>()? {
            send(self.tx, Event::Value(v.into_raw())).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

/// A data value as JSON; numbers and booleans are accepted where DHIS2 clients send them.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonValue {
    data_element: Option<serde_json::Value>,
    period: Option<serde_json::Value>,
    org_unit: Option<serde_json::Value>,
    category_option_combo: Option<serde_json::Value>,
    attribute_option_combo: Option<serde_json::Value>,
    value: Option<serde_json::Value>,
    comment: Option<serde_json::Value>,
    #[serde(alias = "followUp")]
    followup: Option<serde_json::Value>,
    stored_by: Option<serde_json::Value>,
    deleted: Option<serde_json::Value>,
}

fn flag(v: Option<serde_json::Value>) -> Option<bool> {
    match v? {
        serde_json::Value::Bool(b) => Some(b),
        serde_json::Value::String(s) => Some(s.eq_ignore_ascii_case("true")),
        _ => None,
    }
}

impl JsonValue {
    fn into_raw(self) -> RawValue {
        let t = |v: Option<serde_json::Value>| v.and_then(text_of);
        RawValue {
            data_element: t(self.data_element),
            period: t(self.period),
            org_unit: t(self.org_unit),
            category_option_combo: t(self.category_option_combo),
            attribute_option_combo: t(self.attribute_option_combo),
            value: t(self.value),
            comment: t(self.comment),
            follow_up: flag(self.followup),
            stored_by: t(self.stored_by),
            deleted: flag(self.deleted),
            category_options: vec![],
        }
    }
}

// ---- CSV --------------------------------------------------------------------

/// DHIS2's column order: dataelement, period, orgunit, categoryoptioncombo,
/// attributeoptioncombo, value, storedby, lastupdated, comment, followup, deleted.
fn parse_csv(
    reader: impl Read,
    header_row: bool,
    data_set: Option<String>,
    tx: &Sender<Event>,
) -> Result<(), String> {
    send(
        tx,
        Event::Header(SetLevel {
            data_set,
            ..SetLevel::default()
        }),
    )?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(header_row)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    for (line, record) in rdr.records().enumerate() {
        let record = record.map_err(|e| format!("Malformed CSV at record {}: {e}", line + 1))?;
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        let col = |i: usize| record.get(i).filter(|s| !s.is_empty()).map(str::to_string);
        send(
            tx,
            Event::Value(RawValue {
                data_element: col(0),
                period: col(1),
                org_unit: col(2),
                category_option_combo: col(3),
                attribute_option_combo: col(4),
                value: col(5),
                stored_by: col(6),
                comment: col(8),
                follow_up: col(9).map(|f| f.eq_ignore_ascii_case("true")),
                deleted: col(10).map(|f| f.eq_ignore_ascii_case("true")),
                ..RawValue::default()
            }),
        )?;
    }
    Ok(())
}

// ---- ADX --------------------------------------------------------------------

const GROUP_KEYS: &[&str] = &[
    "orgUnit",
    "period",
    "dataSet",
    "completeDate",
    "attributeOptionCombo",
];
const VALUE_KEYS: &[&str] = &[
    "dataElement",
    "value",
    "categoryOptionCombo",
    "attributeOptionCombo",
];

fn attributes(e: &quick_xml::events::BytesStart) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("Malformed ADX attribute: {err}"))?;
        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).to_string();
        let value = a
            .unescape_value()
            .map_err(|err| format!("Malformed ADX attribute value: {err}"))?
            .to_string();
        out.push((key, value));
    }
    Ok(out)
}

fn parse_adx(reader: impl Read, tx: &Sender<Event>) -> Result<(), String> {
    let mut xml = quick_xml::Reader::from_reader(std::io::BufReader::new(reader));
    xml.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut saw_root = false;
    let mut pending: Option<RawValue> = None;
    let mut in_annotation = false;
    loop {
        let event = xml
            .read_event_into(&mut buf)
            .map_err(|e| format!("Malformed ADX at byte {}: {e}", xml.buffer_position()))?;
        match event {
            XmlEvent::Start(ref e) | XmlEvent::Empty(ref e) => {
                let empty = matches!(event, XmlEvent::Empty(_));
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                match name.as_str() {
                    "adx" => {
                        saw_root = true;
                        if !attributes(e)?.iter().any(|(k, _)| k == "exported") {
                            return Err("ADX root element needs the `exported` attribute".into());
                        }
                    }
                    "group" => {
                        let attrs = attributes(e)?;
                        let get =
                            |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        for required in ["orgUnit", "period", "dataSet"] {
                            if get(required).is_none() {
                                return Err(format!("ADX group without `{required}`"));
                            }
                        }
                        let adx_period = get("period").unwrap_or_default();
                        let period = Period::from_adx(&adx_period)
                            .map(|p| p.iso())
                            .map_err(|e| format!("ADX period `{adx_period}`: {e}"))?;
                        let header = SetLevel {
                            data_set: get("dataSet"),
                            period: Some(period),
                            org_unit: get("orgUnit"),
                            attribute_option_combo: get("attributeOptionCombo"),
                            complete_date: get("completeDate"),
                            attribute_category_options: attrs
                                .iter()
                                .filter(|(k, _)| !GROUP_KEYS.contains(&k.as_str()))
                                .map(|(_, v)| v.clone())
                                .collect(),
                        };
                        send(tx, Event::Header(header))?;
                    }
                    "dataValue" => {
                        let attrs = attributes(e)?;
                        let get =
                            |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        if get("dataElement").is_none() {
                            return Err("ADX dataValue without `dataElement`".into());
                        }
                        let raw = RawValue {
                            data_element: get("dataElement"),
                            value: get("value"),
                            category_option_combo: get("categoryOptionCombo"),
                            attribute_option_combo: get("attributeOptionCombo"),
                            category_options: attrs
                                .iter()
                                .filter(|(k, _)| !VALUE_KEYS.contains(&k.as_str()))
                                .cloned()
                                .collect(),
                            ..RawValue::default()
                        };
                        if empty {
                            send(tx, Event::Value(raw))?;
                        } else {
                            pending = Some(raw);
                        }
                    }
                    "annotation" => in_annotation = true,
                    _ => {}
                }
            }
            XmlEvent::Text(t) if in_annotation => {
                let text = t
                    .unescape()
                    .map_err(|e| format!("Malformed ADX text: {e}"))?
                    .to_string();
                if let Some(p) = pending.as_mut() {
                    // Non-numeric values travel as the annotation's text.
                    p.value = Some(text);
                }
            }
            XmlEvent::End(ref e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                match name.as_str() {
                    "annotation" => in_annotation = false,
                    "dataValue" => {
                        if let Some(raw) = pending.take() {
                            send(tx, Event::Value(raw))?;
                        }
                    }
                    _ => {}
                }
            }
            XmlEvent::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err("Not an ADX document: no `adx` root element".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(format: Format, body: &str) -> Vec<Event> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        parse(format, body.as_bytes(), true, None, tx);
        let mut out = vec![];
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }

    #[test]
    fn json_header_then_values() {
        let events = collect(
            Format::Json,
            r#"{"dataSet":"ds","period":"202401","orgUnit":"ou",
            "dataValues":[{"dataElement":"de","value":5,"followup":true},{"dataElement":"d2","value":"x"}]}"#,
        );
        assert!(matches!(&events[0], Event::Header(h) if h.period.as_deref() == Some("202401")));
        assert!(
            matches!(&events[1], Event::Value(v) if v.value.as_deref() == Some("5") && v.follow_up == Some(true))
        );
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn json_malformed_anywhere_is_reported() {
        for bad in [
            r#"{"dataValues":[{"dataElement":"a"},"#,
            r#"{"dataValues": 5}"#,
            "[]",
            "",
            r#"{"dataValues":[]} x"#,
        ] {
            let events = collect(Format::Json, bad);
            assert!(
                matches!(events.last(), Some(Event::Malformed(_))),
                "{bad}: {events:?}"
            );
        }
        let events = collect(Format::Json, r#"{"dataValues":[],"period":"202401"}"#);
        assert!(matches!(events.last(), Some(Event::Malformed(m)) if m.contains("period")));
    }

    #[test]
    fn csv_in_dhis2_column_order() {
        let events = collect(Format::Csv, "dataelement,period,orgunit,coc,aoc,value,storedby,lastupdated,comment,followup\nde,202401,ou,,,12,nurse,,two referred,false\n");
        let Event::Value(v) = &events[1] else {
            panic!()
        };
        assert_eq!(v.value.as_deref(), Some("12"));
        assert_eq!(v.comment.as_deref(), Some("two referred"));
        assert_eq!(v.category_option_combo, None);
    }

    #[test]
    fn adx_groups_periods_and_annotations() {
        let body = r#"<adx xmlns="urn:ihe:qrph:adx:2015" exported="2024-04-03T08:00:00Z">
          <group orgUnit="KISUMU_H" period="2024-03-01/P1M" dataSet="MAL" completeDate="2024-04-03">
            <dataValue dataElement="MAL_CONF" SEX="F" AGE="U5" value="12"/>
            <dataValue dataElement="MAL_NOTE" value="0"><annotation>stock-out week 2</annotation></dataValue>
          </group></adx>"#;
        let events = collect(Format::Adx, body);
        let Event::Header(h) = &events[0] else {
            panic!()
        };
        assert_eq!(h.period.as_deref(), Some("202403"));
        let Event::Value(v) = &events[1] else {
            panic!()
        };
        assert_eq!(v.category_options.len(), 2);
        let Event::Value(v) = &events[2] else {
            panic!()
        };
        assert_eq!(v.value.as_deref(), Some("stock-out week 2"));
        let events = collect(Format::Adx, "<adx><group></adx>");
        assert!(matches!(events.last(), Some(Event::Malformed(_))));
    }
}
