//! Validation rules on one form and over a subtree, on both stores.

use hisa_tests::{on_both_stores, Backend, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");

fn fixture() -> Value {
    json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            {"id": "OuDistA0001", "name": "District A", "shortName": "A", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacA10001", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "OuFacA20001", "name": "Facility A2", "shortName": "A2", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}}
        ],
        "categoryOptions": [{"id": "OptMale0001", "name": "Male", "shortName": "Male"}, {"id": "OptFemale01", "name": "Female", "shortName": "Female"}],
        "categories": [{"id": "CatSex00001", "name": "Sex", "shortName": "Sex", "dataDimensionType": "DISAGGREGATION", "categoryOptions": [{"id": "OptMale0001"}, {"id": "OptFemale01"}]}],
        "categoryCombos": [{"id": "ComboSex001", "name": "Sex", "dataDimensionType": "DISAGGREGATION", "categories": [{"id": "CatSex00001"}]}],
        "categoryOptionCombos": [
            {"id": "CocMale0001", "name": "Male", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptMale0001"}]},
            {"id": "CocFemale01", "name": "Female", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptFemale01"}]}
        ],
        "dataElements": [
            {"id": "DeCases0001", "name": "Cases", "shortName": "Cases", "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "AGGREGATE", "aggregationType": "SUM", "categoryCombo": {"id": "ComboSex001"}},
            {"id": "DeDeaths001", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true},
            {"id": "DeTested001", "name": "Tested", "shortName": "Tested", "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "AGGREGATE", "aggregationType": "SUM"}
        ],
        "constants": [{"id": "ConstMax001", "name": "Most deaths", "value": 5}],
        "dataSets": [{"id": "DsMonth0001", "name": "Monthly", "shortName": "Monthly", "periodType": "Monthly", "expiryDays": 0, "openFuturePeriods": 1,
            "dataSetElements": [{"dataElement": {"id": "DeCases0001"}}, {"dataElement": {"id": "DeDeaths001"}}, {"dataElement": {"id": "DeTested001"}}],
            "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}]}],
        "validationRules": [
            {"id": "VrDeaths001", "name": "Deaths at most cases", "description": "Deaths <= cases (all sexes)", "operator": "less_than_or_equal_to", "periodType": "Monthly", "importance": "HIGH",
             "leftSide": {"expression": "#{DeDeaths001}", "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING"},
             "rightSide": {"expression": "#{DeCases0001}", "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING"}},
            {"id": "VrPair00001", "name": "Tested with cases", "operator": "compulsory_pair", "periodType": "Monthly",
             "leftSide": {"expression": "#{DeTested001}"}, "rightSide": {"expression": "#{DeCases0001.CocMale0001}"}},
            {"id": "VrConst0001", "name": "Deaths under the constant", "operator": "less_than_or_equal_to", "periodType": "Monthly",
             "leftSide": {"expression": "#{DeDeaths001}"}, "rightSide": {"expression": "C{ConstMax001}", "missingValueStrategy": "NEVER_SKIP"}}
        ],
        "validationRuleGroups": [{"id": "VrgPairs001", "name": "Pairs", "validationRules": [{"id": "VrPair00001"}]}],
        "userRoles": [{"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]}],
        "users": [{"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]}]
    })
}

async fn rules_on_a_form_and_over_a_district(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let report = server
        .services
        .metadata
        .import(fixture(), Default::default())
        .await
        .unwrap();
    assert!(
        !report.has_errors(),
        "{:?}",
        report.errors().collect::<Vec<_>>()
    );
    let (status, body) = server.post_json_as(ADMIN.0, ADMIN.1, "/api/dataValueSets", &json!({"dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "period": "202609", "orgUnit": "OuFacA10001", "value": "2"},
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocFemale01", "period": "202609", "orgUnit": "OuFacA10001", "value": "3"},
        {"dataElement": "DeDeaths001", "period": "202609", "orgUnit": "OuFacA10001", "value": "7"},
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "period": "202609", "orgUnit": "OuFacA20001", "value": "9"},
        {"dataElement": "DeDeaths001", "period": "202609", "orgUnit": "OuFacA20001", "value": "1"},
        {"dataElement": "DeTested001", "period": "202609", "orgUnit": "OuFacA20001", "value": "12"}
    ]})).await;
    assert_eq!(status, 200, "{body}");

    // One form: deaths 7 > cases 2 + 3; deaths 7 > the constant 5; tested missing while male cases present.
    let (status, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/validation/dataSet/DsMonth0001?pe=202609&ou=OuFacA10001",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v = body["validationRuleViolations"].as_array().unwrap();
    let rule = |id: &str| v.iter().find(|x| x["validationRuleId"] == id).cloned();
    let deaths = rule("VrDeaths001").expect("deaths over cases");
    assert_eq!(
        (
            deaths["leftSideValue"].as_f64(),
            deaths["rightSideValue"].as_f64()
        ),
        (Some(7.0), Some(5.0)),
        "both sides are shown"
    );
    assert_eq!(deaths["importance"], "HIGH");
    assert_eq!(deaths["operator"], "<=");
    assert!(rule("VrConst0001").is_some());
    assert!(rule("VrPair00001").is_some(), "{v:?}");
    // The other facility passes every rule.
    let (_, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/validation/dataSet/DsMonth0001?pe=202609&ou=OuFacA20001",
        )
        .await;
    assert_eq!(body["validationRuleViolations"], json!([]));

    // The district over a date range: only facility A1 violates; a rule group narrows.
    let (status, all) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/dataAnalysis/validationRules",
            &json!({"ou": "OuDistA0001", "startDate": "2026-08-01", "endDate": "2026-10-31"}),
        )
        .await;
    assert_eq!(status, 200, "{all}");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    assert!(all
        .iter()
        .all(|x| x["organisationUnitId"] == "OuFacA10001" && x["periodId"] == "202609"));
    // Persisted for follow-up; a second run refreshes, never duplicates.
    for _ in 0..2 {
        let (status, _) = server.post_json_as(ADMIN.0, ADMIN.1, "/api/dataAnalysis/validationRules", &json!({"ou": "OuDistA0001", "startDate": "2026-08-01", "endDate": "2026-10-31", "persist": true})).await;
        assert_eq!(status, 200);
    }
    let (_, stored) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/validationResults?pe=202609")
        .await;
    let stored = stored["validationResults"].as_array().unwrap().clone();
    assert_eq!(stored.len(), 3);
    let id = stored
        .iter()
        .find(|r| r["validationRule"]["id"] == "VrDeaths001")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server
        .client()
        .put(server.url(&format!("/api/validationResults/{id}/followUp")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&json!({"followUp": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, flagged) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/validationResults?followUp=true")
        .await;
    assert_eq!(flagged["validationResults"].as_array().unwrap().len(), 1);
    assert_eq!(
        flagged["validationResults"][0]["leftsideValue"].as_f64(),
        Some(7.0)
    );
    let (_, pairs) = server.post_json_as(ADMIN.0, ADMIN.1, "/api/dataAnalysis/validationRules", &json!({"ou": "OuDistA0001", "startDate": "2026-08-01", "endDate": "2026-10-31", "vrg": "VrgPairs001"})).await;
    assert_eq!(pairs.as_array().unwrap().len(), 1);

    // Bad input is named.
    for (path, expect) in [
        (
            "/api/validation/dataSet/NoSuchSet01?pe=202609&ou=OuFacA10001",
            "NoSuchSet01",
        ),
        (
            "/api/validation/dataSet/DsMonth0001?pe=2026W99&ou=OuFacA10001",
            "2026W99",
        ),
        (
            "/api/validation/dataSet/DsMonth0001?pe=202609&ou=NoSuchUnit1",
            "NoSuchUnit1",
        ),
    ] {
        let (status, body) = server.get_as(ADMIN.0, ADMIN.1, path).await;
        assert_eq!(status, 409, "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains(expect), "{body}");
    }
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/dataAnalysis/validationRules",
            &json!({"ou": "OuDistA0001", "startDate": "01/08/2026", "endDate": "2026-10-31"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    server.stop().await;
}

on_both_stores!(rules_on_a_form_and_over_a_district);
