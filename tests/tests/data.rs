//! Aggregate data in and out, as DHIS2 scripts, clients and interoperability
//! jobs drive it: `/api/dataValueSets` in JSON, CSV and ADX, single values,
//! completions, the audit trail. On both stores.

use hisa_shared::period::{Period, PeriodType};
use hisa_tests::{on_both_stores, Backend, StartOptions, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");
const CLERK: (&str, &str) = ("clerk.a", "Clerk123!");

fn this_month() -> Period {
    Period::containing(PeriodType::Monthly, time::OffsetDateTime::now_utc().date())
}

/// A small country whose lock rules are known: DsOpen00001 takes this
/// month and last month for ever; DsLocked001 expires a day after a period.
fn fixture() -> Value {
    json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "code": "ROOT", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            {"id": "OuDistA0001", "code": "DA", "name": "District A", "shortName": "A", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuDistB0001", "code": "DB", "name": "District B", "shortName": "B", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacA10001", "code": "FA1", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "OuFacB10001", "code": "FB1", "name": "Facility B1", "shortName": "B1", "openingDate": "1990-01-01", "parent": {"id": "OuDistB0001"}},
            {"id": "OuClosed001", "code": "FCL", "name": "Closed", "shortName": "Closed", "openingDate": "1990-01-01", "closedDate": "2000-01-01", "parent": {"id": "OuDistA0001"}}
        ],
        "categoryOptions": [
            {"id": "OptMale0001", "code": "M", "name": "Male", "shortName": "Male"},
            {"id": "OptFemale01", "code": "F", "name": "Female", "shortName": "Female"}
        ],
        "categories": [{"id": "CatSex00001", "code": "SEX", "name": "Sex", "shortName": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categoryOptions": [{"id": "OptMale0001"}, {"id": "OptFemale01"}]}],
        "categoryCombos": [{"id": "ComboSex001", "code": "SEXCC", "name": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categories": [{"id": "CatSex00001"}]}],
        "categoryOptionCombos": [
            {"id": "CocMale0001", "code": "COC_M", "name": "Male", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptMale0001"}]},
            {"id": "CocFemale01", "code": "COC_F", "name": "Female", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptFemale01"}]}
        ],
        "optionSets": [{"id": "OsStock0001", "name": "Stock", "valueType": "TEXT", "options": [{"id": "OptAdequat1"}, {"id": "OptLow00001"}]}],
        "options": [
            {"id": "OptAdequat1", "code": "ADEQUATE", "name": "Adequate", "optionSet": {"id": "OsStock0001"}},
            {"id": "OptLow00001", "code": "LOW", "name": "Low", "optionSet": {"id": "OsStock0001"}}
        ],
        "dataElements": [
            {"id": "DeCases0001", "code": "CASES", "name": "Cases", "shortName": "Cases", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": false, "categoryCombo": {"id": "ComboSex001"}},
            {"id": "DeDeaths001", "code": "DEATHS", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER",
             "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true},
            {"id": "DeStock0001", "code": "STOCK", "name": "Stock", "shortName": "Stock", "valueType": "TEXT",
             "domainType": "AGGREGATE", "aggregationType": "NONE", "optionSet": {"id": "OsStock0001"}},
            {"id": "DeLocked001", "code": "LOCKED", "name": "Locked", "shortName": "Locked", "valueType": "NUMBER",
             "domainType": "AGGREGATE", "aggregationType": "SUM"}
        ],
        "dataSets": [
            {"id": "DsOpen00001", "code": "OPEN", "name": "Open", "shortName": "Open", "periodType": "Monthly",
             "expiryDays": 0, "openFuturePeriods": 1, "timelyDays": 10,
             "dataSetElements": [{"dataElement": {"id": "DeCases0001"}}, {"dataElement": {"id": "DeDeaths001"}}, {"dataElement": {"id": "DeStock0001"}}],
             "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacB10001"}, {"id": "OuClosed001"}]},
            {"id": "DsLocked001", "code": "LOCKEDDS", "name": "Locked", "shortName": "Locked", "periodType": "Monthly",
             "expiryDays": 1, "openFuturePeriods": 0,
             "dataSetElements": [{"dataElement": {"id": "DeLocked001"}}],
             "organisationUnits": [{"id": "OuFacA10001"}]}
        ],
        "userRoles": [
            {"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]},
            {"id": "RoleClerk01", "name": "Clerk", "authorities": ["F_DATAVALUE_ADD"]}
        ],
        "users": [
            {"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]},
            {"id": "UserClerkA1", "username": "clerk.a", "password": "Clerk123!", "firstName": "C", "surname": "A",
             "userRoles": [{"id": "RoleClerk01"}], "organisationUnits": [{"id": "OuDistA0001"}]}
        ]
    })
}

async fn country(backend: Backend, options: StartOptions) -> Option<TestServer> {
    let server = TestServer::start_with(backend, options).await?;
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
    Some(server)
}

async fn post(
    server: &TestServer,
    who: (&str, &str),
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let r = server
        .client()
        .post(server.url(path))
        .basic_auth(who.0, Some(who.1))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_text(server: &TestServer, who: (&str, &str), path: &str) -> (u16, String) {
    let r = server
        .client()
        .get(server.url(path))
        .basic_auth(who.0, Some(who.1))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn codes(summary: &Value) -> Vec<String> {
    let mut c: Vec<String> = summary["response"]["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["errorCode"].as_str().unwrap().to_string())
        .collect();
    c.sort();
    c
}

async fn stored(server: &TestServer) -> i64 {
    server
        .services
        .store
        .data_counts()
        .await
        .unwrap()
        .data_values
}

async fn json_import_counts_and_conflicts(backend: Backend) {
    let Some(server) = country(backend, StartOptions::default()).await else {
        return;
    };
    let pe = this_month().iso();
    let payload = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "value": "12"},
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocFemale01", "value": 7, "comment": "two referred"},
        {"dataElement": "DeDeaths001", "value": "0"},
        {"dataElement": "DeStock0001", "value": "LOW"},
        {"dataElement": "NoSuchDe001", "value": "1"},
        {"dataElement": "DeDeaths001", "value": "1.5", "orgUnit": "OuFacB10001"},
        {"dataElement": "DeStock0001", "value": "PLENTY", "orgUnit": "OuFacB10001"},
        {"dataElement": "DeDeaths001", "categoryOptionCombo": "CocMale0001", "value": "3", "orgUnit": "OuFacB10001"}
    ]});
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        payload.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "WARNING");
    let r = &body["response"];
    assert_eq!(
        r["importCount"],
        json!({"imported": 4, "updated": 0, "ignored": 4, "deleted": 0})
    );
    assert_eq!(codes(&body), ["E7610", "E7619", "E7621", "E7634"]);
    assert_eq!(r["rejectedIndexes"], json!([4, 5, 6, 7]));
    assert_eq!(stored(&server).await, 4);

    // One key twice in one payload: the later value wins, both are counted.
    let twice = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacB10001", "dataValues": [
        {"dataElement": "DeDeaths001", "value": "1"}, {"dataElement": "DeDeaths001", "value": "2"}]});
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        twice.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(
        body["response"]["importCount"],
        json!({"imported": 1, "updated": 1, "ignored": 0, "deleted": 0})
    );
    let (_, text) = get_text(
        &server,
        ADMIN,
        &format!("/api/dataValueSets?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacB10001"),
    )
    .await;
    assert!(text.contains("\"value\":\"2\""), "{text}");
    let twice_back = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacB10001", "dataValues": [
        {"dataElement": "DeDeaths001", "value": "1", "deleted": true}]});
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        twice_back.to_string(),
    )
    .await;
    assert_eq!(body["response"]["importCount"]["deleted"], 1);

    // The same payload again: nothing duplicated, unchanged values ignored.
    let (_, again) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        payload.to_string(),
    )
    .await;
    assert_eq!(
        again["response"]["importCount"],
        json!({"imported": 0, "updated": 0, "ignored": 8, "deleted": 0})
    );
    assert_eq!(stored(&server).await, 4);

    // A changed value is an update, audited with what it was.
    let change = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "value": "13"}]});
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        change.to_string(),
    )
    .await;
    assert_eq!(body["response"]["importCount"]["updated"], 1);
    let (status, audits) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/audits/dataValue?de=DeCases0001&ou=OuFacA10001",
        )
        .await;
    assert_eq!(status, 200);
    let audits = audits["dataValueAudits"].as_array().unwrap();
    let update = audits
        .iter()
        .find(|a| a["auditType"] == "UPDATE")
        .expect("update audited");
    assert_eq!(update["previousValue"], "12");
    assert_eq!(update["newValue"], "13");
    assert_eq!(update["modifiedBy"], "admin");
    assert_eq!(update["channel"], "api");
    assert_eq!(
        audits.iter().filter(|a| a["auditType"] == "CREATE").count(),
        2
    );

    // Export: the values come back with DHIS2's members.
    let (status, text) = get_text(
        &server,
        ADMIN,
        &format!("/api/dataValueSets?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacA10001"),
    )
    .await;
    assert_eq!(status, 200);
    let set: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(set["dataSet"], "DsOpen00001");
    let values = set["dataValues"].as_array().unwrap();
    assert_eq!(values.len(), 4);
    let male = values
        .iter()
        .find(|v| v["categoryOptionCombo"] == "CocMale0001")
        .unwrap();
    assert_eq!(male["value"], "13");
    assert_eq!(male["attributeOptionCombo"], "HllvX50cXC0");
    assert!(male["lastUpdated"].as_str().unwrap().ends_with("+0000"));
    let female = values
        .iter()
        .find(|v| v["categoryOptionCombo"] == "CocFemale01")
        .unwrap();
    assert_eq!(female["comment"], "two referred");
    server.stop().await;
}

