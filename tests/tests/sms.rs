//! SMS end to end, on both stores: a CHT gateway phone polling with SMS made
//! by the app's encoder, SMS Gate webhooks with Hisa pushing replies back,
//! DHIS2's compressed vectors through `/api/sms/inbound`, typed commands and
//! each of their errors, multipart sets, replays, forgeries, pacing.

use base64::Engine as _;
use hisa_app::sms::{FormDraft, SmsCredentials};
use hisa_server::state::Config;
use hisa_shared::hisa_sms::{self, FormLayout, ReplyStatus};
use hisa_shared::period::{Period, PeriodType};
use hisa_sms_gateway::SmsConfig;
use hisa_tests::{on_both_stores, Backend, StartOptions, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");
const REPORTER: (&str, &str) = ("rep.a1", "Reporter123!");
const PHONE_A1: &str = "+255700000001";
const PHONE_FR: &str = "+255700000002";
const PHONE_MULTI: &str = "+255700000003";
const PHONE_OFF: &str = "+255700000004";
const PHONE_DHIS2: &str = "+4740000001";
const DEFAULT_COC: &str = "HllvX50cXC0";

fn numbered(i: usize) -> String {
    format!("DeNum{i:06}")
}

fn fixture() -> Value {
    let mut elements = vec![
        json!({"id": "DeCases0001", "name": "Cases", "shortName": "Cases", "valueType": "INTEGER_ZERO_OR_POSITIVE",
               "domainType": "AGGREGATE", "aggregationType": "SUM", "categoryCombo": {"id": "ComboSex001"}}),
        json!({"id": "DeDeaths001", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER",
               "domainType": "AGGREGATE", "aggregationType": "SUM"}),
        json!({"id": "DeNote00001", "name": "Note", "shortName": "Note", "valueType": "LONG_TEXT",
               "domainType": "AGGREGATE", "aggregationType": "NONE"}),
        json!({"id": "DeLocked001", "name": "Locked", "shortName": "Locked", "valueType": "NUMBER",
               "domainType": "AGGREGATE", "aggregationType": "SUM"}),
    ];
    let mut set_elements = vec![
        json!({"dataElement": {"id": "DeCases0001"}}),
        json!({"dataElement": {"id": "DeDeaths001"}}),
        json!({"dataElement": {"id": "DeNote00001"}}),
    ];
    for i in 0..40 {
        elements.push(json!({"id": numbered(i), "name": format!("Number {i}"), "shortName": format!("N{i}"),
            "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "AGGREGATE", "aggregationType": "SUM"}));
        set_elements.push(json!({"dataElement": {"id": numbered(i)}}));
    }
    // Zero is significant here: vector A stores a 0 that DHIS2 would keep.
    for (uid, vt) in [
        ("UsSUX0cpKsH", "INTEGER"),
        ("HS9zqaBdOQ4", "INTEGER"),
        ("noIzB569hTM", "INTEGER"),
        ("vq2qO3eTrNi", "NUMBER"),
        ("YazgqXbizv1", "NUMBER"),
    ] {
        elements.push(
            json!({"id": uid, "name": uid, "shortName": uid, "valueType": vt,
            "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true}),
        );
    }
    for (uid, vt) in [
        ("sWoqcoByYmD", "BOOLEAN"),
        ("Ok9OQpitjQr", "BOOLEAN"),
        ("vANAXwtLwcT", "INTEGER"),
    ] {
        elements.push(
            json!({"id": uid, "name": uid, "shortName": uid, "valueType": vt,
            "domainType": "TRACKER", "aggregationType": "NONE"}),
        );
    }
    let reporter_role = json!([{"id": "RoleRepo001"}]);
    json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            {"id": "OuDistA0001", "name": "District A", "shortName": "A", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacA10001", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "OuFacA20001", "name": "Facility A2", "shortName": "A2", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "DiszpKrYNg8", "name": "Vector unit", "shortName": "V1", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "ueuQlqb8ccl", "name": "Vector unit 2", "shortName": "V2", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "Rp268JB6Ne4", "name": "Vector unit 3", "shortName": "V3", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "cDw53Ej8rju", "name": "Vector unit 4", "shortName": "V4", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}}
        ],
        "categoryOptions": [
            {"id": "OptMale0001", "name": "Male", "shortName": "Male"},
            {"id": "OptFemale01", "name": "Female", "shortName": "Female"}
        ],
        "categories": [{"id": "CatSex00001", "name": "Sex", "shortName": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categoryOptions": [{"id": "OptMale0001"}, {"id": "OptFemale01"}]}],
        "categoryCombos": [{"id": "ComboSex001", "name": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categories": [{"id": "CatSex00001"}]}],
        "categoryOptionCombos": [
            {"id": "CocMale0001", "name": "Male", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptMale0001"}]},
            {"id": "CocFemale01", "name": "Female", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptFemale01"}]}
        ],
        "dataElements": elements,
        "dataSets": [
            {"id": "DsMonth0001", "name": "Monthly report", "shortName": "Monthly", "periodType": "Monthly",
             "expiryDays": 0, "openFuturePeriods": 1, "dataSetElements": set_elements,
             "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}]},
            {"id": "DsLocked001", "name": "Locked report", "shortName": "Locked", "periodType": "Monthly",
             "expiryDays": 1, "openFuturePeriods": 0, "dataSetElements": [{"dataElement": {"id": "DeLocked001"}}],
             "organisationUnits": [{"id": "OuFacA10001"}]},
            {"id": "Nyh6laLdBEJ", "name": "Weekly vector set", "shortName": "Weekly", "periodType": "Weekly",
             "expiryDays": 0, "openFuturePeriods": 1,
             "dataSetElements": [{"dataElement": {"id": "UsSUX0cpKsH"}}, {"dataElement": {"id": "HS9zqaBdOQ4"}},
                                 {"dataElement": {"id": "noIzB569hTM"}}, {"dataElement": {"id": "vq2qO3eTrNi"}},
                                 {"dataElement": {"id": "YazgqXbizv1"}}],
             "organisationUnits": [{"id": "DiszpKrYNg8"}]}
        ],
        "programs": [{"id": "lxAQ7Zs9VYR", "name": "Vector events", "shortName": "VE", "programType": "WITHOUT_REGISTRATION",
            "organisationUnits": [{"id": "DiszpKrYNg8"}], "programStages": [{"id": "A03MvHHogjR"}]}],
        "programStages": [{"id": "A03MvHHogjR", "name": "Vector stage", "program": {"id": "lxAQ7Zs9VYR"},
            "programStageDataElements": [{"dataElement": {"id": "sWoqcoByYmD"}}, {"dataElement": {"id": "Ok9OQpitjQr"}},
                                         {"dataElement": {"id": "vANAXwtLwcT"}}]}],
        "smsCommands": [
            {"id": "SmsCmdVisit", "name": "visit", "parserType": "KEY_VALUE_PARSER", "dataset": {"id": "DsMonth0001"},
             "separator": "=", "completenessMethod": "AT_LEAST_ONE_DATAVALUE",
             "smsCodes": [
                {"code": "cm", "dataElement": {"id": "DeCases0001"}, "optionId": {"id": "CocMale0001"}, "compulsory": true},
                {"code": "cf", "dataElement": {"id": "DeCases0001"}, "optionId": {"id": "CocFemale01"}},
                {"code": "d", "dataElement": {"id": "DeDeaths001"}}
             ]},
            {"id": "SmsCmdLock1", "name": "lock", "parserType": "KEY_VALUE_PARSER", "dataset": {"id": "DsLocked001"},
             "smsCodes": [{"code": "v", "dataElement": {"id": "DeLocked001"}}]}
        ],
        "userRoles": [
            {"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]},
            {"id": "RoleRepo001", "name": "Reporter", "authorities": ["F_DATAVALUE_ADD", "F_MOBILE_SMS", "F_MOBILE_SYNC"]}
        ],
        "users": [
            {"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]},
            {"id": "UserRepA101", "username": "rep.a1", "password": "Reporter123!", "firstName": "R", "surname": "A",
             "phoneNumber": PHONE_A1, "userRoles": reporter_role, "organisationUnits": [{"id": "OuFacA10001"}]},
            {"id": "UserRepFr01", "username": "rep.fr", "password": "Reporter123!", "firstName": "R", "surname": "F",
             "phoneNumber": PHONE_FR, "settings": {"keyUiLocale": "fr"},
             "userRoles": reporter_role, "organisationUnits": [{"id": "OuFacA20001"}]},
            {"id": "UserRepMul1", "username": "rep.multi", "password": "Reporter123!", "firstName": "R", "surname": "M",
             "phoneNumber": PHONE_MULTI, "userRoles": reporter_role,
             "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}]},
            {"id": "UserRepOff1", "username": "rep.off", "password": "Reporter123!", "firstName": "R", "surname": "O",
             "phoneNumber": PHONE_OFF, "disabled": true, "userRoles": reporter_role, "organisationUnits": [{"id": "OuFacA10001"}]},
            {"id": "GOLswS44mh8", "username": "dhis2.phone", "password": "Reporter123!", "firstName": "D", "surname": "P",
             "phoneNumber": PHONE_DHIS2, "userRoles": reporter_role, "organisationUnits": [{"id": "DiszpKrYNg8"}]}
        ]
    })
}

async fn country(backend: Backend, sms: SmsConfig) -> Option<TestServer> {
    let options = StartOptions {
        config: Config {
            sms,
            ..Config::default()
        },
        demo_facilities: None,
    };
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

fn last_month() -> Period {
    Period::containing(PeriodType::Monthly, time::OffsetDateTime::now_utc().date()).previous()
}

/// The layout a phone builds from synced metadata (the same rule the server uses).
fn month_layout() -> FormLayout {
    let mut elements = vec![
        (
            "DeCases0001".to_string(),
            vec!["CocMale0001".to_string(), "CocFemale01".to_string()],
        ),
        ("DeDeaths001".to_string(), vec![DEFAULT_COC.to_string()]),
        ("DeNote00001".to_string(), vec![DEFAULT_COC.to_string()]),
    ];
    for i in 0..40 {
        elements.push((numbered(i), vec![DEFAULT_COC.to_string()]));
    }
    FormLayout::new("DsMonth0001", elements)
}

fn forty_value_form(period: Period) -> FormDraft {
    FormDraft {
        data_set: "DsMonth0001".into(),
        period,
        org_unit: "OuFacA10001".into(),
        attribute_option_combo: 0,
        complete: true,
        values: (0..40)
            .map(|i| {
                (
                    numbered(i),
                    DEFAULT_COC.to_string(),
                    Some(((i * 7) % 50 + 1).to_string()),
                )
            })
            .collect(),
    }
}

async fn add_gateway(server: &TestServer, body: &Value) -> String {
    let (status, reply) = server
        .post_json_as(ADMIN.0, ADMIN.1, "/api/gateways", body)
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["response"]["uid"].as_str().unwrap().to_string()
}

async fn cht_gateway(server: &TestServer) -> String {
    add_gateway(
        server,
        &json!({"type": "cht", "name": "CHT phone", "username": "phone1", "password": "Gateway123"}),
    )
    .await
}

/// One poll of a CHT gateway phone.
async fn poll(server: &TestServer, gateway: &str, messages: Value, updates: Value) -> Value {
    let r = server
        .client()
        .post(server.url(&format!("/api/sms/gateway/{gateway}")))
        .basic_auth("phone1", Some("Gateway123"))
        .json(&json!({"messages": messages, "updates": updates}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn sms(from: &str, content: &str) -> Value {
    json!({"id": uuid::Uuid::new_v4().to_string(), "from": from, "content": content,
           "sms_sent": 1_700_000_000_000i64, "sms_received": 1_700_000_004_321i64})
}

async fn enrol(server: &TestServer, who: (&str, &str)) -> SmsCredentials {
    let (status, body) = server
        .post_json_as(
            who.0,
            who.1,
            "/api/devices",
            &json!({"name": "Phone", "model": "Tecno", "appVersion": "0.1.0"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["secret"].as_str().unwrap().len(), 43);
    SmsCredentials::from_enrolment(
        body["smsKeyId"].as_u64().unwrap() as u32,
        body["smsKey"].as_str().unwrap(),
    )
    .unwrap()
}

async fn values_of(
    server: &TestServer,
    data_set: &str,
    period: &str,
    org_unit: &str,
) -> Vec<Value> {
    let (status, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/dataValueSets?dataSet={data_set}&period={period}&orgUnit={org_unit}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["dataValues"].as_array().cloned().unwrap_or_default()
}

fn value_of(values: &[Value], de: &str, coc: &str) -> Option<String> {
    values
        .iter()
        .find(|v| v["dataElement"] == de && v["categoryOptionCombo"] == coc)
        .and_then(|v| v["value"].as_str().map(str::to_string))
}

async fn inbound(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/sms/inbound?pageSize=200&{query}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["inboundsmss"].as_array().cloned().unwrap()
}

async fn outbound_to(server: &TestServer, recipient: &str) -> Vec<Value> {
    let (status, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!(
                "/api/sms/outbound?pageSize=200&recipient={}",
                recipient.replace('+', "%2B")
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["outboundsmss"].as_array().cloned().unwrap()
}

/// The newest reply queued to a number.
async fn last_reply(server: &TestServer, recipient: &str) -> String {
    outbound_to(server, recipient).await[0]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

// ------------------------------------------------------------------------------------------------

async fn hisa_form_through_a_cht_phone(backend: Backend) {
    let Some(server) = country(backend, SmsConfig::default()).await else {
        return;
    };
    let gateway = cht_gateway(&server).await;
    let client = server.client();
    let url = server.url(&format!("/api/sms/gateway/{gateway}"));
    // The phone's connectivity check, right and wrong credentials.
    let r = client
        .get(&url)
        .basic_auth("phone1", Some("Gateway123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"medic-gateway": true})
    );
    let r = client
        .get(&url)
        .basic_auth("phone1", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], true);
    let r = client
        .post(&url)
        .json(&json!({"messages": [sms(PHONE_A1, "visit cm=1")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        inbound(&server, "").await.is_empty(),
        "an unauthenticated poll stores nothing"
    );

    // The app packs a 40-value form into one SMS.
    let mut creds = enrol(&server, REPORTER).await;
    let period = last_month();
    let out = creds
        .compose_form(&forty_value_form(period), &month_layout())
        .unwrap();
    assert_eq!(
        out.texts.len(),
        1,
        "a 40-value form of small counts is one SMS"
    );
    let message = sms(PHONE_A1, &out.texts[0]);
    let answer = poll(&server, &gateway, json!([message.clone()]), json!([])).await;
    let outgoing = answer["messages"].as_array().unwrap();
    assert_eq!(outgoing.len(), 1, "{answer}");
    assert_eq!(outgoing[0]["to"], PHONE_A1);
    let reply = hisa_app::sms::read_reply(outgoing[0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(reply.counter, out.counter);
    assert_eq!(reply.status, ReplyStatus::Accepted, "{reply:?}");

    let values = values_of(&server, "DsMonth0001", &period.iso(), "OuFacA10001").await;
    assert_eq!(values.len(), 40);
    assert_eq!(
        value_of(&values, &numbered(3), DEFAULT_COC).as_deref(),
        Some("22")
    );
    let (_, completions) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/completeDataSetRegistrations?dataSet=DsMonth0001&period={}&orgUnit=OuFacA10001", period.iso()))
        .await;
    assert_eq!(
        completions["completeDataSetRegistrations"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{completions}"
    );
    // The audit trail names the channel.
    let (_, audits) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!(
                "/api/audits/dataValue?de={}&pe={}&ou=OuFacA10001",
                numbered(3),
                period.iso()
            ),
        )
        .await;
    assert!(audits.to_string().contains("sms"), "{audits}");

    // The phone re-offers the same message (same id): nothing new.
    let again = poll(&server, &gateway, json!([message]), json!([])).await;
    let rows = inbound(&server, "").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "APPLIED");
    assert_eq!(rows[0]["format"], "HISA");
    assert_eq!(rows[0]["user"]["id"], "UserRepA101");
    // The reply is offered until the phone reports on it…
    assert_eq!(again["messages"].as_array().unwrap().len(), 1);
    let reply_id = outgoing[0]["id"].as_str().unwrap();
    let after = poll(
        &server,
        &gateway,
        json!([]),
        json!([{"id": reply_id, "status": "UNSENT"}, {"id": reply_id, "status": "SENT"}]),
    )
    .await;
    assert_eq!(after["messages"].as_array().unwrap().len(), 0, "{after}");
    // …and a late status never goes backwards.
    poll(
        &server,
        &gateway,
        json!([]),
        json!([{"id": reply_id, "status": "DELIVERED"}, {"id": reply_id, "status": "PENDING"}]),
    )
    .await;
    assert_eq!(
        outbound_to(&server, PHONE_A1).await[0]["status"],
        "DELIVERED"
    );
    server.stop().await;
}

async fn multipart_replay_and_forgery(backend: Backend) {
    // No content window: the replay window alone must catch replays.
    let config = SmsConfig {
        duplicate_window_ms: 0,
        ..SmsConfig::default()
    };
    let Some(server) = country(backend, config).await else {
        return;
    };
    let gateway = cht_gateway(&server).await;
    let mut creds = enrol(&server, REPORTER).await;
    let period = last_month();
    let mut draft = forty_value_form(period);
    draft.values.push(("DeNote00001".into(), DEFAULT_COC.into(), Some("Stock-out of ACT since the 3rd; the road to the district store is flooded and the motorbike is broken. We referred 4 severe cases by boat. Please send RDTs too.".repeat(2))));
    let out = creds.compose_form(&draft, &month_layout()).unwrap();
    assert!(out.texts.len() >= 3, "{} parts", out.texts.len());
    // Parts arrive out of order, one twice, the first one last.
    let mut order: Vec<usize> = (1..out.texts.len()).rev().collect();
    order.insert(1, order[0]);
    for i in order {
        poll(
            &server,
            &gateway,
            json!([sms(PHONE_A1, &out.texts[i])]),
            json!([]),
        )
        .await;
    }
    assert!(
        values_of(&server, "DsMonth0001", &period.iso(), "OuFacA10001")
            .await
            .is_empty(),
        "an incomplete set is never half-applied"
    );
    assert!(inbound(&server, "state=WAITING_FOR_PARTS").await.len() >= out.texts.len() - 1);
    let answer = poll(
        &server,
        &gateway,
        json!([sms(PHONE_A1, &out.texts[0])]),
        json!([]),
    )
    .await;
    let replies: Vec<_> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| hisa_app::sms::read_reply(m["content"].as_str().unwrap()))
        .collect();
    assert!(
        replies
            .iter()
            .any(|r| r.counter == out.counter && r.status == ReplyStatus::Accepted),
        "{answer}"
    );
    let values = values_of(&server, "DsMonth0001", &period.iso(), "OuFacA10001").await;
    assert_eq!(values.len(), 41);
    assert!(value_of(&values, "DeNote00001", DEFAULT_COC)
        .unwrap()
        .starts_with("Stock-out"));
    assert!(
        inbound(&server, "state=WAITING_FOR_PARTS").await.is_empty(),
        "every part shares the outcome"
    );

    // A replayed single SMS: a duplicate, answered so the phone stops retrying.
    let single = creds
        .compose_form(&forty_value_form(period), &month_layout())
        .unwrap();
    poll(
        &server,
        &gateway,
        json!([sms(PHONE_A1, &single.texts[0])]),
        json!([]),
    )
    .await;
    let answer = poll(
        &server,
        &gateway,
        json!([sms(PHONE_A1, &single.texts[0])]),
        json!([]),
    )
    .await;
    assert!(
        answer["messages"].as_array().unwrap().iter().any(|m| {
            hisa_app::sms::read_reply(m["content"].as_str().unwrap())
                .is_some_and(|r| r.counter == single.counter && r.status == ReplyStatus::Duplicate)
        }),
        "{answer}"
    );
    // The part that came twice, and the replay.
    assert_eq!(inbound(&server, "state=DUPLICATE").await.len(), 2);

    // A forged SMS (one character changed): rejected, unanswered, nothing written.
    let mut forged_draft = forty_value_form(period);
    forged_draft.values[0].2 = Some("49".into());
    let forged = creds.compose_form(&forged_draft, &month_layout()).unwrap();
    let mut text: Vec<char> = forged.texts[0].chars().collect();
    let mid = text.len() / 2;
    text[mid] = if text[mid] == 'A' { 'B' } else { 'A' };
    let forged_text: String = text.into_iter().collect();
    let before = outbound_to(&server, PHONE_A1).await.len();
    poll(
        &server,
        &gateway,
        json!([sms(PHONE_A1, &forged_text)]),
        json!([]),
    )
    .await;
    assert_eq!(
        outbound_to(&server, PHONE_A1).await.len(),
        before,
        "no answer to a forgery"
    );
    let values = values_of(&server, "DsMonth0001", &period.iso(), "OuFacA10001").await;
    assert_eq!(
        value_of(&values, &numbered(0), DEFAULT_COC).as_deref(),
        Some("1")
    );
    let rejected = inbound(&server, "state=REJECTED").await;
    assert!(
        rejected.iter().any(|m| m["reason"]
            .as_str()
            .unwrap()
            .contains("authentication failed")),
        "{rejected:?}"
    );

    // A key no device has.
    let mut stranger = SmsCredentials::from_enrolment(
        424_242,
        &base64::engine::general_purpose::STANDARD.encode([5u8; 32]),
    )
    .unwrap();
    let text = stranger
        .compose_form(&forty_value_form(period), &month_layout())
        .unwrap()
        .texts
        .remove(0);
    poll(&server, &gateway, json!([sms(PHONE_A1, &text)]), json!([])).await;
    assert!(inbound(&server, "state=REJECTED")
        .await
        .iter()
        .any(|m| m["reason"]
            .as_str()
            .unwrap()
            .contains("no device has SMS key")));

    // A form whose layout changed since the phone synced: refused, the phone told to sync.
    let mut stale = month_layout();
    stale.fields.pop();
    let text = creds
        .compose_form(
            &FormDraft {
                values: vec![(numbered(1), DEFAULT_COC.into(), Some("9".into()))],
                ..forty_value_form(period)
            },
            &stale,
        )
        .unwrap()
        .texts
        .remove(0);
    let answer = poll(&server, &gateway, json!([sms(PHONE_A1, &text)]), json!([])).await;
    assert!(answer.to_string().contains("sync"), "{answer}");

    // After a revoke, the device's SMS are refused with a reason.
    let (_, devices) = server.get_as(REPORTER.0, REPORTER.1, "/api/devices").await;
    let device = devices["devices"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = server
        .post_json_as(
            REPORTER.0,
            REPORTER.1,
            &format!("/api/devices/{device}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let text = creds
        .compose_form(&forty_value_form(period), &month_layout())
        .unwrap()
        .texts
        .remove(0);
    let answer = poll(&server, &gateway, json!([sms(PHONE_A1, &text)]), json!([])).await;
    assert!(answer.to_string().contains("revoked"), "{answer}");
    let (_, stats) = server.get_as(ADMIN.0, ADMIN.1, "/api/sms/stats").await;
    for event in ["bad_mac", "replay", "unknown_key", "revoked_device"] {
        assert!(
            stats["securityEventsSinceStart"]
                .to_string()
                .contains(event),
            "{event}: {stats}"
        );
    }
    server.stop().await;
}

/// A stand-in for SMS Gate's HTTP API: records each message it is asked to send.
async fn mock_sms_gate() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Value)>,
) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/message",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let tx = tx.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = tx.send((auth, body));
                    axum::Json(json!({"id": "accepted", "state": "Pending"}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/message"), rx)
}

async fn signed_webhook(
    server: &TestServer,
    gateway: &str,
    key: &str,
    body: &Value,
    timestamp: i64,
) -> u16 {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = timestamp.to_string();
    let signature = hisa_sms_gateway::gateways::sign(key, &bytes, &ts);
    server
        .client()
        .post(server.url(&format!("/api/sms/gateway/{gateway}")))
        .header("content-type", "application/json")
        .header("X-Timestamp", ts)
        .header("X-Signature", signature)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn sms_gate_webhooks_and_push(backend: Backend) {
    // The test runs the sender's pass itself, so it knows when the push and
    // its recorded state are done.
    let config = SmsConfig {
        background: false,
        ..SmsConfig::default()
    };
    let Some(server) = country(backend, config).await else {
        return;
    };
    let (api, mut sent) = mock_sms_gate().await;
    let key = "webhook-signing-key";
    let gateway = add_gateway(
        &server,
        &json!({"type": "smsgate", "name": "SMS Gate", "urlTemplate": api, "username": "sg", "password": "sgpass", "signingKey": key}),
    )
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let received = json!({"id": "evt1", "webhookId": "wh1", "event": "sms:received", "deviceId": "dev1",
        "payload": {"messageId": "m-1", "sender": PHONE_A1, "recipient": "+255711111111", "simNumber": 1,
                    "message": "visit cm=3|cf=4|d=0", "receivedAt": "2026-11-01T10:00:00+03:00"}});
    // Unsigned, wrongly signed and stale webhooks are refused and store nothing.
    let r = server
        .client()
        .post(server.url(&format!("/api/sms/gateway/{gateway}")))
        .json(&received)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        signed_webhook(&server, &gateway, "not-the-key", &received, now).await,
        401
    );
    assert_eq!(
        signed_webhook(&server, &gateway, key, &received, now - 3600).await,
        401
    );
    assert!(inbound(&server, "").await.is_empty());

    assert_eq!(
        signed_webhook(&server, &gateway, key, &received, now).await,
        200
    );
    // The phone retries until it sees a 2xx: a redelivery is not a second message.
    assert_eq!(
        signed_webhook(&server, &gateway, key, &received, now).await,
        200
    );
    let rows = inbound(&server, "").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "APPLIED", "{rows:?}");
    let values = values_of(&server, "DsMonth0001", &last_month().iso(), "OuFacA10001").await;
    assert_eq!(
        value_of(&values, "DeCases0001", "CocMale0001").as_deref(),
        Some("3")
    );
    assert_eq!(
        value_of(&values, "DeCases0001", "CocFemale01").as_deref(),
        Some("4")
    );

    // The sender's pass pushes the reply to SMS Gate's API.
    assert_eq!(server.services.sms.send_due("test").await.unwrap(), 1);
    let (auth, body) = sent.try_recv().expect("reply pushed");
    assert!(auth.unwrap().starts_with("Basic "));
    assert_eq!(body["phoneNumbers"], json!([PHONE_A1]));
    let text = body["textMessage"]["text"].as_str().unwrap();
    assert!(text.contains("cm=3") && text.contains("cf=4"), "{text}");
    let id = body["id"].as_str().unwrap().to_string();
    // Handed over; SMS Gate reports sent and delivered by webhook.
    assert_eq!(outbound_to(&server, PHONE_A1).await[0]["status"], "PENDING");
    let delivered = json!({"id": "evt2", "event": "sms:delivered", "payload": {"messageId": id, "deliveredAt": "2026-11-01T10:00:05+03:00"}});
    assert_eq!(
        signed_webhook(&server, &gateway, key, &delivered, now).await,
        200
    );
    assert_eq!(
        outbound_to(&server, PHONE_A1).await[0]["status"],
        "DELIVERED"
    );
    server.stop().await;
}

const VECTOR_A: &str = "fQIAAAAAASDCu3TggmFZA2zb3NTWJeogv5WNfIrOWcnI338wigTQmAGRgYnKuYmwBekNjY7LBqYMawhmAAquamqrBgxuCW5pAAAAAKQpnL04sKEyJ6iaAAv//tzekvSEamxy0KiaABYvGFOuziZOKeZsqo5JzSAEtMjQuNQCssL0zuKwxNL07GIATAuMTIzNDU2NzgAA";
const VECTOR_B: &str =
    "iAJc5stsAYVD8LwkyMDE5VzE2AMIv1XYAAAhMF//+E4WLxhTsICWmRoXGoBGcTAuMTIzNDU2NzgAAA==";
const VECTOR_D: &str = "lgJc5stsAYVD8LwkyMDE5VzE2AA=";
const VECTOR_E: &str =
    "fkJc5stsB4VD8KMJXjrA1PHqBj81zmy2yuc5oATguNDg0NDY5AC0xMy4yMzY0MzMAwizRzvRi1WYOA==";
const VECTOR_H: &str =
    "/FJc5stsyIVD8GISNkmQQF5UBUGajrA1PHqBj81zmy2wwizdYgqs6J7o0Mrk5gHNMRXhjbHVzaXZlAA=";

async fn api_inbound(
    server: &TestServer,
    who: (&str, &str),
    text: &str,
    originator: &str,
) -> (u16, Value) {
    server
        .post_json_as(
            who.0,
            who.1,
            "/api/sms/inbound",
            &json!({"text": text, "originator": originator, "gatewayid": "unknown"}),
        )
        .await
}

async fn dhis2_vectors_through_api_inbound(backend: Backend) {
    let Some(server) = country(
        backend,
        SmsConfig {
            duplicate_window_ms: 0,
            ..SmsConfig::default()
        },
    )
    .await
    else {
        return;
    };
    cht_gateway(&server).await;
    // DHIS2's answers to missing fields and to callers without the authority.
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/inbound",
            &json!({"text": VECTOR_A}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("Originator must be specified"))
    );
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/inbound",
            &json!({"originator": PHONE_DHIS2}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("Message must be specified"))
    );
    let (status, _) = api_inbound(&server, REPORTER, VECTOR_A, PHONE_DHIS2).await;
    assert_eq!(status, 403);

    // A: full UIDs; lands as five values of week 2019W16.
    let (status, body) = api_inbound(&server, ADMIN, VECTOR_A, PHONE_DHIS2).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Received SMS: "));
    let values = values_of(&server, "Nyh6laLdBEJ", "2019W16", "DiszpKrYNg8").await;
    assert_eq!(values.len(), 5, "{values:?}");
    assert_eq!(
        value_of(&values, "HS9zqaBdOQ4", DEFAULT_COC).as_deref(),
        Some("-65535")
    );
    assert_eq!(
        value_of(&values, "noIzB569hTM", DEFAULT_COC).as_deref(),
        Some("12345678")
    );
    assert_eq!(
        value_of(&values, "vq2qO3eTrNi", DEFAULT_COC).as_deref(),
        Some("-24.5")
    );
    assert_eq!(
        last_reply(&server, PHONE_DHIS2).await,
        "1:0::Submission has been processed successfully"
    );
    // B: the same content with hashed ids, resolved against the phone user's units.
    let (status, _) = api_inbound(&server, ADMIN, VECTOR_B, PHONE_DHIS2).await;
    assert_eq!(status, 200);
    assert_eq!(inbound(&server, "state=APPLIED").await.len(), 2);
    // D: no values.
    api_inbound(&server, ADMIN, VECTOR_D, PHONE_DHIS2).await;
    assert_eq!(
        last_reply(&server, PHONE_DHIS2).await,
        "1:2::The submission did not include any data values"
    );
    // E: a simple event.
    api_inbound(&server, ADMIN, VECTOR_E, PHONE_DHIS2).await;
    assert_eq!(
        last_reply(&server, PHONE_DHIS2).await,
        "7:0::Submission has been processed successfully"
    );
    let (status, event) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/tracker/events/l7M1gUFK37v")
        .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["status"], "COMPLETED");
    assert!(event["dataValues"].to_string().contains("vANAXwtLwcT"));
    // H: a tracker event, which Hisa does not take: answered, not dropped.
    api_inbound(&server, ADMIN, VECTOR_H, PHONE_DHIS2).await;
    assert_eq!(
        last_reply(&server, PHONE_DHIS2).await,
        "200:101::An unknown error occurred"
    );
    // A garbled text: DHIS2's header error.
    api_inbound(&server, ADMIN, &VECTOR_A[1..], PHONE_DHIS2).await;
    assert!(last_reply(&server, PHONE_DHIS2).await.starts_with("-1:"));
    // An unknown number never writes data.
    api_inbound(&server, ADMIN, VECTOR_A, "+4799999999").await;
    assert!(last_reply(&server, "+4799999999")
        .await
        .starts_with("1:201:"));
    // Form-encoded, as DHIS2's parameters.
    let r = server
        .client()
        .post(server.url("/api/sms/inbound"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .form(&[("originator", PHONE_A1), ("message", "visit cm=2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

async fn command(server: &TestServer, from: &str, text: &str) -> String {
    let (status, body) = api_inbound(server, ADMIN, text, from).await;
    assert_eq!(status, 200, "{body}");
    last_reply(server, from).await
}

async fn plain_text_commands_and_every_error(backend: Backend) {
    let Some(server) = country(backend, SmsConfig::default()).await else {
        return;
    };
    cht_gateway(&server).await;
    let period = last_month().iso();
    let reply = command(&server, PHONE_A1, "visit cm=3|cf=4|d=1").await;
    assert!(
        reply.starts_with("Command has been processed successfully"),
        "{reply}"
    );
    assert!(reply.contains("cm=3") && reply.contains(&period), "{reply}");
    let values = values_of(&server, "DsMonth0001", &period, "OuFacA10001").await;
    assert_eq!(
        value_of(&values, "DeCases0001", "CocMale0001").as_deref(),
        Some("3")
    );
    assert_eq!(
        value_of(&values, "DeDeaths001", DEFAULT_COC).as_deref(),
        Some("1")
    );

    assert_eq!(
        command(&server, PHONE_A1, "hello there").await,
        "No command found"
    );
    assert!(command(&server, "+255799999999", "visit cm=1")
        .await
        .starts_with("No user associated with this phone number"));
    assert!(command(&server, PHONE_OFF, "visit cm=1")
        .await
        .starts_with("No user associated"));
    assert!(command(&server, PHONE_A1, "visit")
        .await
        .starts_with("Wrong command format"));
    let reply = command(&server, PHONE_A1, "visit cf=2").await;
    assert!(
        reply.starts_with("Mandatory parameter is missing") && reply.contains("cm"),
        "{reply}"
    );
    let reply = command(&server, PHONE_A1, "visit cm=1|zz=4").await;
    assert!(reply.contains("zz"), "{reply}");
    let reply = command(&server, PHONE_A1, "visit cm=abc|cf=9").await;
    assert!(reply.starts_with("Invalid value for cm"), "{reply}");
    assert!(command(&server, PHONE_MULTI, "visit cm=1")
        .await
        .starts_with("Found more than one org unit"));
    let reply = command(&server, PHONE_A1, "lock v=5").await;
    assert!(reply.contains(&period), "{reply}");
    // Nothing of a refused command was stored.
    let values = values_of(&server, "DsMonth0001", &period, "OuFacA10001").await;
    assert_eq!(
        value_of(&values, "DeCases0001", "CocMale0001").as_deref(),
        Some("3")
    );
    assert_eq!(
        value_of(&values, "DeCases0001", "CocFemale01").as_deref(),
        Some("4")
    );
    assert!(values_of(&server, "DsLocked001", &period, "OuFacA10001")
        .await
        .is_empty());
    // The sender's language.
    let reply = command(&server, PHONE_FR, "visit cm=abc").await;
    assert!(reply.starts_with("Valeur invalide pour cm"), "{reply}");
    // A ddMM token picks the period of that day.
    let today = time::OffsetDateTime::now_utc().date();
    let march = if u8::from(today.month()) >= 3 {
        today.year()
    } else {
        today.year() - 1
    };
    command(&server, PHONE_A1, "visit 1503 cm=7").await;
    let values = values_of(&server, "DsMonth0001", &format!("{march}03"), "OuFacA10001").await;
    assert_eq!(
        value_of(&values, "DeCases0001", "CocMale0001").as_deref(),
        Some("7")
    );
    // The same text again within the window is a duplicate: stored, not applied twice, not answered.
    let replies_before = outbound_to(&server, PHONE_A1).await.len();
    api_inbound(&server, ADMIN, "visit 1503 cm=7", PHONE_A1).await;
    assert_eq!(outbound_to(&server, PHONE_A1).await.len(), replies_before);
    assert_eq!(inbound(&server, "state=DUPLICATE").await.len(), 1);
    // CHT's dialects reach the same command.
    let reply = command(&server, PHONE_A1, "visit#cm 11#cf 12").await;
    assert!(reply.contains("cm=11"), "{reply}");
    let reply = command(&server, PHONE_A1, "1!visit!21#22#0").await;
    assert!(
        reply.contains("cm=21") && reply.contains("cf=22"),
        "{reply}"
    );
    // An admin reprocesses a stored message.
    let rejected = inbound(&server, "state=REJECTED").await;
    let uid = rejected
        .iter()
        .find(|m| m["text"] == "hello there")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/sms/inbound/{uid}/reprocess"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["state"], "REJECTED");
    let (status, _) = server
        .post_json_as(
            REPORTER.0,
            REPORTER.1,
            &format!("/api/sms/inbound/{uid}/reprocess"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}

async fn outbound_queue_is_paced(backend: Backend) {
    let Some(server) = country(backend, SmsConfig::default()).await else {
        return;
    };
    let gateway = cht_gateway(&server).await;
    let recipients: Vec<String> = (0..40).map(|i| format!("+2557100{i:05}")).collect();
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/outbound",
            &json!({"message": "Campaign starts Monday", "recipients": recipients}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = poll(&server, &gateway, json!([]), json!([])).await;
    let offered = first["messages"].as_array().unwrap();
    assert_eq!(
        offered.len(),
        30,
        "a phone gateway gets at most 30 a minute"
    );
    // Offered again until the phone says what happened to each…
    assert_eq!(
        poll(&server, &gateway, json!([]), json!([])).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    let updates: Vec<Value> = offered
        .iter()
        .map(|m| json!({"id": m["id"], "status": "SENT"}))
        .collect();
    // …and no more than 30 within the minute even once they are sent.
    let after = poll(&server, &gateway, json!([]), Value::Array(updates)).await;
    assert_eq!(after["messages"].as_array().unwrap().len(), 0);
    let (_, queued) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/sms/outbound?state=QUEUED")
        .await;
    assert_eq!(queued["outboundsmss"].as_array().unwrap().len(), 10);
    let (_, sent) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/outbound?state=SENT&pageSize=100",
        )
        .await;
    assert_eq!(sent["outboundsmss"].as_array().unwrap().len(), 30);
    // Bad requests.
    let (status, _) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/outbound",
            &json!({"message": "", "recipients": ["+255700000001"]}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/outbound",
            &json!({"message": "hi", "recipients": ["not a number"]}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .post_json_as(
            REPORTER.0,
            REPORTER.1,
            "/api/sms/outbound",
            &json!({"message": "hi", "recipients": ["+255700000001"]}),
        )
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}

/// Two instances over one database never claim the same outbound message.
async fn claims_are_exclusive(backend: Backend) {
    let Some(server) = country(
        backend,
        // Only this test's two claimers touch the queue.
        SmsConfig {
            background: false,
            ..SmsConfig::default()
        },
    )
    .await
    else {
        return;
    };
    let gateway = add_gateway(&server, &json!({"type": "http", "name": "Provider", "urlTemplate": "http://127.0.0.1:9/send", "ratePerMinute": 1000})).await;
    let store = server.services.sms.store.clone();
    let now = hisa_sms_gateway::service::now_ms();
    let messages: Vec<_> = (0..200)
        .map(|i| hisa_sms_gateway::model::NewOutbound {
            uid: hisa_shared::Uid::generate().to_string(),
            gateway: gateway.clone(),
            recipient: format!("+25571{i:07}"),
            text: "x".into(),
            kind: hisa_sms_gateway::model::OutboundKind::Message,
            inbound: None,
            created_at: now,
        })
        .collect();
    store.enqueue(&messages).await.unwrap();
    let claim = |store: std::sync::Arc<dyn hisa_sms_gateway::store::SmsStore>, gateway: String| async move {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(
                store
                    .claim_outbound(&gateway, 1000, now + 1, now + 600_000)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.uid),
            );
        }
        got
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim(store.clone(), gateway.clone())),
        tokio::spawn(claim(store.clone(), gateway.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "a message was claimed twice");
    assert_eq!(total, 200);
    server.stop().await;
}

async fn gateways_api(backend: Backend) {
    let Some(server) = country(
        backend,
        SmsConfig {
            rate_limit: 3,
            ..SmsConfig::default()
        },
    )
    .await
    else {
        return;
    };
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/gateways",
            &json!({"type": "bulksms", "name": "B"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not supported"));
    let (status, _) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/gateways",
            &json!({"type": "cht", "username": "u", "password": "p"}),
        )
        .await;
    assert_eq!(status, 409, "a name is required");
    let (status, _) = server
        .post_json_as(
            REPORTER.0,
            REPORTER.1,
            "/api/gateways",
            &json!({"type": "cht", "name": "x", "username": "u", "password": "p"}),
        )
        .await;
    assert_eq!(status, 403);
    let first = cht_gateway(&server).await;
    let second = add_gateway(
        &server,
        &json!({"type": "http", "name": "Provider", "urlTemplate": "https://sms.example/send",
        "configurationTemplate": "to=${recipients}&text=${text}&key=${apikey}",
        "parameters": [{"key": "apikey", "value": "very-secret", "confidential": true}]}),
    )
    .await;
    let (_, list) = server.get_as(ADMIN.0, ADMIN.1, "/api/gateways").await;
    let text = list.to_string();
    assert!(
        !text.contains("Gateway123") && !text.contains("very-secret"),
        "secrets are never shown: {text}"
    );
    let gateways = list["gateways"].as_array().unwrap();
    assert_eq!(gateways.len(), 2);
    assert!(gateways
        .iter()
        .any(|g| g["id"] == first.as_str() && g["isDefault"] == true));
    // An update without the password keeps it: the phone still signs in.
    let r = server
        .client()
        .put(server.url(&format!("/api/gateways/{first}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&json!({"type": "cht", "name": "CHT phone (renamed)", "username": "phone1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .client()
        .get(server.url(&format!("/api/sms/gateway/{first}")))
        .basic_auth("phone1", Some("Gateway123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .client()
        .put(server.url(&format!("/api/gateways/default/{second}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, one) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/gateways/{second}"))
        .await;
    assert_eq!(one["isDefault"], true);
    let r = server
        .client()
        .delete(server.url(&format!("/api/gateways/{second}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, one) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/gateways/{first}"))
        .await;
    assert_eq!(
        one["isDefault"], true,
        "the remaining gateway becomes the default"
    );
    let (status, _) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/gateways/NoSuchGate1")
        .await;
    assert_eq!(status, 404);
    // A sender over its rate limit is stored but neither processed nor answered.
    for i in 0..4 {
        poll(
            &server,
            &first,
            json!([sms(PHONE_A1, &format!("visit cm={i}"))]),
            json!([]),
        )
        .await;
    }
    let limited = inbound(&server, "state=RATE_LIMITED").await;
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["text"], "visit cm=3");
    server.stop().await;
}

/// A provider's HTTP API that fails its first `failures` calls, then records
/// each request (headers of interest and body).
async fn mock_provider(
    failures: usize,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Option<String>, String)>,
) {
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/send",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < failures {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let key = headers
                    .get("x-api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = tx.send((key, body));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/send"), rx)
}

async fn generic_http_gateway(backend: Backend) {
    let config = SmsConfig {
        max_attempts: 2,
        // The test drives the sender itself.
        background: false,
        ..SmsConfig::default()
    };
    let Some(server) = country(backend, config).await else {
        return;
    };
    let (url, mut sent) = mock_provider(1).await;
    let key = "provider-signing-key";
    let gateway = add_gateway(&server, &json!({
        "type": "http", "name": "Provider", "urlTemplate": url, "signingKey": key,
        "contentType": "FORM_URL_ENCODED",
        "configurationTemplate": "to=${recipients}&body=${text}&ref=${id}&sender=${from}",
        "parameters": [{"key": "from", "value": "HISA"}, {"key": "X-Api-Key", "value": "k-123", "header": true, "confidential": true}]
    })).await;
    // A signed inbound message in the provider's form fields.
    let body = format!(
        "from={}&text={}&id=p-77",
        PHONE_A1.replace('+', "%2B"),
        "visit%20cm%3D5"
    );
    let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let signature = hisa_sms_gateway::gateways::sign(key, body.as_bytes(), &ts);
    let r = server
        .client()
        .post(server.url(&format!("/api/sms/gateway/{gateway}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Timestamp", &ts)
        .header("X-Signature", &signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .client()
        .post(server.url(&format!("/api/sms/gateway/{gateway}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Timestamp", &ts)
        .header("X-Signature", "00")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let values = values_of(&server, "DsMonth0001", &last_month().iso(), "OuFacA10001").await;
    assert_eq!(
        value_of(&values, "DeCases0001", "CocMale0001").as_deref(),
        Some("5")
    );

    // The reply goes out by the template; the provider fails once, so it is retried later.
    let sms = server.services.sms.clone();
    assert_eq!(sms.send_due("test").await.unwrap(), 0);
    let queued = outbound_to(&server, PHONE_A1).await;
    assert_eq!(queued[0]["status"], "QUEUED");
    assert_eq!(queued[0]["attempts"], 1);
    assert!(
        queued[0]["reason"].as_str().unwrap().contains("503"),
        "{queued:?}"
    );
    assert_eq!(
        sms.send_due("test").await.unwrap(),
        0,
        "not before its backoff"
    );
    // Make it due now (the backoff is 30 s and up), then it is sent.
    let uid = queued[0]["id"].as_str().unwrap().to_string();
    sms.store
        .retry_outbound(&uid, "test: due now", 0, false, 0)
        .await
        .unwrap();
    assert_eq!(sms.send_due("test").await.unwrap(), 1);
    let (api_key, request) = sent.recv().await.unwrap();
    assert_eq!(api_key.as_deref(), Some("k-123"));
    assert!(
        request.contains("to=%2B255700000001")
            && request.contains("sender=HISA")
            && request.contains(&format!("ref={uid}")),
        "{request}"
    );
    assert_eq!(outbound_to(&server, PHONE_A1).await[0]["status"], "SENT");
    // A delivery callback by id.
    let cb = json!({"id": uid, "status": "delivered"});
    let bytes = serde_json::to_vec(&cb).unwrap();
    let signature = hisa_sms_gateway::gateways::sign(key, &bytes, &ts);
    let r = server
        .client()
        .post(server.url(&format!("/api/sms/gateway/{gateway}")))
        .header("content-type", "application/json")
        .header("X-Timestamp", &ts)
        .header("X-Signature", signature)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        outbound_to(&server, PHONE_A1).await[0]["status"],
        "DELIVERED"
    );

    // A provider that never answers: given up after the configured attempts, kept as FAILED.
    let dead = add_gateway(
        &server,
        &json!({"type": "http", "name": "Dead", "urlTemplate": "http://127.0.0.1:9/send"}),
    )
    .await;
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/sms/outbound",
            &json!({"message": "hello", "recipients": ["+255788000000"], "gateway": dead}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let uid = body["response"]["ids"][0].as_str().unwrap().to_string();
    let mut m = sms.store.outbound(&uid).await.unwrap().unwrap();
    for _ in 0..5 {
        sms.send_due("test").await.unwrap();
        m = sms.store.outbound(&uid).await.unwrap().unwrap();
        if m.state == hisa_sms_gateway::model::OutboundState::Failed {
            break;
        }
        assert_eq!(m.state, hisa_sms_gateway::model::OutboundState::Queued);
        // Make it due now instead of waiting out the backoff.
        let reason = m.reason.clone().unwrap_or_default();
        sms.store
            .retry_outbound(&uid, &reason, 0, false, 0)
            .await
            .unwrap();
    }
    assert_eq!(
        m.state,
        hisa_sms_gateway::model::OutboundState::Failed,
        "{m:?}"
    );
    assert_eq!(m.attempts, 2);
    assert!(m.reason.unwrap().contains("request failed"));
    server.stop().await;
}

async fn incomplete_sets_expire(backend: Backend) {
    let config = SmsConfig {
        part_expiry_ms: 0,
        // Only the sweep this test calls runs in its time.
        background: false,
        ..SmsConfig::default()
    };
    let Some(server) = country(backend, config).await else {
        return;
    };
    let gateway = cht_gateway(&server).await;
    let mut creds = enrol(&server, REPORTER).await;
    let mut draft = forty_value_form(last_month());
    draft.values.push((
        "DeNote00001".into(),
        DEFAULT_COC.into(),
        Some("x".repeat(300)),
    ));
    let out = creds.compose_form(&draft, &month_layout()).unwrap();
    assert!(out.texts.len() > 1);
    poll(
        &server,
        &gateway,
        json!([sms(PHONE_A1, &out.texts[0])]),
        json!([]),
    )
    .await;
    assert_eq!(inbound(&server, "state=WAITING_FOR_PARTS").await.len(), 1);
    server.services.sms.sweep().await.unwrap();
    let rejected = inbound(&server, "state=REJECTED").await;
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["reason"]
        .as_str()
        .unwrap()
        .contains("never arrived"));
    // A late part starts a new set; nothing of the expired one is applied.
    poll(
        &server,
        &gateway,
        json!([sms(PHONE_A1, &out.texts[1])]),
        json!([]),
    )
    .await;
    assert!(
        values_of(&server, "DsMonth0001", &last_month().iso(), "OuFacA10001")
            .await
            .is_empty()
    );
    server.stop().await;
}

on_both_stores!(
    incomplete_sets_expire,
    generic_http_gateway,
    hisa_form_through_a_cht_phone,
    multipart_replay_and_forgery,
    sms_gate_webhooks_and_push,
    dhis2_vectors_through_api_inbound,
    plain_text_commands_and_every_error,
    outbound_queue_is_paced,
    claims_are_exclusive,
    gateways_api,
);

#[test]
fn forty_values_fit_one_sms_in_hisa_format() {
    let mut creds = SmsCredentials::from_enrolment(
        1,
        &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
    )
    .unwrap();
    let out = creds
        .compose_form(&forty_value_form(last_month()), &month_layout())
        .unwrap();
    assert_eq!(out.texts.len(), 1);
    assert!(hisa_sms::is_hisa(&out.texts[0]));
}
