//! Completeness and timeliness of reports, on both stores.

use hisa_tests::{on_both_stores, Backend, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");

fn unit(id: &str, parent: &str, opening: &str, closed: Option<&str>) -> Value {
    let mut u = json!({"id": id, "name": id, "shortName": id, "openingDate": opening, "parent": {"id": parent}});
    if let Some(c) = closed {
        u["closedDate"] = json!(c);
    }
    u
}

async fn expected_actual_and_on_time(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let fixture = json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            unit("OuDistA0001", "OuRoot00001", "1990-01-01", None),
            unit("OuFacA10001", "OuDistA0001", "1990-01-01", None),
            unit("OuFacA20001", "OuDistA0001", "1990-01-01", None),
            unit("OuFacA30001", "OuDistA0001", "1990-01-01", None),
            unit("OuClosed001", "OuDistA0001", "1990-01-01", Some("2026-01-01")),
            unit("OuOpened001", "OuDistA0001", "2026-12-01", None)
        ],
        "dataElements": [{"id": "DeDeaths001", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER_ZERO_OR_POSITIVE",
            "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true}],
        "dataSets": [{"id": "DsMonth0001", "name": "Monthly", "shortName": "Monthly", "periodType": "Monthly",
            "expiryDays": 0, "openFuturePeriods": 1, "timelyDays": 10,
            "dataSetElements": [{"dataElement": {"id": "DeDeaths001"}}],
            "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}, {"id": "OuFacA30001"}, {"id": "OuClosed001"}, {"id": "OuOpened001"}]}],
        "userRoles": [{"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]}],
        "users": [{"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]}]
    });
    let report = server
        .services
        .metadata
        .import(fixture, Default::default())
        .await
        .unwrap();
    assert!(
        !report.has_errors(),
        "{:?}",
        report.errors().collect::<Vec<_>>()
    );
    // A1 on time (5 October), A2 late (20 October, after 10 timely days), A3 never.
    for (ou, completed) in [("OuFacA10001", "2026-10-05"), ("OuFacA20001", "2026-10-20")] {
        let (status, body) = server
            .post_json_as(
                ADMIN.0,
                ADMIN.1,
                "/api/dataValueSets",
                &json!({
            "dataSet": "DsMonth0001", "period": "202609", "orgUnit": ou, "completeDate": completed,
            "dataValues": [{"dataElement": "DeDeaths001", "value": "1"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/completeness?ds=DsMonth0001&pe=202609&ou=OuDistA0001",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = &body["completeness"][0];
    assert_eq!(
        d["expectedReports"], 3,
        "closed before and opened after the period are not expected: {body}"
    );
    assert_eq!(d["actualReports"], 2);
    assert_eq!(d["actualReportsOnTime"], 1);
    assert!((d["reportingRate"].as_f64().unwrap() - 200.0 / 3.0).abs() < 1e-9);
    assert!((d["reportingRateOnTime"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
    // Per child.
    let (_, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/completeness?ds=DsMonth0001&pe=202609&ou=OuDistA0001&children=true",
        )
        .await;
    let rows = body["completeness"].as_array().unwrap();
    let of = |id: &str| {
        rows.iter()
            .find(|r| r["orgUnit"]["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(of("OuFacA10001")["reportingRateOnTime"], 100.0);
    assert_eq!(of("OuFacA20001")["reportingRateOnTime"], 0.0);
    assert_eq!(of("OuFacA30001")["reportingRate"], 0.0);
    assert_eq!(of("OuClosed001")["expectedReports"], 0);
    assert!(
        of("OuClosed001")["reportingRate"].is_null(),
        "no rate where nothing was expected"
    );
    // Bad input is named.
    for (q, expect) in [
        ("ds=DsMonth0001&pe=2026W10&ou=OuDistA0001", "2026W10"),
        ("ds=NoSuchSet01&pe=202609&ou=OuDistA0001", "NoSuchSet01"),
        ("ds=DsMonth0001&ou=OuDistA0001", "pe"),
    ] {
        let (status, body) = server
            .get_as(ADMIN.0, ADMIN.1, &format!("/api/completeness?{q}"))
            .await;
        assert_eq!(status, 409, "{q}: {body}");
        assert!(body["message"].as_str().unwrap().contains(expect), "{body}");
    }
    server.stop().await;
}

on_both_stores!(expected_actual_and_on_time);