async fn rules_and_locks(backend: Backend) {
    let Some(server) = country(backend, StartOptions::default()).await else {
        return;
    };
    let now = this_month();
    let cases = |pe: String, ou: &str, ds: &str, de: &str| {
        json!({"dataSet": ds, "period": pe, "orgUnit": ou,
        "dataValues": [{"dataElement": de, "categoryOptionCombo": if de == "DeCases0001" { "CocMale0001" } else { "HllvX50cXC0" }, "value": "5"}]})
    };
    for (payload, code, who) in [
        // Two periods ahead: past the latest open future period.
        (
            cases(
                now.next().next().iso(),
                "OuFacA10001",
                "DsOpen00001",
                "DeCases0001",
            ),
            "E7641",
            ADMIN,
        ),
        // Expired a day after the period ended (superusers hold F_EDIT_EXPIRED; clerks do not).
        (
            cases(
                now.previous().previous().iso(),
                "OuFacA10001",
                "DsLocked001",
                "DeLocked001",
            ),
            "E7640",
            CLERK,
        ),
        // A quarter for a monthly data set.
        (
            cases(
                Period::containing(PeriodType::Quarterly, now.start_date()).iso(),
                "OuFacA10001",
                "DsOpen00001",
                "DeCases0001",
            ),
            "E7632",
            ADMIN,
        ),
        // Not assigned to the district.
        (
            cases(now.iso(), "OuDistA0001", "DsOpen00001", "DeCases0001"),
            "E7636",
            ADMIN,
        ),
        // Closed in 2000.
        (
            cases(now.iso(), "OuClosed001", "DsOpen00001", "DeCases0001"),
            "E8031",
            ADMIN,
        ),
        // The clerk of district A writing for district B.
        (
            cases(now.iso(), "OuFacB10001", "DsOpen00001", "DeCases0001"),
            "E7617",
            CLERK,
        ),
        // Not an element of that data set.
        (
            cases(now.iso(), "OuFacA10001", "DsLocked001", "DeCases0001"),
            "E7633",
            ADMIN,
        ),
    ] {
        let (status, body) = post(
            &server,
            who,
            "/api/dataValueSets",
            "application/json",
            payload.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(codes(&body), [code], "{payload}: {body:#}");
    }
    assert_eq!(stored(&server).await, 0);
    // The clerk may write in their own district; a superuser may force a lock.
    let (_, body) = post(
        &server,
        CLERK,
        "/api/dataValueSets",
        "application/json",
        cases(now.iso(), "OuFacA10001", "DsOpen00001", "DeCases0001").to_string(),
    )
    .await;
    assert_eq!(body["response"]["importCount"]["imported"], 1, "{body:#}");
    let expired = cases(
        now.previous().previous().iso(),
        "OuFacA10001",
        "DsLocked001",
        "DeLocked001",
    );
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        expired.to_string(),
    )
    .await;
    assert_eq!(
        body["response"]["importCount"]["imported"], 1,
        "F_EDIT_EXPIRED: {body:#}"
    );
    let future = cases(
        now.next().next().iso(),
        "OuFacA10001",
        "DsOpen00001",
        "DeCases0001",
    );
    let (_, body) = post(
        &server,
        CLERK,
        "/api/dataValueSets?force=true",
        "application/json",
        future.to_string(),
    )
    .await;
    assert_eq!(codes(&body), ["E7641"], "force is for superusers only");
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets?force=true",
        "application/json",
        future.to_string(),
    )
    .await;
    assert_eq!(body["response"]["importCount"]["imported"], 1, "{body:#}");
    server.stop().await;
}

