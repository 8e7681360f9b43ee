//! Single events through DHIS2's tracker API, on both stores.

use hisa_tests::{on_both_stores, Backend, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");
const CLERK: (&str, &str) = ("clerk.a", "Clerk123!");

fn fixture() -> Value {
    json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            {"id": "OuFacA10001", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacB10001", "name": "Facility B1", "shortName": "B1", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}}
        ],
        "optionSets": [{"id": "OsResult001", "name": "Result", "valueType": "TEXT", "options": [{"id": "OptPos00001"}, {"id": "OptNeg00001"}]}],
        "options": [
            {"id": "OptPos00001", "code": "POSITIVE", "name": "Positive", "optionSet": {"id": "OsResult001"}},
            {"id": "OptNeg00001", "code": "NEGATIVE", "name": "Negative", "optionSet": {"id": "OsResult001"}}
        ],
        "dataElements": [
            {"id": "DeAge000001", "name": "Age", "shortName": "Age", "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "TRACKER", "aggregationType": "AVERAGE"},
            {"id": "DeResult001", "name": "Result", "shortName": "Result", "valueType": "TEXT", "domainType": "TRACKER", "aggregationType": "NONE", "optionSet": {"id": "OsResult001"}}
        ],
        "programs": [{"id": "PrgCase0001", "name": "Malaria case", "shortName": "Case", "programType": "WITHOUT_REGISTRATION",
            "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacB10001"}], "programStages": [{"id": "StgCase0001"}]}],
        "programStages": [{"id": "StgCase0001", "name": "Case", "program": {"id": "PrgCase0001"},
            "programStageDataElements": [{"dataElement": {"id": "DeAge000001"}, "compulsory": true}, {"dataElement": {"id": "DeResult001"}}]}],
        "userRoles": [{"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]},
                      {"id": "RoleClerk01", "name": "Clerk", "authorities": ["F_DATAVALUE_ADD"]}],
        "users": [
            {"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]},
            {"id": "UserClerkA1", "username": "clerk.a", "password": "Clerk123!", "firstName": "C", "surname": "A",
             "userRoles": [{"id": "RoleClerk01"}], "organisationUnits": [{"id": "OuFacA10001"}]}
        ]
    })
}

fn event(uid: &str, ou: &str, age: &str, result: &str) -> Value {
    json!({"event": uid, "program": "PrgCase0001", "programStage": "StgCase0001", "orgUnit": ou,
           "occurredAt": "2024-03-05", "status": "COMPLETED",
           "dataValues": [{"dataElement": "DeAge000001", "value": age}, {"dataElement": "DeResult001", "value": result}]})
}

fn codes(report: &Value) -> Vec<String> {
    report["validationReport"]["errorReports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorCode"].as_str().unwrap().to_string())
        .collect()
}

