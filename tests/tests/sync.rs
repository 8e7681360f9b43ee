//! Device sync end to end, on both stores: a simulated phone (the app's
//! sync client over its sealed store) enrols, syncs metadata, captures
//! offline and uploads; links cut mid-request and mid-response; a server
//! restart; policies, revoke and wipe reaching the phone.

use std::sync::Arc;

use hisa_app::store::{Clock, KdfParams, PinPolicy, SealedStore, SystemClock};
use hisa_app::sync::{self as phone, Applied, DeviceCredentials, SyncClient, SyncError};
use hisa_server::state::Config;
use hisa_shared::period::{Period, PeriodType};
use hisa_shared::sync::*;
use hisa_tests::proxy::{CuttingProxy, FaultPlan};
use hisa_tests::{on_both_stores, Backend, StartOptions, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");
const WORKER: (&str, &str) = ("chw.a1", "Worker123!");

fn fixture() -> Value {
    json!({
        "organisationUnits": [
            {"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"},
            {"id": "OuDistA0001", "name": "District A", "shortName": "A", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacA10001", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "OuFacA20001", "name": "Facility A2", "shortName": "A2", "openingDate": "1990-01-01", "parent": {"id": "OuDistA0001"}},
            {"id": "OuDistB0001", "name": "District B", "shortName": "B", "openingDate": "1990-01-01", "parent": {"id": "OuRoot00001"}},
            {"id": "OuFacB10001", "name": "Facility B1", "shortName": "B1", "openingDate": "1990-01-01", "parent": {"id": "OuDistB0001"}}
        ],
        "categoryOptions": [
            {"id": "OptMale0001", "name": "Male", "shortName": "Male"},
            {"id": "OptFemale01", "name": "Female", "shortName": "Female"}
        ],
        "categories": [{"id": "CatSex00001", "name": "Sex", "shortName": "Sex", "dataDimensionType": "DISAGGREGATION",
            "categoryOptions": [{"id": "OptMale0001"}, {"id": "OptFemale01"}]}],
        "categoryCombos": [{"id": "ComboSex001", "name": "Sex", "dataDimensionType": "DISAGGREGATION", "categories": [{"id": "CatSex00001"}]}],
        "categoryOptionCombos": [
            {"id": "CocMale0001", "name": "Male", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptMale0001"}]},
            {"id": "CocFemale01", "name": "Female", "categoryCombo": {"id": "ComboSex001"}, "categoryOptions": [{"id": "OptFemale01"}]}
        ],
        "dataElements": [
            {"id": "DeCases0001", "name": "Cases", "shortName": "Cases", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "SUM", "categoryCombo": {"id": "ComboSex001"}},
            {"id": "DeDeaths001", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true},
            {"id": "DeOther0001", "name": "Other district", "shortName": "Other", "valueType": "NUMBER",
             "domainType": "AGGREGATE", "aggregationType": "SUM"},
            {"id": "DeAge000001", "name": "Age", "shortName": "Age", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "domainType": "TRACKER", "aggregationType": "AVERAGE"}
        ],
        "dataSets": [
            {"id": "DsMonth0001", "name": "Monthly", "shortName": "Monthly", "periodType": "Monthly",
             "expiryDays": 0, "openFuturePeriods": 1,
             "dataSetElements": [{"dataElement": {"id": "DeCases0001"}}, {"dataElement": {"id": "DeDeaths001"}}],
             "organisationUnits": [{"id": "OuFacA10001"}, {"id": "OuFacA20001"}, {"id": "OuFacB10001"}]},
            {"id": "DsOther0001", "name": "Other", "shortName": "Other", "periodType": "Monthly",
             "dataSetElements": [{"dataElement": {"id": "DeOther0001"}}], "organisationUnits": [{"id": "OuFacB10001"}]}
        ],
        "validationRules": [
            {"id": "VrDeaths001", "name": "Deaths at most cases", "operator": "less_than_or_equal_to", "periodType": "Monthly",
             "importance": "MEDIUM", "leftSide": {"expression": "#{DeDeaths001}", "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING"},
             "rightSide": {"expression": "#{DeCases0001}", "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING"}}
        ],
        "programs": [{"id": "PrgCase0001", "name": "Cases", "shortName": "Cases", "programType": "WITHOUT_REGISTRATION",
            "organisationUnits": [{"id": "OuFacA10001"}], "programStages": [{"id": "StgCase0001"}]}],
        "programStages": [{"id": "StgCase0001", "name": "Case", "program": {"id": "PrgCase0001"},
            "programStageDataElements": [{"dataElement": {"id": "DeAge000001"}}]}],
        "userRoles": [
            {"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]},
            {"id": "RoleWorker1", "name": "Health worker", "authorities": ["F_DATAVALUE_ADD", "F_MOBILE_SYNC"]}
        ],
        "users": [
            {"id": "UserAdmin01", "username": "admin", "password": "district", "firstName": "A", "surname": "D",
             "userRoles": [{"id": "RoleSuper01"}], "organisationUnits": [{"id": "OuRoot00001"}]},
            {"id": "UserChwA101", "username": "chw.a1", "password": "Worker123!", "firstName": "C", "surname": "A",
             "userRoles": [{"id": "RoleWorker1"}], "organisationUnits": [{"id": "OuFacA10001"}]},
            {"id": "UserChwA201", "username": "chw.a2", "password": "Worker123!", "firstName": "C", "surname": "B",
             "userRoles": [{"id": "RoleWorker1"}], "organisationUnits": [{"id": "OuFacA20001"}]}
        ]
    })
}

async fn country(backend: Backend) -> Option<TestServer> {
    let options = StartOptions {
        config: Config {
            // Tests cut requests on purpose: claims of dead requests go stale fast.
            sync_claim_stale_ms: 500,
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

/// A phone: a sealed store in a temp dir and a sync client.
struct Phone {
    store: SealedStore,
    client: SyncClient,
    _dir: tempfile::TempDir,
}

impl Phone {
    async fn enrol(server_url: &str, request: EnrolRequest) -> Result<Phone, SyncError> {
        let client = SyncClient::new(server_url);
        let enrolment = client.enrol(&request).await?;
        let creds = DeviceCredentials::from_enrolment(server_url, &enrolment);
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut store = SealedStore::create(
            &dir.path().join("phone.db"),
            "482913",
            PinPolicy::default(),
            KdfParams::fast_for_tests(),
            300,
            clock,
        )
        .unwrap();
        creds.save(&mut store).unwrap();
        Ok(Phone {
            store,
            client: SyncClient::with_credentials(creds),
            _dir: dir,
        })
    }

    async fn with_password(server_url: &str, who: (&str, &str)) -> Phone {
        Phone::enrol(
            server_url,
            EnrolRequest {
                username: Some(who.0.into()),
                password: Some(who.1.into()),
                code: None,
                device: DeviceInfo {
                    name: Some("Field phone".into()),
                    model: Some("Tecno Spark".into()),
                    app_version: Some("0.1.0".into()),
                },
            },
        )
        .await
        .unwrap()
    }

    fn device(&self) -> String {
        self.client.credentials().unwrap().device.clone()
    }

    /// Push until the outbox is empty (bounded).
    async fn push_all(&mut self, batch: usize) -> usize {
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 400, "the outbox never emptied");
            match phone::push(&mut self.store, &self.client, batch).await {
                Ok((report, _)) if report.remaining == 0 => return rounds,
                Ok(_) | Err(SyncError::Network(_)) => {}
                Err(e) => panic!("push failed: {e}"),
            }
        }
    }
}

fn form(period: &str, org_unit: &str, deaths: u32) -> SubmissionBody {
    SubmissionBody::Form(FormSubmission {
        data_set: "DsMonth0001".into(),
        period: period.into(),
        org_unit: org_unit.into(),
        attribute_option_combo: None,
        complete: true,
        values: vec![
            FormValue {
                data_element: "DeCases0001".into(),
                category_option_combo: Some("CocMale0001".into()),
                value: Some((deaths + 10).to_string()),
                comment: None,
            },
            FormValue {
                data_element: "DeCases0001".into(),
                category_option_combo: Some("CocFemale01".into()),
                value: Some((deaths + 20).to_string()),
                comment: None,
            },
            FormValue {
                data_element: "DeDeaths001".into(),
                category_option_combo: None,
                value: Some(deaths.to_string()),
                comment: None,
            },
        ],
    })
}

fn event(uid: &str, age: u32) -> SubmissionBody {
    SubmissionBody::Event(EventSubmission {
        event: uid.into(),
        program: "PrgCase0001".into(),
        program_stage: None,
        org_unit: "OuFacA10001".into(),
        occurred_at: "2026-10-03".into(),
        status: "COMPLETED".into(),
        attribute_option_combo: None,
        data_values: vec![EventValue {
            data_element: "DeAge000001".into(),
            value: age.to_string(),
        }],
    })
}

fn last_month() -> String {
    Period::containing(PeriodType::Monthly, time::OffsetDateTime::now_utc().date())
        .previous()
        .iso()
}

async fn value(server: &TestServer, de: &str, coc: &str, period: &str, ou: &str) -> Option<String> {
    let (status, body) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/dataValueSets?dataSet=DsMonth0001&period={period}&orgUnit={ou}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["dataValues"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["dataElement"] == de && v["categoryOptionCombo"] == coc)
        .and_then(|v| v["value"].as_str().map(str::to_string))
}

// ------------------------------------------------------------------------------------------------

async fn phone_enrols_syncs_captures_offline_and_uploads(backend: Backend) {
    let Some(server) = country(backend).await else {
        return;
    };
    let mut p = Phone::with_password(&server.base, WORKER).await;
    // Metadata: exactly the worker's assignment.
    let first = phone::sync_metadata(&mut p.store, &p.client).await.unwrap();
    assert!(!first.unchanged && first.upserted > 0);
    let ids = |kind: &str, store: &mut SealedStore| -> Vec<String> {
        let mut v: Vec<String> = phone::metadata_of(store, kind)
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids("organisationUnits", &mut p.store), vec!["OuFacA10001"]);
    assert_eq!(
        ids("dataSets", &mut p.store),
        vec!["DsMonth0001"],
        "not the other district's data set"
    );
    assert_eq!(
        ids("dataElements", &mut p.store),
        vec!["DeAge000001", "DeCases0001", "DeDeaths001"]
    );
    assert_eq!(
        ids("categoryOptionCombos", &mut p.store),
        vec!["CocFemale01", "CocMale0001"]
    );
    assert_eq!(ids("programs", &mut p.store), vec!["PrgCase0001"]);
    assert_eq!(ids("validationRules", &mut p.store), vec!["VrDeaths001"]);
    let ds = &phone::metadata_of(&mut p.store, "dataSets").unwrap()[0];
    assert_eq!(
        ds["organisationUnits"],
        json!([{"id": "OuFacA10001"}]),
        "only the worker's own units are listed"
    );
    // Up to date: nothing downloaded.
    assert!(
        phone::sync_metadata(&mut p.store, &p.client)
            .await
            .unwrap()
            .unchanged
    );
    // A metadata change reaches the phone as a delta; a removal is seen too.
    let report = server.services.metadata.import(json!({"programs": [], "dataElements": [{"id": "DeDeaths001", "name": "Deaths (all causes)", "shortName": "Deaths", "valueType": "INTEGER_ZERO_OR_POSITIVE", "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true}]}), Default::default()).await.unwrap();
    assert!(!report.has_errors());
    let delta = phone::sync_metadata(&mut p.store, &p.client).await.unwrap();
    assert!(!delta.unchanged);
    assert!(
        delta.upserted < first.upserted,
        "a delta, not the whole package again ({} vs {})",
        delta.upserted,
        first.upserted
    );
    let deaths = phone::metadata_of(&mut p.store, "dataElements")
        .unwrap()
        .into_iter()
        .find(|o| o["id"] == "DeDeaths001")
        .unwrap();
    assert_eq!(deaths["name"], "Deaths (all causes)");

    // Offline: three forms and two events wait in the outbox.
    let periods: Vec<String> = {
        let mut p = Period::parse(&last_month()).unwrap();
        (0..3)
            .map(|_| {
                let iso = p.iso();
                p = p.previous();
                iso
            })
            .collect()
    };
    for (i, period) in periods.iter().enumerate() {
        phone::queue(&mut p.store, form(period, "OuFacA10001", i as u32)).unwrap();
    }
    phone::queue(&mut p.store, event("EvCase00001", 4)).unwrap();
    phone::queue(&mut p.store, event("EvCase00002", 31)).unwrap();
    assert_eq!(phone::pending(&mut p.store).unwrap().len(), 5);
    // Back online.
    let (report, instructions) = phone::push(&mut p.store, &p.client, 50).await.unwrap();
    assert_eq!((report.accepted, report.remaining), (5, 0), "{report:?}");
    assert!(!instructions.wipe);
    for (i, period) in periods.iter().enumerate() {
        assert_eq!(
            value(&server, "DeDeaths001", "HllvX50cXC0", period, "OuFacA10001")
                .await
                .as_deref(),
            Some(i.to_string().as_str())
        );
        assert_eq!(
            value(&server, "DeCases0001", "CocFemale01", period, "OuFacA10001")
                .await
                .as_deref(),
            Some((i + 20).to_string().as_str())
        );
    }
    // Analytics counts the phone's forms as soon as they are in (the upload
    // writer's group transaction tells the cube like any other).
    let (status, grid) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!(
                "/api/analytics?dimension=dx:DeDeaths001&dimension=pe:{}&filter=ou:OuFacA10001",
                periods.join(";")
            ),
        )
        .await;
    assert_eq!(status, 200, "{grid}");
    let total: f64 = grid["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, (0..periods.len()).sum::<usize>() as f64, "{grid}");
    let (status, ev) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/tracker/events/EvCase00002")
        .await;
    assert_eq!(status, 200);
    assert!(ev["dataValues"].to_string().contains("31"));
    // The audit trail names the channel and the device.
    let (_, audits) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!(
                "/api/audits/dataValue?de=DeDeaths001&pe={}&ou=OuFacA10001",
                periods[0]
            ),
        )
        .await;
    assert!(
        audits.to_string().contains("\"app\"") && audits.to_string().contains(&p.device()),
        "{audits}"
    );

    // Data down: what the phone needs to show and edit.
    let down = p.client.download().await.unwrap();
    let mine: Vec<_> = down
        .forms
        .iter()
        .filter(|f| f.data_set == "DsMonth0001")
        .collect();
    assert!(mine.iter().all(|f| f.org_unit == "OuFacA10001"));
    let last = mine
        .iter()
        .find(|f| f.period == periods[0])
        .expect("last month's form comes down");
    assert!(last.complete);
    assert_eq!(last.values.len(), 3);
    assert_eq!(
        down.periods["DsMonth0001"].len(),
        4,
        "current period and the policy's 3 past ones"
    );

    // The server saw the device's contact.
    let (_, devices) = server.get_as(ADMIN.0, ADMIN.1, "/api/devices").await;
    let d = &devices["devices"][0];
    assert_eq!(d["id"], p.device().as_str());
    assert_eq!(d["status"], "ACTIVE");
    assert_eq!(d["pendingSubmissions"], 0);
    assert!(d["lastSeen"].is_string());
    server.stop().await;
}

async fn bad_input_gets_a_clear_per_submission_answer(backend: Backend) {
    let Some(server) = country(backend).await else {
        return;
    };
    let mut p = Phone::with_password(&server.base, WORKER).await;
    let future = Period::containing(PeriodType::Monthly, time::OffsetDateTime::now_utc().date())
        .next()
        .iso();
    let good = Submission {
        id: "11111111-aaaa-4bbb-8ccc-000000000001".into(),
        captured_at: None,
        body: form(&last_month(), "OuFacA10001", 1),
    };
    let outside = Submission {
        id: "11111111-aaaa-4bbb-8ccc-000000000002".into(),
        captured_at: None,
        body: form(&last_month(), "OuFacB10001", 1),
    };
    let ahead = Submission {
        id: "11111111-aaaa-4bbb-8ccc-000000000003".into(),
        captured_at: Some("2099-01-01T00:00:00Z".into()),
        body: form(&future, "OuFacA10001", 2),
    };
    let bad_value = Submission {
        id: "11111111-aaaa-4bbb-8ccc-000000000004".into(),
        captured_at: None,
        body: SubmissionBody::Form(FormSubmission {
            data_set: "DsMonth0001".into(),
            period: last_month(),
            org_unit: "OuFacA10001".into(),
            attribute_option_combo: None,
            complete: false,
            values: vec![
                FormValue {
                    data_element: "DeDeaths001".into(),
                    category_option_combo: None,
                    value: Some("many".into()),
                    comment: None,
                },
                FormValue {
                    data_element: "DeCases0001".into(),
                    category_option_combo: Some("CocMale0001".into()),
                    value: Some("7".into()),
                    comment: None,
                },
            ],
        }),
    };
    let unknown = Submission {
        id: "11111111-aaaa-4bbb-8ccc-000000000005".into(),
        captured_at: None,
        body: SubmissionBody::Form(FormSubmission {
            data_set: "NoSuchSet01".into(),
            period: last_month(),
            org_unit: "OuFacA10001".into(),
            attribute_option_combo: None,
            complete: false,
            values: vec![],
        }),
    };
    let bad_id = Submission {
        id: "x".into(),
        captured_at: None,
        body: form(&last_month(), "OuFacA10001", 1),
    };
    let request = UploadRequest {
        device_time: "2026-11-26T10:00:00Z".into(),
        pending: 6,
        submissions: vec![good, outside, ahead, bad_value, unknown, bad_id],
    };
    let response = p.client.upload(&request).await.unwrap();
    let by_id = |id: &str| {
        response
            .results
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_id("11111111-aaaa-4bbb-8ccc-000000000001").status,
        SubmissionStatus::Accepted
    );
    let outside = by_id("11111111-aaaa-4bbb-8ccc-000000000002");
    assert_eq!(outside.status, SubmissionStatus::Rejected);
    assert!(outside.message.unwrap().contains("outside"));
    let ahead = by_id("11111111-aaaa-4bbb-8ccc-000000000003");
    assert!(ahead.future_dated, "{ahead:?}");
    let bad_value = by_id("11111111-aaaa-4bbb-8ccc-000000000004");
    assert_eq!(
        bad_value.status,
        SubmissionStatus::AcceptedWithWarnings,
        "{bad_value:?}"
    );
    assert_eq!(bad_value.conflicts.len(), 1);
    assert_eq!(
        bad_value.conflicts[0].data_element.as_deref(),
        Some("DeDeaths001")
    );
    assert!(
        bad_value.conflicts[0]
            .code
            .as_deref()
            .unwrap()
            .starts_with("E7"),
        "DHIS2's code: {bad_value:?}"
    );
    assert_eq!(
        by_id("11111111-aaaa-4bbb-8ccc-000000000005").status,
        SubmissionStatus::Rejected
    );
    assert_eq!(by_id("x").status, SubmissionStatus::Rejected);
    assert!(
        value(
            &server,
            "DeDeaths001",
            "HllvX50cXC0",
            &last_month(),
            "OuFacB10001"
        )
        .await
        .is_none(),
        "nothing outside scope"
    );
    // The same batch again: every result is the stored one, nothing applied twice.
    let again = p.client.upload(&request).await.unwrap();
    for r in again.results.iter().filter(|r| r.id.len() > 8) {
        assert!(r.duplicate, "{r:?}");
    }
    // Garbled and oversize bodies.
    let auth = authorization(&p.device(), "wrong-secret");
    let r = server
        .client()
        .post(server.url("/api/sync/v1/data"))
        .header("Authorization", auth)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let creds = DeviceCredentials::load(&mut p.store).unwrap();
    let _ = creds;
    let good_auth = {
        // The phone's own header, as its client sends it.
        let enrolment_secret = serde_json::to_value(DeviceCredentials::load(&mut p.store).unwrap())
            .unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string();
        authorization(&p.device(), &enrolment_secret)
    };
    let r = server
        .client()
        .post(server.url("/api/sync/v1/data"))
        .header("Authorization", &good_auth)
        .header("content-type", "application/json")
        .body("{\"deviceTime\": \"x\", \"submis")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = UploadRequest {
        device_time: "2026-11-26T10:00:00Z".into(),
        pending: 0,
        submissions: (0..501)
            .map(|i| Submission {
                id: format!("22222222-aaaa-4bbb-8ccc-{i:012}"),
                captured_at: None,
                body: form(&last_month(), "OuFacA10001", 1),
            })
            .collect(),
    };
    let r = server
        .client()
        .post(server.url("/api/sync/v1/data"))
        .header("Authorization", &good_auth)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

async fn cut_links_land_every_submission_exactly_once(backend: Backend) {
    let Some(server) = country(backend).await else {
        return;
    };
    let proxy = CuttingProxy::start(server.address(), FaultPlan::new(0.30, 0.10, 7))
        .await
        .unwrap();
    let mut p = Phone::with_password(&server.base, WORKER).await;
    p.client = p.client.clone().at(&proxy.base_url());
    // 100 monthly forms (one per month) and 400 events.
    let mut period = Period::parse(&last_month()).unwrap();
    let mut periods = Vec::new();
    for i in 0..100u32 {
        phone::queue(&mut p.store, form(&period.iso(), "OuFacA10001", i)).unwrap();
        periods.push(period.iso());
        period = period.previous();
    }
    for i in 0..400u32 {
        phone::queue(&mut p.store, event(&format!("EvCut{i:06}"), i % 90)).unwrap();
    }
    let rounds = p.push_all(25).await;
    let stats = proxy.stats();
    assert!(
        stats.cut_requests > 0 && stats.cut_responses > 0,
        "the link really was cut: {stats:?}"
    );
    // The phone knows the true state of each: every one accepted, once.
    let outbox = phone::outbox(&mut p.store).unwrap();
    assert_eq!(outbox.len(), 500);
    assert!(
        outbox.iter().all(|e| e
            .result
            .as_ref()
            .is_some_and(|r| r.status == SubmissionStatus::Accepted)),
        "rounds {rounds}, {stats:?}"
    );
    let duplicates = outbox
        .iter()
        .filter(|e| e.result.as_ref().unwrap().duplicate)
        .count();
    assert!(
        duplicates > 0,
        "some answers were cut and asked again ({stats:?})"
    );
    // The server holds each exactly once.
    let (_, events) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/tracker/events?program=PrgCase0001&orgUnit=OuFacA10001&pageSize=1000",
        )
        .await;
    let events = events["events"]
        .as_array()
        .or(events["instances"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), 400);
    for (i, period) in periods.iter().enumerate().step_by(9) {
        assert_eq!(
            value(&server, "DeDeaths001", "HllvX50cXC0", period, "OuFacA10001").await,
            Some(i.to_string()),
            "{period}"
        );
    }
    server.stop().await;
}

/// Forms of the facility for `n` months back from last month, with ids
/// `{prefix}-0000` on; form `i` reports `i` deaths.
fn monthly_forms(prefix: &str, n: u32) -> Vec<Submission> {
    let mut period = Period::parse(&last_month()).unwrap();
    let mut submissions = Vec::new();
    for i in 0..n {
        submissions.push(Submission {
            id: format!("{prefix}-{i:04}"),
            captured_at: None,
            body: form(&period.iso(), "OuFacA10001", i),
        });
        period = period.previous();
    }
    submissions
}

/// `uploads` uploads at once, upload `k` the window of six forms from
/// `k`, sent by `client(k)`; their answers, each checked to hold six results.
async fn upload_windows(
    submissions: &[Submission],
    uploads: usize,
    client: impl Fn(usize) -> SyncClient,
) -> Vec<UploadResponse> {
    let sent: Vec<_> = (0..uploads)
        .map(|k| {
            let request = UploadRequest {
                device_time: "2026-11-26T10:00:00Z".into(),
                pending: 6,
                submissions: submissions[k..k + 6].to_vec(),
            };
            let client = client(k);
            tokio::spawn(async move { client.upload(&request).await })
        })
        .collect();
    let mut answers = Vec::new();
    for upload in sent {
        let response = upload.await.unwrap().unwrap();
        assert_eq!(response.results.len(), 6);
        answers.push(response);
    }
    answers
}

/// Uploads overlapping in time and in content, as retries of a batch whose
/// answer was lost can be: each form is applied by exactly one of them, and
/// every other gets its result as a duplicate (never `IN_PROGRESS`, as a
/// form's claim commits with its result).
async fn concurrent_uploads_apply_each_form_once(backend: Backend) {
    let Some(server) = country(backend).await else {
        return;
    };
    let p = Phone::with_password(&server.base, WORKER).await;
    let submissions = monthly_forms("concurrent-form", 13);
    // Eight uploads at once, each a window of six forms, in the same order.
    let uploads = upload_windows(&submissions, 8, |_| p.client.clone()).await;
    let mut applied = std::collections::BTreeMap::<String, usize>::new();
    for response in uploads {
        for r in response.results {
            assert_eq!(r.status, SubmissionStatus::Accepted, "{r:?}");
            *applied.entry(r.id).or_default() += usize::from(!r.duplicate);
        }
    }
    assert_eq!(applied.len(), 13, "{applied:?}");
    assert!(applied.values().all(|n| *n == 1), "{applied:?}");
    server.stop().await;
}

/// Another instance over the same PostgreSQL records a submission id while
/// this instance's writer holds it in a group: the group's commit loses the
/// claim, writes nothing, and each upload is written again alone. The form
/// claimed elsewhere gets the other instance's result and none of its
/// values are written here; the form beside it is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_taken_by_another_instance_mid_commit_writes_nothing_twice() {
    let Some(server) = country(Backend::Postgres).await else {
        return;
    };
    let p = Phone::with_password(&server.base, WORKER).await;
    let mut other = server.pg_connection().await.expect("a PostgreSQL server");
    // Outside the other instance's transaction: in one, the activity view
    // is read once and kept.
    let mut watch = server.pg_connection().await.expect("a PostgreSQL server");
    let month = last_month();
    let before = Period::parse(&month).unwrap().previous().iso();
    let elsewhere = SubmissionResult {
        id: "claimed-elsewhere-0001".into(),
        status: SubmissionStatus::Accepted,
        duplicate: false,
        received_at: "2026-11-26T09:59:00Z".into(),
        future_dated: false,
        message: Some("applied by the other instance".into()),
        conflicts: Vec::new(),
    };
    // The other instance's claim, not yet committed: this instance's insert
    // of the same id waits on it.
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query(
        "INSERT INTO sync_submission (id, device_uid, user_uid, kind, status, received_at, result, updated_at)
         VALUES ($1, $2, 'UserChwA101', 'form', 'ACCEPTED', 0, $3, 0)",
    )
    .bind(&elsewhere.id)
    .bind(p.device())
    .bind(serde_json::to_string(&elsewhere).unwrap())
    .execute(&mut other)
    .await
    .unwrap();
    let request = UploadRequest {
        device_time: "2026-11-26T10:00:00Z".into(),
        pending: 2,
        submissions: vec![
            Submission {
                id: elsewhere.id.clone(),
                captured_at: None,
                body: form(&month, "OuFacA10001", 7),
            },
            Submission {
                id: "applied-here-0001".into(),
                captured_at: None,
                body: form(&before, "OuFacA10001", 8),
            },
        ],
    };
    let client = p.client.clone();
    let upload = tokio::spawn(async move { client.upload(&request).await });
    // Commit the other claim once this instance's writer waits on it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock'
               AND query LIKE 'INSERT INTO sync_submission%'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if blocked > 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let waits: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()",
            )
            .fetch_all(&mut watch)
            .await
            .unwrap();
            panic!("the writer never reached the claim: {waits:?}");
        }
    }
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let response = upload.await.unwrap().unwrap();
    let [first, second] = &response.results[..] else {
        panic!("{response:?}");
    };
    assert_eq!(first.id, elsewhere.id);
    assert!(first.duplicate, "{first:?}");
    assert_eq!(first.status, SubmissionStatus::Accepted);
    assert_eq!(
        first.message.as_deref(),
        Some("applied by the other instance")
    );
    assert_eq!(second.status, SubmissionStatus::Accepted, "{second:?}");
    assert!(!second.duplicate);
    // Nothing of the form claimed elsewhere was written here.
    assert_eq!(
        value(&server, "DeDeaths001", "HllvX50cXC0", &month, "OuFacA10001").await,
        None
    );
    assert_eq!(
        value(
            &server,
            "DeDeaths001",
            "HllvX50cXC0",
            &before,
            "OuFacA10001"
        )
        .await,
        Some("8".into())
    );
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_submission")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(claims, 2);
    server.stop().await;
}

/// Two instances over one PostgreSQL, as behind a balancer: a phone's
/// retries reach either, overlapping uploads go to both at once, and every
/// form is applied exactly once; a device revoked through one is refused
/// by the other at its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_over_one_database_apply_each_form_once() {
    let Some(first) = country(Backend::Postgres).await else {
        return;
    };
    let second = first.beside().await.expect("a PostgreSQL server");
    let p = Phone::with_password(&first.base, WORKER).await;
    let submissions = monthly_forms("two-instances", 15);
    // Ten uploads at once, windows of six forms, alternating instances.
    let uploads = upload_windows(&submissions, 10, |k| {
        let base = if k % 2 == 0 {
            &first.base
        } else {
            &second.base
        };
        p.client.clone().at(base)
    })
    .await;
    let mut applied = std::collections::BTreeMap::<String, usize>::new();
    for response in uploads {
        for r in response.results {
            // Another instance's request may still hold the id: the phone
            // asks again, as its outbox does.
            if r.status == SubmissionStatus::InProgress {
                applied.entry(r.id).or_default();
                continue;
            }
            assert_eq!(r.status, SubmissionStatus::Accepted, "{r:?}");
            *applied.entry(r.id).or_default() += usize::from(!r.duplicate);
        }
    }
    assert_eq!(applied.len(), 15, "{applied:?}");
    // Every id once more through the other instance: all final, none new.
    let again = p
        .client
        .clone()
        .at(&second.base)
        .upload(&UploadRequest {
            device_time: "2026-11-26T10:01:00Z".into(),
            pending: 15,
            submissions: submissions.clone(),
        })
        .await
        .unwrap();
    for r in again.results {
        assert_eq!(r.status, SubmissionStatus::Accepted, "{r:?}");
        assert!(r.duplicate, "{r:?}");
    }
    assert!(applied.values().all(|n| *n <= 1), "{applied:?}");
    let mut period = Period::parse(&last_month()).unwrap();
    for i in 0..15u32 {
        assert_eq!(
            value(
                &second,
                "DeDeaths001",
                "HllvX50cXC0",
                &period.iso(),
                "OuFacA10001"
            )
            .await,
            Some(i.to_string()),
            "{period}"
        );
        period = period.previous();
    }
    // Revoked through the first, refused by the second at once.
    let r = first
        .client()
        .post(first.url(&format!("/api/devices/{}/revoke", p.device())))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refused = p.client.clone().at(&second.base).download().await;
    assert!(
        matches!(refused, Err(SyncError::Unauthorized)),
        "{refused:?}"
    );
    second.stop().await;
    first.stop().await;
}

async fn restart_policy_revoke_and_wipe_reach_the_phone(backend: Backend) {
    let Some(server) = country(backend).await else {
        return;
    };
    let mut p = Phone::with_password(&server.base, WORKER).await;
    for i in 0..40u32 {
        phone::queue(&mut p.store, event(&format!("EvRst{i:06}"), i)).unwrap();
    }
    // Half goes up, then the server restarts mid-sync.
    let (report, _) = phone::push(&mut p.store, &p.client, 20).await.unwrap();
    assert_eq!(report.remaining, 20);
    let server = server.restart().await;
    p.push_all(20).await;
    assert_eq!(
        phone::outbox(&mut p.store)
            .unwrap()
            .iter()
            .filter(|e| e.result.is_some())
            .count(),
        40
    );
    let (_, events) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/tracker/events?program=PrgCase0001&orgUnit=OuFacA10001&pageSize=1000",
        )
        .await;
    assert_eq!(
        events["events"]
            .as_array()
            .or(events["instances"].as_array())
            .map(Vec::len),
        Some(40)
    );

    // Policies: role, org unit, device; the device's own wins field by field.
    for body in [
        json!({"name": "Workers", "scope": "ROLE", "target": {"id": "RoleWorker1"}, "rules": {"pinMinLength": 6, "idleLockSeconds": 120, "smsGatewayNumbers": ["+255700000100"]}}),
        json!({"name": "District A", "scope": "ORG_UNIT", "target": {"id": "OuDistA0001"}, "rules": {"idleLockSeconds": 90, "pastPeriodsKept": 6}}),
        json!({"name": "This phone", "scope": "DEVICE", "target": {"id": p.device()}, "rules": {"idleLockSeconds": 45}}),
    ] {
        let (status, reply) = server
            .post_json_as(ADMIN.0, ADMIN.1, "/api/devicePolicies", &body)
            .await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, bad) = server.post_json_as(ADMIN.0, ADMIN.1, "/api/devicePolicies", &json!({"name": "Bad", "scope": "ROLE", "target": {"id": "RoleWorker1"}, "rules": {"pinLength": 2}})).await;
    assert_eq!(status, 409, "{bad}");
    let (_, effective) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/devices/{}/policy", p.device()),
        )
        .await;
    assert_eq!(effective["policy"]["idleLockSeconds"], 45);
    assert_eq!(effective["policy"]["pinMinLength"], 6);
    assert_eq!(effective["policy"]["pastPeriodsKept"], 6);
    assert_eq!(effective["sources"].as_array().unwrap().len(), 3);
    // The phone gets it at its next contact and enforces it locally.
    let instructions = p
        .client
        .status(&StatusReport {
            app_version: Some("0.1.1".into()),
            pending: 0,
            device_time: None,
        })
        .await
        .unwrap();
    assert_eq!(instructions.policy.idle_lock_seconds, 45);
    assert_eq!(
        phone::apply(&mut p.store, &p.client, &instructions)
            .await
            .unwrap(),
        Applied::Kept
    );
    assert_eq!(p.store.idle_lock_secs(), 45);
    assert_eq!(p.store.policy().min_length, 6);
    assert!(
        !p.store.needs_pin_change(),
        "the 6-digit PIN still fits the new rules"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(!phone::must_sign_in_again(&mut p.store, now).unwrap());
    assert!(
        phone::must_sign_in_again(&mut p.store, now + 31 * 86_400).unwrap(),
        "30 days offline by default"
    );

    // Wipe: a second phone of the same worker is wiped at its next contact.
    let mut q = Phone::with_password(&server.base, WORKER).await;
    let r = server
        .client()
        .post(server.url(&format!("/api/devices/{}/wipe", q.device())))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let instructions = q.client.status(&StatusReport::default()).await.unwrap();
    assert!(instructions.wipe);
    assert_eq!(
        phone::apply(&mut q.store, &q.client, &instructions)
            .await
            .unwrap(),
        Applied::Wiped
    );
    assert!(
        DeviceCredentials::load(&mut q.store).is_err(),
        "the phone's data is gone"
    );
    assert!(
        matches!(q.client.download().await, Err(SyncError::Unauthorized)),
        "a wiped device gets nothing"
    );
    let (_, d) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/devices/{}", q.device()))
        .await;
    assert_eq!(d["status"], "WIPED");
    let actions: Vec<&str> = d["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["ENROL", "WIPE_REQUESTED", "WIPED"]);

    // Revoke: the secret stops working at once.
    let r = server
        .client()
        .post(server.url(&format!("/api/devices/{}/revoke", p.device())))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(matches!(
        p.client.status(&StatusReport::default()).await,
        Err(SyncError::Unauthorized)
    ));
    assert!(matches!(
        phone::sync_metadata(&mut p.store, &p.client).await,
        Err(SyncError::Unauthorized)
    ));
    server.stop().await;
}

async fn enrolment_codes_and_disabled_users(backend: Backend) {
    let Some(server) = country(backend).await else {
        return;
    };
    // An admin makes a one-time code (and its QR) for chw.a2.
    let (status, made) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/devices/enrolmentCodes",
            &json!({"user": {"id": "UserChwA201"}, "expiresInHours": 24}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let code = made["code"].as_str().unwrap().to_string();
    assert!(made["qrSvg"].as_str().unwrap().contains("<svg"));
    assert!(made["link"].as_str().unwrap().contains(&code));
    let (status, _) = server
        .post_json_as(
            WORKER.0,
            WORKER.1,
            "/api/devices/enrolmentCodes",
            &json!({"user": {"id": "UserChwA201"}}),
        )
        .await;
    assert_eq!(status, 403);
    // Typed from paper: lower case, spaces instead of dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let request = EnrolRequest {
        code: Some(typed),
        ..Default::default()
    };
    let mut p = Phone::enrol(&server.base, request.clone()).await.unwrap();
    assert_eq!(p.client.credentials().unwrap().username, "chw.a2");
    assert!(
        matches!(
            Phone::enrol(&server.base, request).await,
            Err(SyncError::Unauthorized)
        ),
        "a code works once"
    );
    assert!(matches!(
        Phone::enrol(
            &server.base,
            EnrolRequest {
                username: Some("chw.a2".into()),
                password: Some("wrong".into()),
                ..Default::default()
            }
        )
        .await,
        Err(SyncError::Unauthorized)
    ));
    assert!(matches!(
        Phone::enrol(&server.base, EnrolRequest::default()).await,
        Err(SyncError::Refused { status: 400, .. })
    ));
    assert!(
        !phone::sync_metadata(&mut p.store, &p.client)
            .await
            .unwrap()
            .unchanged
    );

    // A policy that revokes the old phone when a new one is enrolled.
    let (status, _) = server.post_json_as(ADMIN.0, ADMIN.1, "/api/devicePolicies", &json!({"name": "One phone each", "scope": "DEFAULT", "rules": {"revokePreviousOnEnrol": true}})).await;
    assert_eq!(status, 200);
    let newer = Phone::with_password(&server.base, ("chw.a2", "Worker123!")).await;
    assert!(
        matches!(
            p.client.status(&StatusReport::default()).await,
            Err(SyncError::Unauthorized)
        ),
        "the old phone is revoked"
    );
    newer.client.status(&StatusReport::default()).await.unwrap();

    // A disabled user's device gets nothing.
    let report = server.services.metadata.import(json!({"users": [{"id": "UserChwA201", "username": "chw.a2", "firstName": "C", "surname": "B", "disabled": true,
        "userRoles": [{"id": "RoleWorker1"}], "organisationUnits": [{"id": "OuFacA20001"}]}]}), Default::default()).await.unwrap();
    assert!(
        !report.has_errors(),
        "{:?}",
        report.errors().collect::<Vec<_>>()
    );
    assert!(matches!(
        newer.client.download().await,
        Err(SyncError::Unauthorized)
    ));
    // Workers list only their own devices.
    let (_, mine) = server.get_as(WORKER.0, WORKER.1, "/api/devices").await;
    assert!(mine["devices"].as_array().unwrap().is_empty());
    server.stop().await;
}

on_both_stores!(
    phone_enrols_syncs_captures_offline_and_uploads,
    bad_input_gets_a_clear_per_submission_answer,
    cut_links_land_every_submission_exactly_once,
    concurrent_uploads_apply_each_form_once,
    restart_policy_revoke_and_wipe_reach_the_phone,
    enrolment_codes_and_disabled_users,
);
