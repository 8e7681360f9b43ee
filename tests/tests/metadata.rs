//! Metadata in and out, as a DHIS2 client or script would drive it, on both stores.

use hisa_tests::{dhis2_package, on_both_stores, Backend, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");

/// A server with only an admin user (no demo country).
async fn bare(backend: Backend) -> Option<TestServer> {
    let server = TestServer::start(backend).await?;
    let admin = json!({
        "userRoles": [{"id": "RoleSuper01", "name": "Superuser", "authorities": ["ALL"]}],
        "users": [{"id": "UserAdmin01", "username": "admin", "password": "district",
                   "firstName": "System", "surname": "Administrator",
                   "userRoles": [{"id": "RoleSuper01"}]}]
    });
    let report = server
        .services
        .metadata
        .import(admin, Default::default())
        .await
        .expect("bootstrap admin");
    assert!(!report.has_errors());
    Some(server)
}

fn load(name: &str) -> Value {
    let text = std::fs::read(dhis2_package(name)).expect("read package");
    serde_json::from_slice(&text).expect("package is JSON")
}

async fn real_dhis2_packages_import_unchanged(backend: Backend) {
    let Some(server) = bare(backend).await else {
        return;
    };
    for name in ["TB_AGG-complete-2.41.json", "IDSR00-2.36.json"] {
        let package = load(name);
        let (status, body) = server
            .post_json_as(ADMIN.0, ADMIN.1, "/api/metadata", &package)
            .await;
        assert_eq!(status, 200, "{name}: {body:#}");
        // IDSR's owner user names a role that is not in the package: the
        // user is imported without it, and the report says so.
        let expected = if name.starts_with("IDSR") {
            "WARNING"
        } else {
            "OK"
        };
        assert_eq!(body["status"], expected, "{name}: {body:#}");
        assert_eq!(body["response"]["status"], expected);
        let stats = &body["response"]["stats"];
        let objects: usize = package
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_array)
            .map(Vec::len)
            .sum();
        assert_eq!(stats["ignored"], 0, "{name}: {stats}");
        let written = stats["created"].as_u64().unwrap() + stats["updated"].as_u64().unwrap();
        assert!(
            written as usize >= objects,
            "{name}: {written} of {objects} written"
        );
    }
    // Every data element of the TB package is served back, with its category combo.
    let tb = load("TB_AGG-complete-2.41.json");
    let (_, des) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/dataElements?paging=false&fields=id,categoryCombo[id,name]",
        )
        .await;
    let served: Vec<&str> = des["dataElements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    for de in tb["dataElements"].as_array().unwrap() {
        assert!(served.contains(&de["id"].as_str().unwrap()));
    }
    // The package's option combo UIDs are kept, since data values refer to them.
    for coc in tb["categoryOptionCombos"].as_array().unwrap() {
        let id = coc["id"].as_str().unwrap();
        let (status, _) = server
            .get_as(ADMIN.0, ADMIN.1, &format!("/api/categoryOptionCombos/{id}"))
            .await;
        assert_eq!(status, 200, "COC {id} lost");
    }
    // Importing the same package again updates, never duplicates.
    let (status, body) = server
        .post_json_as(ADMIN.0, ADMIN.1, "/api/metadata", &tb)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["response"]["stats"]["created"], 0,
        "{:#}",
        body["response"]["stats"]
    );
    // Types Hisa does not model (dashboards, visualizations) come back out.
    let (_, export) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/metadata?visualizations=true")
        .await;
    let idsr = load("IDSR00-2.36.json");
    assert_eq!(
        export["visualizations"].as_array().map(Vec::len),
        Some(
            tb["visualizations"].as_array().unwrap().len()
                + idsr["visualizations"].as_array().unwrap().len()
        )
    );
    server.stop().await;
}