async fn events_in_and_out(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let report = server
        .services
        .metadata
        .import(fixture(), Default::default())
        .await
        .unwrap();
    assert!(!report.has_errors());

    let bundle = json!({"events": [event("EvtA0000001", "OuFacA10001", "34", "POSITIVE"), event("EvtA0000002", "OuFacA10001", "5", "NEGATIVE")]});
    let (status, body) = server
        .post_json_as(CLERK.0, CLERK.1, "/api/tracker", &bundle)
        .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "OK");
    assert_eq!(body["stats"]["created"], 2);
    // Sent again: updates, never duplicates.
    let (_, body) = server
        .post_json_as(CLERK.0, CLERK.1, "/api/tracker", &bundle)
        .await;
    assert_eq!(body["stats"]["updated"], 2);

    // atomicMode=ALL (the default): one bad event, nothing written.
    let bad = json!({"events": [
        event("EvtA0000003", "OuFacA10001", "40", "POSITIVE"),
        event("EvtA0000004", "OuFacA10001", "-1", "MAYBE"),
        event("EvtB0000001", "OuFacB10001", "40", "POSITIVE"),
        {"event": "EvtA0000005", "program": "NoSuchProg1", "orgUnit": "OuFacA10001", "occurredAt": "2024-03-05"},
        {"event": "EvtA0000006", "program": "PrgCase0001", "orgUnit": "OuFacA10001", "status": "COMPLETED", "occurredAt": "2024-03-05", "dataValues": []}
    ]});
    let (status, body) = server
        .post_json_as(CLERK.0, CLERK.1, "/api/tracker", &bad)
        .await;
    assert_eq!(status, 409, "{body:#}");
    let mut c = codes(&body);
    c.sort();
    assert_eq!(c, ["E1000", "E1069", "E1125", "E1301", "E1302"]);
    assert_eq!(body["stats"]["ignored"], 5);
    // atomicMode=OBJECT: the valid one is written.
    let (status, body) = server
        .post_json_as(CLERK.0, CLERK.1, "/api/tracker?atomicMode=OBJECT", &bad)
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["stats"]["created"], 1);

    // Reading back: scoped, paged, filtered.
    let (status, list) = server
        .get_as(
            CLERK.0,
            CLERK.1,
            "/api/tracker/events?program=PrgCase0001&orgUnit=OuFacA10001",
        )
        .await;
    assert_eq!(status, 200);
    let instances = list["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3);
    let e1 = instances
        .iter()
        .find(|e| e["event"] == "EvtA0000001")
        .unwrap();
    assert_eq!(
        e1["dataValues"],
        json!([{"dataElement": "DeAge000001", "value": "34"}, {"dataElement": "DeResult001", "value": "POSITIVE"}])
    );
    let (status, _) = server
        .get_as(CLERK.0, CLERK.1, "/api/tracker/events?orgUnit=OuFacB10001")
        .await;
    assert_eq!(status, 403);
    let (_, all) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/tracker/events?orgUnit=OuRoot00001&ouMode=DESCENDANTS&pageSize=2",
        )
        .await;
    assert_eq!(all["instances"].as_array().unwrap().len(), 2);
    let (_, none) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/tracker/events?orgUnit=OuRoot00001&ouMode=DESCENDANTS&occurredAfter=2025-01-01",
        )
        .await;
    assert_eq!(none["instances"].as_array().unwrap().len(), 0);

    // Soft deletion.
    let (status, body) = server
        .post_json_as(
            CLERK.0,
            CLERK.1,
            "/api/tracker?importStrategy=DELETE",
            &json!({"events": [{"event": "EvtA0000002"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["stats"]["deleted"], 1);
    let (status, _) = server
        .get_as(CLERK.0, CLERK.1, "/api/tracker/events/EvtA0000002")
        .await;
    assert_eq!(status, 404);
    let (status, one) = server
        .get_as(CLERK.0, CLERK.1, "/api/tracker/events/EvtA0000001")
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["status"], "COMPLETED");
    server.stop().await;
}

on_both_stores!(events_in_and_out);

/// The maintenance app checks expressions as they are typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_are_described_in_words() {
    let Some(server) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let report = server
        .services
        .metadata
        .import(fixture(), Default::default())
        .await
        .unwrap();
    assert!(!report.has_errors());
    let url = |e: &str| {
        format!(
            "/api/expressions/description?expression={}",
            e.replace('#', "%23")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('+', "%2B")
        )
    };
    let (status, body) = server
        .get_as(ADMIN.0, ADMIN.1, &url("#{DeAge000001} + 2"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "OK", "{body}");
    assert_eq!(body["description"], "Age + 2");
    let (_, body) = server
        .get_as(ADMIN.0, ADMIN.1, &url("#{DeAge000001} +"))
        .await;
    assert_eq!(body["status"], "ERROR");
    assert!(
        body["message"].as_str().unwrap().contains("position"),
        "{body}"
    );
    let (_, body) = server.get_as(ADMIN.0, ADMIN.1, &url("#{NoSuchDe01}")).await;
    assert_eq!(body["status"], "ERROR");
    let r = server
        .client()
        .post(server.url("/api/validationRules/expression/description"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .body("#{DeAge000001} * 2")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["description"], "Age * 2", "{body}");
    server.stop().await;
}