async fn bad_bodies_write_nothing(backend: Backend) {
    let Some(server) = country(
        backend,
        StartOptions {
            config: hisa_server::state::Config {
                data_body_limit: 64 * 1024,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let pe = this_month().iso();
    let good =
        json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "value": "12"},
        {"dataElement": "DeDeaths001", "value": "2"}]})
        .to_string();
    // Cut anywhere: a clear error, nothing written.
    for cut in [
        1,
        good.len() / 3,
        good.len() / 2,
        good.len() - 3,
        good.len() - 1,
    ] {
        let (status, body) = post(
            &server,
            ADMIN,
            "/api/dataValueSets",
            "application/json",
            good[..cut].to_string(),
        )
        .await;
        assert_eq!(status, 409, "cut at {cut}: {body}");
        assert_eq!(body["response"]["status"], "ERROR");
        assert!(
            body["response"]["conflicts"][0]["value"]
                .as_str()
                .unwrap()
                .contains("Malformed"),
            "{body}"
        );
        assert_eq!(stored(&server).await, 0, "cut at {cut} wrote something");
    }
    // Set-level members after the values: refused, not misapplied.
    let late = format!("{{\"dataValues\":[{{\"dataElement\":\"DeDeaths001\",\"value\":\"2\",\"period\":\"{pe}\",\"orgUnit\":\"OuFacA10001\"}}],\"attributeOptionCombo\":\"HllvX50cXC0\"}}");
    let (status, _) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        late,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(stored(&server).await, 0);
    // Unknown set-level data set: aborted.
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        json!({"dataSet": "NoSuchDs001", "dataValues": []}).to_string(),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(codes(&body), ["E7600"]);
    // Over the configured limit: 413.
    let big = json!({"dataValues": (0..3000).map(|i| json!({"dataElement": "DeDeaths001", "value": i.to_string(), "period": pe, "orgUnit": "OuFacA10001"})).collect::<Vec<_>>()}).to_string();
    assert!(big.len() > 64 * 1024);
    let (status, _) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        big,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(stored(&server).await, 0);
    // Not a format we read.
    let (status, _) = post(&server, ADMIN, "/api/dataValueSets", "text/plain", "x").await;
    assert_eq!(status, 415);
    // atomic: one bad value, nothing stored.
    let mixed = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeDeaths001", "value": "2"}, {"dataElement": "DeDeaths001", "value": "two", "categoryOptionCombo": "HllvX50cXC0"}]});
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets?atomic=true",
        "application/json",
        mixed.to_string(),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(stored(&server).await, 0);
    // dryRun counts but writes nothing.
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets?dryRun=true",
        "application/json",
        good.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["importCount"]["imported"], 2);
    assert_eq!(stored(&server).await, 0);
    server.stop().await;
}