async fn bad_metadata_is_refused_and_nothing_is_written(backend: Backend) {
    let Some(server) = bare(backend).await else {
        return;
    };
    let count = |server: &TestServer| {
        let snap = server.services.metadata.snapshot_now();
        (
            snap.count_of("dataElements"),
            snap.count_of("organisationUnits"),
            snap.version,
        )
    };
    let before = count(&server);
    let client = server.client();

    // Malformed JSON: 400 with a position.
    let r = client
        .post(server.url("/api/metadata"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("content-type", "application/json")
        .body("{\"dataElements\": [ {\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("line 1"),
        "{body}"
    );

    // Wrong type of a modeled field.
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/metadata",
            &json!({"dataSets": [{"id": "DataSet0001", "name": "x", "periodType": "Fortnightly"}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("dataSets[0]"));

    // A reference to a missing object, beside a valid object: atomic, nothing written.
    let (status, body) = server
        .post_json_as(ADMIN.0, ADMIN.1, "/api/metadata", &json!({
            "organisationUnits": [{"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"}],
            "dataElements": [{"id": "DeTest00001", "name": "x", "shortName": "x", "valueType": "NUMBER",
                "domainType": "AGGREGATE", "aggregationType": "SUM", "categoryCombo": {"id": "NoSuchCc001"}}]
        }))
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["status"], "WARNING");
    assert_eq!(body["response"]["status"], "ERROR");
    let errors: Vec<&str> = body["response"]["typeReports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["objectReports"].as_array().unwrap())
        .flat_map(|o| o["errorReports"].as_array().unwrap())
        .map(|e| e["errorCode"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["E5002"]);

    // Invalid and duplicate UIDs, a cycle in the tree, closing before opening.
    for (payload, code) in [
        (
            json!({"constants": [{"id": "not-a-uid", "name": "c", "value": 1}]}),
            "E4014",
        ),
        (
            json!({"constants": [{"id": "Const000001", "name": "c", "value": 1}, {"id": "Const000001", "name": "d", "value": 2}]}),
            "E5005",
        ),
        (
            json!({"organisationUnits": [
            {"id": "OuA00000001", "name": "A", "shortName": "A", "openingDate": "1990-01-01", "parent": {"id": "OuB00000001"}},
            {"id": "OuB00000001", "name": "B", "shortName": "B", "openingDate": "1990-01-01", "parent": {"id": "OuA00000001"}}]}),
            "H4001",
        ),
        (
            json!({"organisationUnits": [{"id": "OuC00000001", "name": "C", "shortName": "C", "openingDate": "2000-01-01", "closedDate": "1999-01-01"}]}),
            "E4013",
        ),
        (
            json!({"dataElements": [{"id": "DeTest00002", "name": "x"}]}),
            "E4000",
        ),
    ] {
        let (status, body) = server
            .post_json_as(ADMIN.0, ADMIN.1, "/api/metadata", &payload)
            .await;
        assert_eq!(status, 409, "{payload}: {body}");
        assert!(
            body.to_string().contains(code),
            "{code} expected in {body:#}"
        );
    }
    assert_eq!(count(&server), before, "a refused import wrote something");

    // A body over the limit: 413 in DHIS2's envelope.
    let big = "x".repeat(65 * 1024 * 1024);
    // The server answers once it has read 64 MiB and closes the connection;
    // the client may still be writing the rest and see a broken pipe
    // instead of the answer. Such an attempt is sent again.
    let mut attempts = 0;
    let r = loop {
        attempts += 1;
        match client
            .post(server.url("/api/metadata"))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .header("content-type", "application/json")
            .body(format!("{{\"constants\": [], \"pad\": \"{big}\"}}"))
            .send()
            .await
        {
            Ok(r) => break r,
            Err(e) if e.is_request() && attempts < 5 => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["httpStatusCode"], 413);
    server.stop().await;
}

async fn queries_follow_dhis2_conventions(backend: Backend) {
    let Some(server) = bare(backend).await else {
        return;
    };
    let (status, _) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/metadata",
            &load("TB_AGG-complete-2.41.json"),
        )
        .await;
    assert_eq!(status, 200);
    // Paging and the pager.
    let (_, page) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/dataElements?pageSize=10&page=2&order=name:asc",
        )
        .await;
    assert_eq!(page["pager"]["page"], 2);
    assert_eq!(page["pager"]["pageSize"], 10);
    assert_eq!(page["pager"]["total"], 140);
    assert_eq!(page["dataElements"].as_array().unwrap().len(), 10);
    assert!(page["dataElements"][0]["displayName"].is_string());
    // Filters, nested fields, a pinned API version.
    let (status, hits) = server
        .get_as(ADMIN.0, ADMIN.1,
            "/api/40/dataElements?filter=valueType:eq:INTEGER_ZERO_OR_POSITIVE&filter=name:ilike:new&fields=id,name,categoryCombo[name,categories[id]]&paging=false")
        .await;
    assert_eq!(status, 200);
    let list = hits["dataElements"].as_array().unwrap();
    assert!(!list.is_empty());
    for de in list {
        assert!(de["name"].as_str().unwrap().to_lowercase().contains("new"));
        assert!(de["categoryCombo"]["name"].is_string(), "{de}");
    }
    // Detail, and a missing one.
    let id = list[0]["id"].as_str().unwrap();
    let (status, de) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            &format!("/api/dataElements/{id}?fields=id,valueType"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(de["valueType"], "INTEGER_ZERO_OR_POSITIVE");
    let (status, body) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/dataElements/NoSuchThing")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["httpStatusCode"], 404);
    // A malformed filter is a clear error, not a crash.
    let (status, _) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/dataElements?filter=name:nosuchop:x")
        .await;
    assert!(status == 400 || status == 409, "{status}");
    server.stop().await;
}

async fn single_object_crud(backend: Backend) {
    let Some(server) = bare(backend).await else {
        return;
    };
    let (status, body) = server
        .post_json_as(
            ADMIN.0,
            ADMIN.1,
            "/api/constants",
            &json!({"name": "Under-5 share", "value": 0.17}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let uid = body["response"]["uid"].as_str().unwrap().to_string();
    let r = server
        .client()
        .put(server.url(&format!("/api/constants/{uid}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&json!({"name": "Under-5 share", "value": 0.18}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, c) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/constants/{uid}"))
        .await;
    assert_eq!(c["value"], 0.18);
    assert!(c["created"].is_string() && c["lastUpdated"].is_string());
    let r = server
        .client()
        .delete(server.url(&format!("/api/constants/{uid}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = server
        .get_as(ADMIN.0, ADMIN.1, &format!("/api/constants/{uid}"))
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

on_both_stores!(
    real_dhis2_packages_import_unchanged,
    bad_metadata_is_refused_and_nothing_is_written,
    queries_follow_dhis2_conventions,
    single_object_crud,
);
