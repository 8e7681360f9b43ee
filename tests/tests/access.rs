//! Users and access on the demo country: who sees what, sign-in, tokens,
//! sessions, throttling. On both stores.

use hisa_tests::{on_both_stores, Backend, StartOptions, TestServer};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "district");

async fn demo(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(
        backend,
        StartOptions {
            demo_facilities: Some(40),
            ..StartOptions::default()
        },
    )
    .await
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

async fn admin_and_me(backend: Backend) {
    let Some(server) = demo(backend).await else {
        return;
    };
    let (status, me) = server.get_as(ADMIN.0, ADMIN.1, "/api/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "admin");
    assert!(me["authorities"]
        .as_array()
        .unwrap()
        .contains(&json!("ALL")));
    assert!(!me["organisationUnits"].as_array().unwrap().is_empty());
    let (status, me40) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/40/me?fields=id,username")
        .await;
    assert_eq!(status, 200);
    assert_eq!(me40, json!({"id": me["id"], "username": "admin"}));
    let (status, info) = server.get_as(ADMIN.0, ADMIN.1, "/api/system/info").await;
    assert_eq!(status, 200);
    assert!(info["version"].as_str().unwrap().starts_with("2."));
    assert!(info["dataValueCount"].as_i64().unwrap() > 10_000);

    // The tree as DHIS2 clients browse it: levels, children, paths.
    let (status, roots) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/organisationUnits?filter=level:eq:1&fields=id,name,leaf,children[id,name,level,path]")
        .await;
    assert_eq!(status, 200);
    let root = &roots["organisationUnits"][0];
    assert_eq!(roots["organisationUnits"].as_array().unwrap().len(), 1);
    assert_eq!(root["leaf"], false);
    let regions = root["children"].as_array().unwrap();
    assert_eq!(regions.len(), 4);
    for region in regions {
        assert_eq!(region["level"], 2);
        assert!(region["path"]
            .as_str()
            .unwrap()
            .starts_with(&format!("/{}/", root["id"].as_str().unwrap())));
    }
    let (_, levels) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/organisationUnitLevels?fields=level,name&order=level:asc",
        )
        .await;
    assert_eq!(
        levels["organisationUnitLevels"].as_array().unwrap().len(),
        4
    );
    let (_, me_legacy) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/me?fields=userCredentials[username]")
        .await;
    assert_eq!(me_legacy["userCredentials"]["username"], "admin");

    // Wrong password, unknown user, no credentials: 401.
    for (u, p) in [("admin", "wrong"), ("nobody", "district")] {
        let (status, _) = server.get_as(u, p, "/api/me").await;
        assert_eq!(status, 401);
    }
    let r = server
        .client()
        .get(server.url("/api/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    server.stop().await;
}

/// A district supervisor sees their own district's users and data only.
async fn supervisors_see_only_their_district(backend: Backend) {
    let Some(server) = demo(backend).await else {
        return;
    };
    let (_, all) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/users?paging=false&fields=id,username,organisationUnits[id,path]",
        )
        .await;
    let users = all["users"].as_array().unwrap();
    let supervisors: Vec<&Value> = users
        .iter()
        .filter(|u| u["username"].as_str().unwrap().starts_with("sup."))
        .collect();
    assert!(supervisors.len() >= 2);
    let sup = supervisors[0];
    let district = sup["organisationUnits"][0]["id"].as_str().unwrap();
    let district_path = sup["organisationUnits"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let username = sup["username"].as_str().unwrap();

    let (status, mine) = server
        .get_as(
            username,
            "Supervisor123!",
            "/api/users?paging=false&fields=id,username,organisationUnits[path]",
        )
        .await;
    assert_eq!(status, 200);
    let seen = mine["users"].as_array().unwrap();
    assert!(
        seen.len() > 1,
        "the supervisor sees their district's workers"
    );
    for u in seen {
        if u["username"] == sup["username"] {
            continue;
        }
        for ou in u["organisationUnits"].as_array().unwrap() {
            assert!(
                ou["path"].as_str().unwrap().starts_with(&district_path),
                "{username} sees {} outside {district}",
                u["username"]
            );
        }
    }
    let expected = users
        .iter()
        .filter(|u| {
            u["organisationUnits"].as_array().is_some_and(|ous| {
                !ous.is_empty()
                    && ous
                        .iter()
                        .all(|ou| ou["path"].as_str().unwrap().starts_with(&district_path))
            })
        })
        .count();
    assert_eq!(seen.len(), expected);

    // Another district's supervisor is not visible to them.
    let other = supervisors[1]["id"].as_str().unwrap();
    let (status, _) = server
        .get_as(username, "Supervisor123!", &format!("/api/users/{other}"))
        .await;
    assert_eq!(status, 404);

    // A health worker sees only themselves.
    let worker = users
        .iter()
        .find(|u| u["username"].as_str().unwrap().starts_with("chw."))
        .unwrap();
    let (status, me_only) = server
        .get_as(
            worker["username"].as_str().unwrap(),
            "Worker123!",
            "/api/users?paging=false",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&me_only, "users"),
        vec![worker["id"].as_str().unwrap().to_string()]
    );

    // Data: the supervisor's subtree holds some but not all of the demo's values.
    let snap = server.services.metadata.snapshot_now();
    let caller = hisa_server::auth::Caller::from_user(&snap, sup["id"].as_str().unwrap()).unwrap();
    let roots: Vec<String> = caller
        .view_roots
        .iter()
        .map(|r| snap.org_unit(r).unwrap().path.clone())
        .collect();
    let in_district = server
        .services
        .store
        .count_data_values_in_subtrees(&roots)
        .await
        .unwrap();
    let total = server
        .services
        .store
        .data_counts()
        .await
        .unwrap()
        .data_values;
    assert!(
        in_district > 0 && in_district < total,
        "{in_district} of {total}"
    );
    assert!(caller.can_view(&snap, district));
    server.stop().await;
}

async fn tokens_sessions_and_throttling(backend: Backend) {
    let Some(server) = demo(backend).await else {
        return;
    };
    let client = server.client();

    // Personal access token: shown once, then it authenticates.
    let (status, body) = server
        .post_json_as(ADMIN.0, ADMIN.1, "/api/apiToken", &json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let key = body["response"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("d2p_"));
    let r = client
        .get(server.url("/api/me"))
        .header("Authorization", format!("ApiToken {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('A') { 'B' } else { 'A' });
    let r = client
        .get(server.url("/api/me"))
        .header("Authorization", format!("ApiToken {forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Browser session: HttpOnly SameSite cookie; writes need the CSRF token.
    let r = client
        .post(server.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": "district"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().unwrap().to_string();
    let csrf = r.json::<Value>().await.unwrap()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client
        .get(server.url("/api/me"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let write = |with_csrf: bool| {
        let mut req = client
            .post(server.url("/api/metadata"))
            .header("Cookie", &session)
            .json(&json!({"constants": [{"name": "k", "value": 1}]}));
        if with_csrf {
            req = req.header("X-CSRF-Token", &csrf);
        }
        req.send()
    };
    assert_eq!(write(false).await.unwrap().status().as_u16(), 403);
    assert_eq!(write(true).await.unwrap().status().as_u16(), 200);
    let r = client
        .post(server.url("/api/auth/logout"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = client
        .get(server.url("/api/me"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Repeated wrong passwords lock the account for a while, even for the right one.
    for _ in 0..5 {
        let (status, _) = server.get_as("manager", "wrong", "/api/me").await;
        assert_eq!(status, 401);
    }
    let (status, _) = server.get_as("manager", "Manager123!", "/api/me").await;
    assert_eq!(status, 429);
    server.stop().await;
}

async fn authorities_are_enforced(backend: Backend) {
    let Some(server) = demo(backend).await else {
        return;
    };
    let (_, all) = server
        .get_as(ADMIN.0, ADMIN.1, "/api/users?paging=false&fields=username")
        .await;
    let worker = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .find(|u| u.starts_with("chw."))
        .unwrap();
    let (status, body) = server
        .post_json_as(
            &worker,
            "Worker123!",
            "/api/metadata",
            &json!({"constants": [{"name": "x", "value": 1}]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = server.get_as(&worker, "Worker123!", "/api/metadata").await;
    assert_eq!(status, 403);
    // The data manager holds F_METADATA_IMPORT and F_USER_ADD…
    let (status, _) = server
        .post_json_as(
            "manager",
            "Manager123!",
            "/api/metadata",
            &json!({"constants": [{"name": "y", "value": 2}]}),
        )
        .await;
    assert_eq!(status, 200);
    // …but cannot hand out a superuser role they do not hold.
    let (_, roles) = server
        .get_as(
            ADMIN.0,
            ADMIN.1,
            "/api/userRoles?paging=false&fields=id,authorities",
        )
        .await;
    let superuser_role = roles["userRoles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["authorities"].as_array().unwrap().contains(&json!("ALL")))
        .unwrap()["id"]
        .clone();
    let (status, body) = server
        .post_json_as(
            "manager",
            "Manager123!",
            "/api/metadata",
            &json!({"users": [
            {"username": "sneaky", "password": "Sneaky123!", "firstName": "S", "surname": "S",
             "userRoles": [{"id": superuser_role}]}]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server
        .post_json_as(
            "manager",
            "Manager123!",
            "/api/metadata",
            &json!({"userRoles": [{"name": "Everything", "authorities": ["ALL"]}]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    server.stop().await;
}

on_both_stores!(
    admin_and_me,
    supervisors_see_only_their_district,
    tokens_sessions_and_throttling,
    authorities_are_enforced,
);