async fn csv_adx_gzip_delete_and_zeros(backend: Backend) {
    let Some(server) = country(backend, StartOptions::default()).await else {
        return;
    };
    let pe = this_month().iso();
    let csv = format!("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,comment,followup\n\
        DeCases0001,{pe},OuFacA10001,CocMale0001,,4,nurse,,,false\n\
        DeCases0001,{pe},OuFacA10001,CocFemale01,,\"6\",,,\"a, quoted comment\",true\n");
    let (status, body) = post(&server, ADMIN, "/api/dataValueSets", "application/csv", csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["importCount"]["imported"], 2, "{body:#}");

    // ADX by codes, disaggregated by category attributes; a text value as annotation.
    let start = this_month().start_date();
    let adx = format!(
        r#"<adx xmlns="urn:ihe:qrph:adx:2015" exported="2024-04-03T08:00:00Z">
      <group orgUnit="FB1" period="{start}/P1M" dataSet="OPEN" completeDate="{start}">
        <dataValue dataElement="CASES" SEX="F" value="9"/>
        <dataValue dataElement="STOCK" value="0"><annotation>ADEQUATE</annotation></dataValue>
      </group></adx>"#
    );
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/adx+xml",
        adx,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["importCount"]["imported"], 2, "{body:#}");
    assert_eq!(body["response"]["dataSetComplete"], start.to_string());
    let (_, regs) = server.get_as(ADMIN.0, ADMIN.1, &format!("/api/completeDataSetRegistrations?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacB10001")).await;
    assert_eq!(
        regs["completeDataSetRegistrations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Gzip-encoded JSON.
    let json_body = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacB10001", "dataValues": [{"dataElement": "DeDeaths001", "value": "1"}]}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, json_body.as_bytes()).unwrap();
    let r = server
        .client()
        .post(server.url("/api/dataValueSets"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["response"]["importCount"]["imported"], 1, "{body:#}");

    // CSV and ADX exports carry what was stored.
    let (_, text) = get_text(&server, ADMIN, &format!("/api/dataValueSets.csv?dataSet=DsOpen00001&period={pe}&orgUnit=OuRoot00001&children=true")).await;
    assert_eq!(text.lines().count(), 1 + 5, "{text}");
    assert!(text.contains("\"a, quoted comment\""));
    let (_, adx) = get_text(
        &server,
        ADMIN,
        &format!("/api/dataValueSets.adx?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacB10001"),
    )
    .await;
    assert!(
        adx.contains("<annotation>ADEQUATE</annotation>") && adx.contains("dataElement=\"CASES\""),
        "{adx}"
    );

    // An insignificant zero is not stored; over an existing value it deletes it.
    let zero = |v: &str| {
        json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "value": v}]})
        .to_string()
    };
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        zero("0"),
    )
    .await;
    assert_eq!(body["response"]["importCount"]["deleted"], 1, "{body:#}");
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets",
        "application/json",
        zero("0"),
    )
    .await;
    assert_eq!(
        body["response"]["importCount"],
        json!({"imported": 0, "updated": 0, "ignored": 0, "deleted": 0})
    );

    // importStrategy=DELETE soft-deletes; includeDeleted shows them.
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets?importStrategy=DELETE",
        "application/json",
        zero("6"),
    )
    .await;
    assert_eq!(
        body["response"]["importCount"]["ignored"], 1,
        "already gone"
    );
    let female =
        json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocFemale01", "value": "6"}]})
        .to_string();
    let (_, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets?importStrategy=DELETE",
        "application/json",
        female,
    )
    .await;
    assert_eq!(body["response"]["importCount"]["deleted"], 1);
    let (_, text) = get_text(&server, ADMIN, &format!("/api/dataValueSets?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacA10001&includeDeleted=true")).await;
    let set: Value = serde_json::from_str(&text).unwrap();
    assert!(set["dataValues"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["deleted"] == true));
    server.stop().await;
}

