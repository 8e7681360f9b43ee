//! Analytics parameters come straight from URLs: any query string must be
//! resolved or refused, never panic.
#![no_main]
use std::sync::OnceLock;

use hisa_server::analytics::request::plan;
use hisa_server::api::Params;
use hisa_server::auth::Caller;
use hisa_server::metadata::Snapshot;
use hisa_server::store::StoredObject;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let objects = [
            ("organisationUnits", json!({"id": "OuRoot00001", "name": "Root", "path": "/OuRoot00001", "level": 1})),
            ("organisationUnits", json!({"id": "OuChild0001", "name": "Child", "parent": {"id": "OuRoot00001"},
                "path": "/OuRoot00001/OuChild0001", "level": 2})),
            ("organisationUnitGroups", json!({"id": "OugGroup001", "name": "G", "organisationUnits": [{"id": "OuChild0001"}]})),
            ("dataElements", json!({"id": "DeElement01", "name": "E", "valueType": "NUMBER", "aggregationType": "SUM"})),
            ("dataSets", json!({"id": "DsSet000001", "name": "S", "periodType": "Monthly"})),
            ("indicatorTypes", json!({"id": "ItType00001", "name": "T", "factor": 100})),
            ("indicators", json!({"id": "InIndic0001", "name": "I", "indicatorType": {"id": "ItType00001"},
                "numerator": "#{DeElement01}", "denominator": "1"})),
            ("categories", json!({"id": "CatCat00001", "name": "C", "categoryOptions": [{"id": "CoOpt000001"}]})),
        ];
        Snapshot::build(
            1,
            objects
                .into_iter()
                .enumerate()
                .map(|(i, (kind, body))| StoredObject {
                    id: i as i64 + 1,
                    uid: body["id"].as_str().unwrap_or_default().to_string(),
                    kind: kind.to_string(),
                    body,
                })
                .collect(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let params = Params::parse(Some(query));
    let caller = Caller::operator("fuzz");
    let today = time::Date::from_calendar_date(2026, time::Month::November, 27).expect("date");
    let _ = plan(&params, snapshot(), &caller, today);
});
