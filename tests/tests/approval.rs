//! Data approval end to end, on both stores: approve, accept, lock, return
//! with a comment that reaches the submitter's phone (sync and SMS), bulk
//! actions all-or-nothing, the audit trail.

use hisa_app::sync::{DeviceCredentials, SyncClient};
use hisa_shared::period::{Period, PeriodType};
use hisa_shared::sync::{DeviceInfo, EnrolRequest};
use hisa_tests::{on_both_stores, Backend, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");
const WORKER: (&str, &str) = ("chw.a1", "Worker123!");
const INCHARGE: (&str, &str) = ("incharge.a1", "Incharge123!");
const SUPERVISOR: (&str, &str) = ("sup.a", "Supervisor123!");
const WF: &str = "WfMonthly01";

fn fixture() -> Value {
    json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            {"id": "OuDistA0001", "name": "District A", "shortName": "A", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacA10001", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "OuFacA20001", "name": "Facility A2", "shortName": "A2", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}}
        ],
        "dataElements": [{"id": "DeDeaths001", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER_ZERO_OR_POSITIVE",
            "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true}],
        "dataApprovalLevels": [
            {"id": "LvlDistrict", "name": "District", "orgUnitLevel": 2},
            {"id": "LvlFacility", "name": "Facility", "orgUnitLevel": 3}
        ],
        "dataApprovalWorkflows": [{"id": WF, "name": "Monthly approval", "periodType": "Monthly",
            "dataApprovalLevels": [{"id": "LvlDistrict"}, {"id": "LvlFacility"}]}],
        "dataSets": [{"id": "DsMonth0001", "name": "Monthly", "shortName": "Monthly", "periodType": "Monthly",
            "expiryDays": 0, "openFuturePeriods": 1, "workflow": {"id": WF},
            "dataSetElements": [{"dataElement": {"id": "DeDeaths001"}}],
            "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}]}],
        "userRoles": [
            {"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]},
            {"id": "RoleWorker1", "name": "Health worker", "authorities": ["F_DATAVALUE_ADD", "F_MOBILE_SYNC"]},
            {"id": "RoleApprove", "name": "Approver", "authorities": ["F_APPROVE_DATA", "F_DATAVALUE_ADD"]},
            {"id": "RoleSuperv1", "name": "Supervisor", "authorities": ["F_APPROVE_DATA", "F_ACCEPT_DATA_LOWER_LEVELS"]}
        ],
        "users": [
            {"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]},
            {"id": "UserChwA101", "username": "chw.a1", "password": "Worker123!", "firstName": "C", "surname": "A",
             "phoneNumber": "+255700000011", "userRoles": [{"id": "RoleWorker1"}], "organisationUnits": [{"id": "OuFacA10001"}]},
            {"id": "UserInchA11", "username": "incharge.a1", "password": "Incharge123!", "firstName": "I", "surname": "A",
             "userRoles": [{"id": "RoleApprove"}], "organisationUnits": [{"id": "OuFacA10001"}]},
            {"id": "UserSupA001", "username": "sup.a", "password": "Supervisor123!", "firstName": "S", "surname": "A",
             "userRoles": [{"id": "RoleSuperv1"}], "organisationUnits": [{"id": "OuDistA0001"}]}
        ]
    })
}

fn period() -> String {
    Period::containing(PeriodType::Monthly, time::OffsetDateTime::now_utc().date())
        .previous()
        .iso()
}

async fn call(
    server: &TestServer,
    who: (&str, &str),
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = server
        .client()
        .request(method, server.url(path))
        .basic_auth(who.0, Some(who.1));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn state(server: &TestServer, who: (&str, &str), ou: &str) -> Value {
    let (status, body) = call(
        server,
        who,
        reqwest::Method::GET,
        &format!("/api/dataApprovals?wf={WF}&pe={}&ou={ou}", period()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn enter(server: &TestServer, who: (&str, &str), ou: &str, deaths: &str) -> Value {
    let (status, body) = call(server, who, reqwest::Method::POST, "/api/dataValueSets", Some(json!({
        "dataSet": "DsMonth0001", "period": period(), "orgUnit": ou, "completeDate": "2026-11-01",
        "dataValues": [{"dataElement": "DeDeaths001", "value": deaths}]
    }))).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn approve_accept_lock_and_return(backend: Backend) {
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
    let (status, _) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/gateways",
            &json!({"type": "cht", "name": "Phone", "username": "p", "password": "Gateway123"}),
        )
        .await;
    assert_eq!(status, 200);
    let pe = period();
    enter(&server, WORKER, "OuFacA10001", "3").await;

    // The district waits for its facilities; the facility is ready.
    assert_eq!(
        state(&server, SUPERVISOR, "OuDistA0001").await["state"],
        "UNAPPROVED_WAITING"
    );
    let s = state(&server, INCHARGE, "OuFacA10001").await;
    assert_eq!(s["state"], "UNAPPROVED_READY");
    assert_eq!(s["mayApprove"], true);
    assert_eq!(s["permissions"]["mayApprove"], true);
    // A health worker may not approve.
    let (status, _) = call(
        &server,
        WORKER,
        reqwest::Method::POST,
        &format!("/api/dataApprovals?wf={WF}&pe={pe}&ou=OuFacA10001"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = call(
        &server,
        INCHARGE,
        reqwest::Method::POST,
        &format!("/api/dataApprovals?wf={WF}&pe={pe}&ou=OuFacA10001"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state(&server, INCHARGE, "OuFacA10001").await["state"],
        "APPROVED_HERE"
    );
    // Approved data is locked, even for a superuser.
    let summary = enter(&server, WORKER, "OuFacA10001", "4").await;
    assert!(summary.to_string().contains("E7642"), "{summary}");
    let summary = enter(&server, ADMIN, "OuFacA10001", "4").await;
    assert!(summary.to_string().contains("E7642"), "{summary}");
    // Bad input is named.
    let (status, body) = call(
        &server,
        INCHARGE,
        reqwest::Method::GET,
        "/api/dataApprovals?wf=NoSuchWf01&pe=202601&ou=OuFacA10001",
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = call(
        &server,
        INCHARGE,
        reqwest::Method::GET,
        &format!("/api/dataApprovals?wf={WF}&pe=2026W99&ou=OuFacA10001"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // The district accepts; the facility can no longer unapprove.
    let (status, body) = call(
        &server,
        SUPERVISOR,
        reqwest::Method::POST,
        &format!("/api/dataAcceptances?wf={WF}&pe={pe}&ou=OuFacA10001"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state(&server, INCHARGE, "OuFacA10001").await["state"],
        "ACCEPTED_HERE"
    );
    let (status, _) = call(
        &server,
        INCHARGE,
        reqwest::Method::DELETE,
        &format!("/api/dataApprovals?wf={WF}&pe={pe}&ou=OuFacA10001"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &server,
        SUPERVISOR,
        reqwest::Method::DELETE,
        &format!("/api/dataAcceptances?wf={WF}&pe={pe}&ou=OuFacA10001"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Return with a comment: unapproved, incomplete, and the worker is told.
    let (status, body) = call(&server, SUPERVISOR, reqwest::Method::POST, "/api/dataApprovals/returns", Some(json!({
        "wf": WF, "pe": pe, "ou": "OuFacA10001", "comment": "Deaths look high: recount from the register"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["recipients"], json!(["UserChwA101"]));
    assert_eq!(
        state(&server, INCHARGE, "OuFacA10001").await["state"],
        "UNAPPROVED_READY"
    );
    let (_, completions) = call(
        &server,
        ADMIN,
        reqwest::Method::GET,
        &format!(
            "/api/completeDataSetRegistrations?dataSet=DsMonth0001&period={pe}&orgUnit=OuFacA10001"
        ),
        None,
    )
    .await;
    assert!(
        completions["completeDataSetRegistrations"]
            .as_array()
            .is_none_or(|c| c.iter().all(|r| r["completed"] == false)),
        "{completions}"
    );
    let (status, _) = call(
        &server,
        SUPERVISOR,
        reqwest::Method::POST,
        "/api/dataApprovals/returns",
        Some(json!({"wf": WF, "pe": pe, "ou": "OuFacA10001", "comment": " "})),
    )
    .await;
    assert_eq!(status, 409, "a return needs a comment");
    // The message reaches the worker: on the web, on the phone by sync, by SMS.
    let (_, mine) = call(
        &server,
        WORKER,
        reqwest::Method::GET,
        "/api/me/messages",
        None,
    )
    .await;
    assert_eq!(
        mine["messages"][0]["text"],
        "Deaths look high: recount from the register"
    );
    let client = SyncClient::new(&server.base);
    let enrolment = client
        .enrol(&EnrolRequest {
            username: Some(WORKER.0.into()),
            password: Some(WORKER.1.into()),
            code: None,
            device: DeviceInfo::default(),
        })
        .await
        .unwrap();
    let phone =
        SyncClient::with_credentials(DeviceCredentials::from_enrolment(&server.base, &enrolment));
    let down = phone.download().await.unwrap();
    let form = down
        .approvals
        .iter()
        .find(|a| a.period == pe && a.org_unit == "OuFacA10001")
        .expect("approval state comes down");
    assert_eq!(form.state, "UNAPPROVED_READY");
    assert_eq!(
        form.returned.as_ref().map(|r| r.comment.as_str()),
        Some("Deaths look high: recount from the register")
    );
    assert_eq!(
        down.messages[0].text,
        "Deaths look high: recount from the register"
    );
    let (_, outbound) = call(
        &server,
        ADMIN,
        reqwest::Method::GET,
        "/api/sms/outbound?recipient=%2B255700000011",
        None,
    )
    .await;
    assert_eq!(outbound["outboundsmss"][0]["kind"], "NOTICE", "{outbound}");
    // The worker corrects; the form can be approved again.
    let summary = enter(&server, WORKER, "OuFacA10001", "1").await;
    assert_eq!(
        summary["response"]["importCount"]["updated"], 1,
        "{summary}"
    );

    // Bulk: both facilities at once; then the district; then the facility level is locked above.
    enter(&server, ADMIN, "OuFacA20001", "0").await;
    let (status, body) = call(
        &server,
        ADMIN,
        reqwest::Method::POST,
        "/api/dataApprovals/approvals",
        Some(json!({
        "wf": [WF], "pe": [pe], "approvals": [{"ou": "OuFacA10001"}, {"ou": "OuFacA20001"}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state(&server, SUPERVISOR, "OuDistA0001").await["state"],
        "UNAPPROVED_READY"
    );
    let (status, _) = call(
        &server,
        SUPERVISOR,
        reqwest::Method::POST,
        &format!("/api/dataApprovals?wf={WF}&pe={pe}&ou=OuDistA0001"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        state(&server, INCHARGE, "OuFacA10001").await["state"],
        "APPROVED_ABOVE"
    );
    let (status, _) = call(
        &server,
        ADMIN,
        reqwest::Method::POST,
        "/api/dataApprovals/unapprovals",
        Some(json!({
        "wf": [WF], "pe": [pe], "approvals": [{"ou": "OuFacA20001"}, {"ou": "OuFacA10001"}]})),
    )
    .await;
    assert_eq!(status, 409, "approved above: nothing is unapproved");
    let (_, statuses) = call(
        &server,
        ADMIN,
        reqwest::Method::GET,
        &format!("/api/dataApprovals/approvals?wf={WF}&pe={pe}&ou=OuFacA10001,OuFacA20001"),
        None,
    )
    .await;
    assert!(
        statuses
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "APPROVED_ABOVE"),
        "{statuses}"
    );
    let (_, audit) = call(
        &server,
        ADMIN,
        reqwest::Method::GET,
        &format!("/api/dataApprovals/audits?wf={WF}&pe={pe}&ou=OuFacA10001"),
        None,
    )
    .await;
    let actions: Vec<&str> = audit["dataApprovalAudits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "APPROVE",
            "ACCEPT",
            "UNACCEPT",
            "UNAPPROVE",
            "RETURN",
            "APPROVE"
        ]
    );
    server.stop().await;
}

on_both_stores!(approve_accept_lock_and_return);
