//! `GET /api/analytics` on both stores: a small country whose answers are
//! worked out by hand, random countries checked against a brute-force
//! computation written here from DHIS2's definitions (not from the server's
//! code), live visibility of a new value, scope, and bad input.

use std::collections::{BTreeMap, HashMap};

use hisa_tests::{on_both_stores, Backend, TestServer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");

fn unit(id: &str, parent: Option<&str>) -> Value {
    let mut u = json!({"id": id, "name": format!("Unit {id}"), "shortName": id, "openingDate": "1990-01-01"});
    if let Some(p) = parent {
        u["parent"] = json!({"id": p});
    }
    u
}

async fn import_metadata(server: &TestServer, payload: Value) {
    let report = server
        .services
        .metadata
        .import(payload, Default::default())
        .await
        .unwrap();
    assert!(
        !report.has_errors(),
        "{:?}",
        report.errors().collect::<Vec<_>>()
    );
}

async fn analytics(server: &TestServer, query: &str) -> Value {
    let (status, body) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/analytics?{query}"))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

async fn analytics_path(server: &TestServer, path: &str) -> Value {
    let (status, body) = server.get_as(ADMIN.0, ADMIN.1, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The rows of an analytics query as (dimension items…) → value.
async fn analytics_rows(server: &TestServer, query: &str) -> BTreeMap<Vec<String>, f64> {
    rows(&analytics(server, query).await)
}

/// Rows as (dimension items…) → value.
fn rows(body: &Value) -> BTreeMap<Vec<String>, f64> {
    let headers = body["headers"].as_array().unwrap();
    let vi = headers.iter().position(|h| h["name"] == "value").unwrap();
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            let key = r
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != vi)
                .map(|(_, c)| c.as_str().unwrap().to_string())
                .collect();
            (key, r[vi].as_str().unwrap().parse::<f64>().unwrap())
        })
        .collect()
}

fn k(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

const SEX_M: &str = "CoMale00001";
const SEX_F: &str = "CoFemale001";

fn country() -> Value {
    json!({
        "organisationUnits": [
            unit("OuRoot00001", None),
            unit("OuDistA0001", Some("OuRoot00001")),
            unit("OuDistB0001", Some("OuRoot00001")),
            unit("OuFacA10001", Some("OuDistA0001")),
            unit("OuFacA20001", Some("OuDistA0001")),
            unit("OuFacB10001", Some("OuDistB0001")),
        ],
        "organisationUnitGroups": [{"id": "OugHosp0001", "name": "Hospitals", "shortName": "Hospitals",
            "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacB10001"}]}],
        "categoryOptions": [
            {"id": "OptMale0001", "name": "Male", "shortName": "Male"},
            {"id": "OptFemale01", "name": "Female", "shortName": "Female"}
        ],
        "categories": [{"id": "CatSex00001", "name": "Sex", "shortName": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categoryOptions": [{"id": "OptMale0001"}, {"id": "OptFemale01"}]}],
        "categoryCombos": [{"id": "CcSex000001", "name": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categories": [{"id": "CatSex00001"}]}],
        "categoryOptionCombos": [
            {"id": SEX_M, "name": "Male", "categoryCombo": {"id": "CcSex000001"}, "categoryOptions": [{"id": "OptMale0001"}]},
            {"id": SEX_F, "name": "Female", "categoryCombo": {"id": "CcSex000001"}, "categoryOptions": [{"id": "OptFemale01"}]}
        ],
        "dataElements": [
            {"id": "DeCases0001", "name": "Cases", "shortName": "Cases", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": false,
             "categoryCombo": {"id": "CcSex000001"}},
            {"id": "DeTested001", "name": "Tested", "shortName": "Tested", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "SUM"},
            {"id": "DeStock0001", "name": "Stock on hand", "shortName": "Stock", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "LAST", "zeroIsSignificant": true},
            {"id": "DePop000001", "name": "Population", "shortName": "Population", "valueType": "INTEGER_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "AVERAGE_SUM_ORG_UNIT"},
            {"id": "DeBeds00001", "name": "Beds", "shortName": "Beds", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "AVERAGE_SUM_ORG_UNIT"}
        ],
        "dataSets": [
            {"id": "DsMonth0001", "name": "Monthly", "shortName": "Monthly", "periodType": "Monthly",
             "expiryDays": 0, "openFuturePeriods": 2, "timelyDays": 10,
             "dataSetElements": [{"dataElement": {"id": "DeCases0001"}}, {"dataElement": {"id": "DeTested001"}},
                                 {"dataElement": {"id": "DeStock0001"}}, {"dataElement": {"id": "DeBeds00001"}}],
             "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}, {"id": "OuFacB10001"}]},
            {"id": "DsYear00001", "name": "Yearly", "shortName": "Yearly", "periodType": "Yearly",
             "expiryDays": 0, "openFuturePeriods": 1,
             "dataSetElements": [{"dataElement": {"id": "DePop000001"}}],
             "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}, {"id": "OuFacB10001"}]}
        ],
        "indicatorTypes": [{"id": "ItPercent01", "name": "Percent", "factor": 100},
                           {"id": "ItPer10000a", "name": "Per 1000", "factor": 1000},
                           {"id": "ItNumber001", "name": "Number", "factor": 1}],
        "indicators": [
            {"id": "InPosRate01", "name": "Positivity", "shortName": "Positivity", "indicatorType": {"id": "ItPercent01"},
             "numerator": "#{DeCases0001}", "denominator": "#{DeTested001}", "decimals": 1},
            {"id": "InIncid0001", "name": "Incidence per 1000", "shortName": "Incidence", "indicatorType": {"id": "ItPer10000a"},
             "numerator": "#{DeCases0001}", "denominator": "#{DePop000001}", "annualized": true},
            {"id": "InFemale001", "name": "Female share", "shortName": "Female share", "indicatorType": {"id": "ItPercent01"},
             "numerator": "#{DeCases0001.CoFemale001}", "denominator": "#{DeCases0001}"},
            {"id": "InNested001", "name": "Positivity plus hospitals", "shortName": "Nested", "indicatorType": {"id": "ItPer10000a"},
             "numerator": "N{InPosRate01} + OUG{OugHosp0001}", "denominator": "1"},
            {"id": "InPeriodNo1", "name": "Month of the year", "shortName": "Month no", "indicatorType": {"id": "ItNumber001"},
             "numerator": "[periodInYear] * 100 + [yearlyPeriodCount]", "denominator": "1"}
        ],
        "userRoles": [{"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]},
                      {"id": "RoleDist001", "name": "District", "authorities": ["M_dhis-web-dashboard"]}],
        "users": [
            {"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]},
            {"id": "UserDistA01", "username": "dista", "password": "District1!", "firstName": "D", "surname": "A",
             "userRoles": [{"id": "RoleDist001"}], "organisationUnits": [{"id": "OuDistA0001"}]}
        ]
    })
}

async fn post_values(server: &TestServer, body: Value) {
    let (status, reply) = server
        .post_json_as(ADMIN.0, ADMIN.1, "/api/dataValueSets", &body)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["response"]["status"], "SUCCESS", "{reply}");
}

fn dv(de: &str, pe: &str, ou: &str, coc: Option<&str>, value: &str) -> Value {
    let mut v = json!({"dataElement": de, "period": pe, "orgUnit": ou, "value": value});
    if let Some(c) = coc {
        v["categoryOptionCombo"] = json!(c);
    }
    v
}

async fn worked_by_hand(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    import_metadata(&server, country()).await;
    let mut values = vec![
        // Cases by sex, January and February 2026.
        dv("DeCases0001", "202601", "OuFacA10001", Some(SEX_M), "3"),
        dv("DeCases0001", "202601", "OuFacA10001", Some(SEX_F), "5"),
        dv("DeCases0001", "202601", "OuFacA20001", Some(SEX_F), "2"),
        dv("DeCases0001", "202601", "OuFacB10001", Some(SEX_M), "7"),
        dv("DeCases0001", "202602", "OuFacA10001", Some(SEX_M), "1"),
        dv("DeTested001", "202601", "OuFacA10001", None, "40"),
        dv("DeTested001", "202601", "OuFacA20001", None, "10"),
        dv("DeTested001", "202601", "OuFacB10001", None, "20"),
        dv("DeTested001", "202602", "OuFacA10001", None, "10"),
        // Stock: last value counts, looking back before the period.
        dv("DeStock0001", "202512", "OuFacA10001", None, "50"),
        dv("DeStock0001", "202601", "OuFacA10001", None, "30"),
        dv("DeStock0001", "202511", "OuFacA20001", None, "9"),
        // Beds: a day-weighted average over time, summed over units.
        dv("DeBeds00001", "202601", "OuFacA10001", None, "10"),
        dv("DeBeds00001", "202602", "OuFacA10001", None, "20"),
        // Yearly population.
        dv("DePop000001", "2026", "OuFacA10001", None, "1000"),
        dv("DePop000001", "2026", "OuFacA20001", None, "3000"),
        dv("DePop000001", "2026", "OuFacB10001", None, "2000"),
    ];
    values.push(dv("DeCases0001", "202603", "OuFacB10001", Some(SEX_F), "0"));
    post_values(&server, json!({"dataValues": values})).await;
    // Completions for reporting rates: A1 and B1 in January (A1 on time).
    for (ou, date) in [("OuFacA10001", "2026-02-05"), ("OuFacB10001", "2026-03-01")] {
        post_values(
            &server,
            json!({"dataSet": "DsMonth0001", "period": "202601", "orgUnit": ou, "completeDate": date, "dataValues": []}),
        )
        .await;
    }

    // A data element by month and district.
    let body = analytics(
        &server,
        "dimension=dx:DeCases0001&dimension=pe:202601;202602&dimension=ou:OuDistA0001;OuDistB0001",
    )
    .await;
    assert_eq!(body["headers"][0]["name"], "dx");
    assert_eq!(body["headers"][3]["name"], "value");
    assert_eq!(body["width"], 4);
    let r = rows(&body);
    assert_eq!(r[&k(&["DeCases0001", "202601", "OuDistA0001"])], 10.0);
    assert_eq!(r[&k(&["DeCases0001", "202601", "OuDistB0001"])], 7.0);
    assert_eq!(r[&k(&["DeCases0001", "202602", "OuDistA0001"])], 1.0);
    assert_eq!(r.len(), 3, "no row where there is no data: {body}");
    assert_eq!(body["metaData"]["items"]["202601"]["name"], "January 2026");
    assert_eq!(
        body["metaData"]["items"]["OuDistA0001"]["name"],
        "Unit OuDistA0001"
    );
    assert_eq!(
        body["metaData"]["dimensions"]["pe"],
        json!(["202601", "202602"])
    );
    // Cells are strings, as DHIS2 writes them.
    assert!(body["rows"][0][3].is_string());

    // Over a quarter (filter) at the root, the insignificant zero ignored.
    let r = analytics_rows(
        &server,
        "dimension=dx:DeCases0001;DeTested001&filter=pe:2026Q1&filter=ou:OuRoot00001",
    )
    .await;
    assert_eq!(r[&k(&["DeCases0001"])], 18.0);
    assert_eq!(r[&k(&["DeTested001"])], 80.0);

    // Operands and the category dimension.
    let r = analytics_rows(
        &server,
        &format!("dimension=dx:DeCases0001.{SEX_F}&dimension=pe:202601&filter=ou:OuRoot00001"),
    )
    .await;
    assert_eq!(r[&k(&[&format!("DeCases0001.{SEX_F}"), "202601"])], 7.0);
    let r = analytics_rows(
        &server,
        "dimension=dx:DeCases0001&dimension=CatSex00001&dimension=ou:OuDistA0001&filter=pe:202601",
    )
    .await;
    assert_eq!(r[&k(&["DeCases0001", "OptMale0001", "OuDistA0001"])], 3.0);
    assert_eq!(r[&k(&["DeCases0001", "OptFemale01", "OuDistA0001"])], 7.0);
    let r = analytics_rows(&server, "dimension=dx:DeCases0001&dimension=ou:OuRoot00001&filter=pe:202601&filter=CatSex00001:OptMale0001").await;
    assert_eq!(r[&k(&["DeCases0001", "OuRoot00001"])], 10.0);

    // LAST looks back; AVERAGE_SUM_ORG_UNIT weighs days and uses the yearly value.
    let r = analytics_rows(
        &server,
        "dimension=dx:DeStock0001;DePop000001&dimension=pe:202601;202602&dimension=ou:OuDistA0001",
    )
    .await;
    assert_eq!(r[&k(&["DeStock0001", "202601", "OuDistA0001"])], 39.0);
    assert_eq!(r[&k(&["DeStock0001", "202602", "OuDistA0001"])], 39.0);
    assert_eq!(r[&k(&["DePop000001", "202601", "OuDistA0001"])], 4000.0);
    let r = analytics_rows(
        &server,
        "dimension=dx:DeBeds00001&dimension=pe:2026Q1&dimension=ou:OuFacA10001&skipRounding=true",
    )
    .await;
    let want = (10.0 * 31.0 + 20.0 * 28.0) / 90.0;
    assert!((r[&k(&["DeBeds00001", "2026Q1", "OuFacA10001"])] - want).abs() < 1e-9);

    // Indicators: factor, decimals, annualisation, operands, nesting, OUG.
    let body = analytics(
        &server,
        "dimension=dx:InPosRate01;InIncid0001;InFemale001;InNested001&dimension=pe:202601&dimension=ou:OuDistA0001&skipRounding=true",
    )
    .await;
    let r = rows(&body);
    assert_eq!(r[&k(&["InPosRate01", "202601", "OuDistA0001"])], 20.0);
    let incidence = 10.0 * 1000.0 * (365.0 / 31.0) / 4000.0;
    assert!((r[&k(&["InIncid0001", "202601", "OuDistA0001"])] - incidence).abs() < 1e-9);
    assert_eq!(r[&k(&["InFemale001", "202601", "OuDistA0001"])], 70.0);
    assert_eq!(r[&k(&["InNested001", "202601", "OuDistA0001"])], 21_000.0);
    let r2 = analytics_rows(
        &server,
        "dimension=dx:InPeriodNo1&dimension=pe:202602;2026Q3&filter=ou:OuRoot00001",
    )
    .await;
    assert_eq!(r2[&k(&["InPeriodNo1", "202602"])], 212.0);
    assert_eq!(r2[&k(&["InPeriodNo1", "2026Q3"])], 304.0);
    assert_eq!(
        body["metaData"]["items"]["InPosRate01"]["name"],
        "Positivity"
    );
    // includeNumDen shows the parts.
    let body = analytics(
        &server,
        "dimension=dx:InPosRate01&filter=pe:202601&filter=ou:OuDistA0001&includeNumDen=true",
    )
    .await;
    let names: Vec<&str> = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "dx",
            "value",
            "numerator",
            "denominator",
            "factor",
            "multiplier",
            "divisor"
        ]
    );
    assert_eq!(
        body["rows"][0],
        json!(["InPosRate01", "20", "10", "50", "100", "100", "1"])
    );

    // Reporting rates: 2 of 3 expected, 1 on time; over the quarter 2 of 9.
    let r = analytics_rows(&server, "dimension=dx:DsMonth0001.REPORTING_RATE;DsMonth0001.REPORTING_RATE_ON_TIME;DsMonth0001.ACTUAL_REPORTS;DsMonth0001.EXPECTED_REPORTS&dimension=pe:202601;2026Q1&filter=ou:OuRoot00001&skipRounding=true").await;
    assert!((r[&k(&["DsMonth0001.REPORTING_RATE", "202601"])] - 200.0 / 3.0).abs() < 1e-9);
    assert!((r[&k(&["DsMonth0001.REPORTING_RATE_ON_TIME", "202601"])] - 100.0 / 3.0).abs() < 1e-9);
    assert_eq!(r[&k(&["DsMonth0001.ACTUAL_REPORTS", "2026Q1"])], 2.0);
    assert_eq!(r[&k(&["DsMonth0001.EXPECTED_REPORTS", "2026Q1"])], 9.0);

    // Org unit keywords and relative periods.
    let r = analytics_rows(&server, "dimension=dx:DeTested001&dimension=ou:OuRoot00001;LEVEL-3&filter=pe:LAST_3_MONTHS&relativePeriodDate=2026-04-10").await;
    assert_eq!(
        r.keys().map(|k| k[1].as_str()).collect::<Vec<_>>(),
        ["OuFacA10001", "OuFacA20001", "OuFacB10001"]
    );
    assert_eq!(r[&k(&["DeTested001", "OuFacA10001"])], 50.0);
    let r = analytics_rows(&server, "dimension=dx:DeTested001&dimension=ou:OU_GROUP-OugHosp0001&filter=pe:THIS_YEAR&relativePeriodDate=2026-06-01").await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[&k(&["DeTested001", "OuFacB10001"])], 20.0);
    let (status, body) = server
        .get_as(
            "dista",
            "District1!",
            "/api/analytics?dimension=dx:DeTested001&dimension=ou:USER_ORGUNIT;USER_ORGUNIT_CHILDREN&filter=pe:202601",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = rows(&body);
    assert_eq!(r[&k(&["DeTested001", "OuDistA0001"])], 50.0);
    assert_eq!(r[&k(&["DeTested001", "OuFacA20001"])], 10.0);
    assert_eq!(r.len(), 3);

    // Aggregates as a data value set.
    let body = analytics_path(
        &server,
        &format!("/api/analytics/dataValueSet.json?dimension=dx:DeTested001;DeCases0001.{SEX_F}&dimension=pe:202601&dimension=ou:OuDistA0001"),
    )
    .await;
    assert_eq!(
        body["dataValues"],
        json!([
            {"dataElement": "DeTested001", "period": "202601", "orgUnit": "OuDistA0001", "value": "50"},
            {"dataElement": "DeCases0001", "categoryOptionCombo": SEX_F, "period": "202601", "orgUnit": "OuDistA0001", "value": "7"}
        ])
    );

    // Codes or names instead of UIDs.
    let body = analytics(
        &server,
        "dimension=dx:DeTested001&dimension=ou:OuDistA0001&filter=pe:202601&outputIdScheme=NAME",
    )
    .await;
    assert_eq!(body["rows"][0], json!(["Tested", "Unit OuDistA0001", "50"]));
    assert!(body["metaData"]["items"]["Tested"].is_object(), "{body}");

    // CSV and skipMeta.
    let res = server
        .client()
        .get(server.url(
            "/api/analytics.csv?dimension=dx:DeTested001&dimension=pe:202601&filter=ou:OuRoot00001",
        ))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        "dx,pe,value\nDeTested001,202601,70\n"
    );
    let body = analytics(
        &server,
        "dimension=dx:DeTested001&dimension=pe:202601&filter=ou:OuRoot00001&skipMeta=true",
    )
    .await;
    assert!(body.get("metaData").is_none());

    // Scope: a district user sees only their district.
    let (status, body) = server
        .get_as(
            "dista",
            "District1!",
            "/api/analytics?dimension=dx:DeTested001&dimension=ou:OuDistB0001&filter=pe:202601",
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errorCode"], "E7120");
    assert!(body["message"].as_str().unwrap().contains("OuDistB0001"));

    // Bad input: a clear 409 naming the offending part, never a 500.
    for (q, part) in [
        ("dimension=pe:202601&filter=ou:OuRoot00001", "dx"),
        ("dimension=dx:NoSuchThing&filter=pe:202601", "NoSuchThing"),
        ("dimension=dx:DeTested001&filter=pe:2026M13", "2026M13"),
        (
            "dimension=dx:DeTested001&filter=pe:LAST_7_FORTNIGHTS",
            "LAST_7_FORTNIGHTS",
        ),
        ("dimension=dx:DeTested001", "period"),
        (
            "dimension=dx:DeTested001&filter=pe:202601&dimension=ou:LEVEL-x",
            "LEVEL-x",
        ),
        (
            "dimension=dx:DeTested001&filter=pe:202601&dimension=ou:NoSuchUnit1",
            "NoSuchUnit1",
        ),
        (
            "dimension=dx:DeTested001&filter=pe:202601&dimension=xyz:abc",
            "xyz",
        ),
        (
            "dimension=dx:DeTested001.NoSuchCoc01&filter=pe:202601",
            "NoSuchCoc01",
        ),
        (
            "dimension=dx:DsMonth0001.NOT_A_METRIC&filter=pe:202601",
            "NOT_A_METRIC",
        ),
        (
            "dimension=dx:DeTested001&filter=pe:202601&aggregationType=MEDIANISH",
            "MEDIANISH",
        ),
        (
            "dimension=dx:DeTested001&filter=pe:202601&measureCriteria=XX:1",
            "XX",
        ),
        (
            "filter=dx:InPosRate01;InIncid0001&dimension=pe:202601",
            "single indicator",
        ),
    ] {
        let (status, body) = server
            .get_as(ADMIN.0, ADMIN.1, &format!("/api/analytics?{q}"))
            .await;
        assert_eq!(status, 409, "{q}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(part),
            "{q}: {body}"
        );
        assert!(
            body["errorCode"].as_str().unwrap().starts_with("E71"),
            "{body}"
        );
    }
    server.stop().await;
}

/// A value just imported shows in analytics at once: no nightly rebuild.
async fn live(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    import_metadata(&server, country()).await;
    post_values(
        &server,
        json!({"dataValues": [dv("DeTested001", "202601", "OuFacA10001", None, "40")]}),
    )
    .await;
    let q = "dimension=dx:DeTested001&filter=pe:202601&filter=ou:OuRoot00001";
    assert_eq!(analytics_rows(&server, q).await[&k(&["DeTested001"])], 40.0);
    // Update, add and delete; each visible on the next query.
    post_values(
        &server,
        json!({"dataValues": [dv("DeTested001", "202601", "OuFacA10001", None, "45"),
                              dv("DeTested001", "202601", "OuFacB10001", None, "5")]}),
    )
    .await;
    assert_eq!(analytics_rows(&server, q).await[&k(&["DeTested001"])], 50.0);
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/dataValueSets?importStrategy=DELETE",
            &json!({"dataValues": [dv("DeTested001", "202601", "OuFacB10001", None, "5")]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(analytics_rows(&server, q).await[&k(&["DeTested001"])], 45.0);
    server.stop().await;
}

async fn start_with_config(
    backend: Backend,
    config: hisa_server::state::Config,
) -> Option<TestServer> {
    let options = hisa_tests::StartOptions {
        config,
        ..Default::default()
    };
    TestServer::start_with(backend, options).await
}

/// With warm-up on (as `hisa-server serve` runs), a restarted server reads
/// the data into memory before any query asks for it.
async fn warm_up_after_restart(backend: Backend) {
    let config = hisa_server::state::Config {
        analytics_warm_up: true,
        ..Default::default()
    };
    let Some(server) = start_with_config(backend, config).await else {
        return;
    };
    import_metadata(&server, country()).await;
    post_values(
        &server,
        json!({"dataValues": [
            dv("DeTested001", "202601", "OuFacA10001", None, "40"),
            dv("DeStock0001", "202601", "OuFacB10001", None, "8"),
            dv("DePop000001", "2026", "OuFacB10001", None, "800"),
        ]}),
    )
    .await;
    let server = server.restart().await;
    server.services.analytics.warmed().await;
    assert_eq!(
        server.services.analytics.cells(),
        3,
        "every value is in memory before the first query"
    );
    let r = analytics_rows(
        &server,
        "dimension=dx:DeTested001;DeStock0001&filter=pe:202601&filter=ou:OuRoot00001",
    )
    .await;
    assert_eq!(r[&k(&["DeTested001"])], 40.0);
    assert_eq!(r[&k(&["DeStock0001"])], 8.0);
    server.stop().await;
}

/// Past its cell limit the cube drops the least recently used elements and
/// reads them again when asked: answers stay right, memory stays bounded.
async fn memory_stays_bounded(backend: Backend) {
    let config = hisa_server::state::Config {
        analytics_max_cells: 3,
        ..Default::default()
    };
    let Some(server) = start_with_config(backend, config).await else {
        return;
    };
    import_metadata(&server, country()).await;
    post_values(
        &server,
        json!({"dataValues": [
            dv("DeTested001", "202601", "OuFacA10001", None, "40"),
            dv("DeTested001", "202601", "OuFacB10001", None, "2"),
            dv("DeStock0001", "202601", "OuFacA10001", None, "7"),
            dv("DeStock0001", "202601", "OuFacB10001", None, "8"),
        ]}),
    )
    .await;
    let total = |de: &'static str| {
        let server = &server;
        async move {
            let q = format!("dimension=dx:{de}&filter=pe:202601&filter=ou:OuRoot00001");
            rows(&analytics(server, &q).await)[&k(&[de])]
        }
    };
    assert_eq!(total("DeTested001").await, 42.0);
    assert_eq!(server.services.analytics.cells(), 2);
    assert_eq!(total("DeStock0001").await, 15.0);
    assert_eq!(
        server.services.analytics.cells(),
        2,
        "the older column was dropped"
    );
    assert_eq!(total("DeTested001").await, 42.0, "and read again");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Random countries against a brute-force computation

#[derive(Debug, Clone)]
struct Fact {
    de: usize,
    unit: usize,
    coc: &'static str,
    month: u32,
    value: f64,
}

/// Days of month `m` (1-based) of 2025.
fn days_in(m: u32) -> f64 {
    [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(m - 1) as usize] as f64
}

const KINDS: [&str; 6] = [
    "SUM",
    "COUNT",
    "AVERAGE",
    "MAX",
    "AVERAGE_SUM_ORG_UNIT",
    "LAST",
];

/// DHIS2's definition for one data element, one subtree, one run of months.
fn brute(kind: &str, facts: &[&Fact], months: &[u32]) -> Option<f64> {
    let inside: Vec<&&Fact> = facts.iter().filter(|f| months.contains(&f.month)).collect();
    let vals: Vec<f64> = inside.iter().map(|f| f.value).collect();
    let series = |fs: &[&&Fact]| {
        let mut by: BTreeMap<(usize, &str), Vec<(u32, f64)>> = BTreeMap::new();
        for f in fs {
            by.entry((f.unit, f.coc))
                .or_default()
                .push((f.month, f.value));
        }
        by
    };
    match kind {
        "SUM" => (!vals.is_empty()).then(|| vals.iter().sum()),
        "COUNT" => (!vals.is_empty()).then_some(vals.len() as f64),
        "AVERAGE" => (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
        "MAX" => vals.iter().copied().reduce(f64::max),
        "AVERAGE_SUM_ORG_UNIT" => {
            let days: f64 = months.iter().map(|m| days_in(*m)).sum();
            let s = series(&inside);
            (!s.is_empty()).then(|| {
                s.values()
                    .map(|v| v.iter().map(|(m, x)| x * days_in(*m)).sum::<f64>() / days)
                    .sum()
            })
        }
        "LAST" => {
            let end = *months.iter().max().unwrap();
            let before: Vec<&&Fact> = facts.iter().filter(|f| f.month <= end).collect();
            let s = series(&before);
            (!s.is_empty()).then(|| {
                s.values()
                    .map(|v| v.iter().max_by_key(|(m, _)| *m).unwrap().1)
                    .sum()
            })
        }
        _ => unreachable!(),
    }
}

async fn random_countries_match_brute_force(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(20261127);
    // A hierarchy of 4 levels with random branching.
    let mut units: Vec<(String, Option<usize>)> = vec![("RndRoot0000".into(), None)];
    let mut frontier = vec![0usize];
    for level in 2..=4 {
        let mut next = Vec::new();
        for &p in &frontier {
            for _ in 0..rng.gen_range(1..=3) {
                let id = format!("RndU{level}{:06}", units.len());
                units.push((id, Some(p)));
                next.push(units.len() - 1);
            }
        }
        frontier = next;
    }
    let parent_of = |i: usize| units[i].1;
    let within = |u: usize, root: usize| {
        let mut at = Some(u);
        while let Some(x) = at {
            if x == root {
                return true;
            }
            at = parent_of(x);
        }
        false
    };
    let mut meta = country();
    meta["organisationUnits"] = json!(units
        .iter()
        .map(|(id, p)| unit(id, p.map(|p| units[p].0.as_str())))
        .collect::<Vec<_>>());
    meta["users"][0]["organisationUnits"] = json!([{"id": "RndRoot0000"}]);
    meta["users"].as_array_mut().unwrap().truncate(1);
    meta.as_object_mut()
        .unwrap()
        .remove("organisationUnitGroups");
    let des: Vec<String> = (0..KINDS.len()).map(|i| format!("DeRand{i:05}")).collect();
    meta["dataElements"] = json!(KINDS
        .iter()
        .enumerate()
        .map(|(i, kind)| json!({"id": des[i], "name": format!("Random {kind}"), "shortName": format!("R{i}"),
            "valueType": "INTEGER", "domainType": "AGGREGATE", "aggregationType": kind,
            "zeroIsSignificant": true, "categoryCombo": {"id": "CcSex000001"}}))
        .collect::<Vec<_>>());
    // Every unit may report (not only leaves): aggregation takes a unit's own data too.
    meta["dataSets"] = json!([{"id": "DsRandom001", "name": "Random", "shortName": "Random", "periodType": "Monthly",
        "expiryDays": 0, "openFuturePeriods": 2,
        "dataSetElements": des.iter().map(|d| json!({"dataElement": {"id": d}})).collect::<Vec<_>>(),
        "organisationUnits": units.iter().map(|(id, _)| json!({"id": id})).collect::<Vec<_>>()}]);
    meta["indicators"] = json!([{"id": "InRandom001", "name": "Sum over count", "shortName": "Ratio",
        "indicatorType": {"id": "ItPercent01"}, "numerator": format!("#{{{}}}", des[0]),
        "denominator": format!("#{{{}}}", des[1])}]);
    import_metadata(&server, meta).await;

    let mut facts: Vec<Fact> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..400 {
        let f = Fact {
            de: rng.gen_range(0..des.len()),
            unit: rng.gen_range(0..units.len()),
            coc: if rng.gen_bool(0.5) { SEX_M } else { SEX_F },
            month: rng.gen_range(1..=12),
            value: f64::from(rng.gen_range(-20..200)),
        };
        if seen.insert((f.de, f.unit, f.coc, f.month)) {
            facts.push(f);
        }
    }
    let values: Vec<Value> = facts
        .iter()
        .map(|f| {
            dv(
                &des[f.de],
                &format!("2025{:02}", f.month),
                &units[f.unit].0,
                Some(f.coc),
                &format!("{}", f.value as i64),
            )
        })
        .collect();
    post_values(&server, json!({"dataValues": values})).await;
    // Random completions.
    let mut completed: HashMap<(usize, u32), bool> = HashMap::new();
    for (u, (uid, _)) in units.iter().enumerate() {
        for m in 1..=12u32 {
            if rng.gen_bool(0.3) {
                completed.insert((u, m), true);
                post_values(
                    &server,
                    json!({"dataSet": "DsRandom001", "period": format!("2025{m:02}"), "orgUnit": uid,
                           "completeDate": "2026-01-20", "dataValues": []}),
                )
                .await;
            }
        }
    }

    let periods: Vec<(String, Vec<u32>)> = vec![
        ("202503".into(), vec![3]),
        ("2025Q2".into(), vec![4, 5, 6]),
        ("2025S2".into(), (7..=12).collect()),
        ("2025".into(), (1..=12).collect()),
    ];
    let pe = periods
        .iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let ou = units
        .iter()
        .map(|u| u.0.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let dx = des.join(";");
    let body = analytics(
        &server,
        &format!("dimension=dx:{dx};InRandom001;DsRandom001.REPORTING_RATE&dimension=pe:{pe}&dimension=ou:{ou}&skipRounding=true&ignoreLimit=true"),
    )
    .await;
    let got = rows(&body);
    let mut checked = 0;
    for (ui, (uid, _)) in units.iter().enumerate() {
        let sub: Vec<&Fact> = facts.iter().filter(|f| within(f.unit, ui)).collect();
        for (iso, months) in &periods {
            let mut per_kind = Vec::new();
            for (di, kind) in KINDS.iter().enumerate() {
                let mine: Vec<&Fact> = sub.iter().copied().filter(|f| f.de == di).collect();
                let want = brute(kind, &mine, months);
                per_kind.push(want);
                let have = got.get(&k(&[&des[di], iso, uid])).copied();
                match (want, have) {
                    (Some(w), Some(h)) => assert!(
                        (w - h).abs() < 1e-6 * w.abs().max(1.0),
                        "{kind} {iso} {uid}: want {w}, got {h}"
                    ),
                    (w, h) => assert_eq!(w, h, "{kind} {iso} {uid}"),
                }
                checked += 1;
            }
            // The indicator: SUM ÷ COUNT × 100.
            let want = match (per_kind[0], per_kind[1]) {
                (Some(n), Some(d)) if d != 0.0 => Some(n * 100.0 / d),
                _ => None,
            };
            let have = got.get(&k(&["InRandom001", iso, uid])).copied();
            match (want, have) {
                (Some(w), Some(h)) => assert!(
                    (w - h).abs() < 1e-6 * w.abs().max(1.0),
                    "indicator {iso} {uid}: {w} vs {h}"
                ),
                (w, h) => assert_eq!(w, h, "indicator {iso} {uid}"),
            }
            // Reporting rate: completions ÷ (units in the subtree × months).
            let expected = units
                .iter()
                .enumerate()
                .filter(|(u, _)| within(*u, ui))
                .count()
                * months.len();
            let actual = completed
                .keys()
                .filter(|(u, m)| within(*u, ui) && months.contains(m))
                .count();
            let have = got
                .get(&k(&["DsRandom001.REPORTING_RATE", iso, uid]))
                .copied();
            let want = actual as f64 * 100.0 / expected as f64;
            assert!(
                have.is_some_and(|h| (h - want).abs() < 1e-9),
                "reporting rate {iso} {uid}: want {want}, got {have:?}"
            );
        }
    }
    assert!(checked > 100);
    server.stop().await;
}

on_both_stores!(
    worked_by_hand,
    live,
    memory_stays_bounded,
    warm_up_after_restart,
    random_countries_match_brute_force
);