async fn single_values_and_completions(backend: Backend) {
    let Some(server) = country(backend, StartOptions::default()).await else {
        return;
    };
    let pe = this_month().iso();
    let client = server.client();
    let url = |q: &str| server.url(&format!("/api/dataValues?{q}"));
    let r = client
        .post(url(&format!(
            "de=DeCases0001&pe={pe}&ou=OuFacA10001&co=CocMale0001&value=21&comment=ok"
        )))
        .basic_auth(CLERK.0, Some(CLERK.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = client
        .get(url(&format!(
            "de=DeCases0001&pe={pe}&ou=OuFacA10001&co=CocMale0001"
        )))
        .basic_auth(CLERK.0, Some(CLERK.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(["21"]));
    let r = client
        .post(url(&format!(
            "de=DeCases0001&pe={pe}&ou=OuFacA10001&co=CocMale0001&value=-3"
        )))
        .basic_auth(CLERK.0, Some(CLERK.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E7619");
    let r = client
        .delete(url(&format!(
            "de=DeCases0001&pe={pe}&ou=OuFacA10001&co=CocMale0001"
        )))
        .basic_auth(CLERK.0, Some(CLERK.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = client
        .get(url(&format!(
            "de=DeCases0001&pe={pe}&ou=OuFacA10001&co=CocMale0001"
        )))
        .basic_auth(CLERK.0, Some(CLERK.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Completion: registered, listed, deleted; out of scope refused.
    let reg = |ou: &str| json!({"completeDataSetRegistrations": [{"dataSet": "DsOpen00001", "period": pe, "organisationUnit": ou}]});
    let (status, body) = server
        .post_json_as(
            CLERK.0,
            CLERK.1,
            "/api/completeDataSetRegistrations",
            &reg("OuFacA10001"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["importCount"]["imported"], 1);
    let (_, body) = server
        .post_json_as(
            CLERK.0,
            CLERK.1,
            "/api/completeDataSetRegistrations",
            &reg("OuFacB10001"),
        )
        .await;
    assert_eq!(codes(&body), ["E7617"]);
    let (_, list) = server.get_as(CLERK.0, CLERK.1, &format!("/api/completeDataSetRegistrations?dataSet=DsOpen00001&period={pe}&orgUnit=OuDistA0001&children=true")).await;
    let regs = list["completeDataSetRegistrations"].as_array().unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["storedBy"], "clerk.a");
    // Completed during the period itself: within timelyDays of its end.
    assert_eq!(regs[0]["onTime"], true);
    let r = client
        .delete(server.url(&format!(
            "/api/completeDataSetRegistrations?ds=DsOpen00001&pe={pe}&ou=OuFacA10001"
        )))
        .basic_auth(CLERK.0, Some(CLERK.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_, list) = server.get_as(CLERK.0, CLERK.1, &format!("/api/completeDataSetRegistrations?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacA10001")).await;
    assert_eq!(
        list["completeDataSetRegistrations"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Reading outside one's hierarchy is refused.
    let (status, body) = server
        .get_as(
            CLERK.0,
            CLERK.1,
            &format!("/api/dataValueSets?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacB10001"),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["errorCode"], "E2012");
    let (status, body) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/dataValueSets?orgUnit=OuFacB10001")
        .await;
    assert_eq!((status, body["errorCode"].as_str()), (409, Some("E2001")));
    server.stop().await;
}

/// Two imports of the same keys at once: every value ends as one of the two
/// writes, never a mix of rows, and each write leaves an audit row.
async fn overlapping_imports(backend: Backend) {
    let Some(server) = country(backend, StartOptions::default()).await else {
        return;
    };
    let pe = this_month().iso();
    let payload = |v: &str| {
        json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocMale0001", "value": v},
        {"dataElement": "DeCases0001", "categoryOptionCombo": "CocFemale01", "value": v},
        {"dataElement": "DeDeaths001", "value": v}]})
        .to_string()
    };
    let (a, b) = tokio::join!(
        post(
            &server,
            ADMIN,
            "/api/dataValueSets",
            "application/json",
            payload("1")
        ),
        post(
            &server,
            ADMIN,
            "/api/dataValueSets",
            "application/json",
            payload("2")
        ),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(stored(&server).await, 3);
    let (_, text) = get_text(
        &server,
        ADMIN,
        &format!("/api/dataValueSets?dataSet=DsOpen00001&period={pe}&orgUnit=OuFacA10001"),
    )
    .await;
    let set: Value = serde_json::from_str(&text).unwrap();
    for v in set["dataValues"].as_array().unwrap() {
        assert!(v["value"] == "1" || v["value"] == "2");
    }
    let (_, audits) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/audits/dataValue?ou=OuFacA10001&pageSize=100",
        )
        .await;
    assert_eq!(audits["dataValueAudits"].as_array().unwrap().len(), 6);
    server.stop().await;
}

/// `async=true`: the answer names a job; its summary arrives when done.
async fn async_import_job(backend: Backend) {
    let Some(server) = country(backend, StartOptions::default()).await else {
        return;
    };
    let pe = this_month().iso();
    let payload = json!({"dataSet": "DsOpen00001", "period": pe, "orgUnit": "OuFacA10001", "dataValues": [
        {"dataElement": "DeDeaths001", "value": "4"}, {"dataElement": "NoSuchDe001", "value": "1"}]});
    let (status, body) = post(
        &server,
        ADMIN,
        "/api/dataValueSets?async=true",
        "application/json",
        payload.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["jobType"], "DATAVALUE_IMPORT");
    let id = body["response"]["id"].as_str().unwrap().to_string();
    // The job says when it is done; then the summary is read as a client would.
    server
        .services
        .jobs
        .wait(&id)
        .await
        .expect("the job is known");
    let (status, summary) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/system/taskSummaries/DATAVALUE_IMPORT/{id}"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(summary["importCount"]["imported"], 1, "{summary:#}");
    assert_eq!(summary["conflicts"][0]["errorCode"], "E7610");
    let (_, tasks) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/system/tasks/DATAVALUE_IMPORT/{id}"),
        )
        .await;
    assert_eq!(tasks[0]["completed"], true);
    let (status, _) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/system/tasks/DATAVALUE_IMPORT/NoSuchJob01",
        )
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

on_both_stores!(
    async_import_job,
    json_import_counts_and_conflicts,
    rules_and_locks,
    bad_bodies_write_nothing,
    csv_adx_gzip_delete_and_zeros,
    single_values_and_completions,
    overlapping_imports,
);
