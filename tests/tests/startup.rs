//! Startup as a load balancer sees it: the port answers at once, `/api/health`
//! says "starting" until migrations ran and metadata loaded, and other routes
//! say 503 until then. Shutdown is graceful.

use hisa_server::server::{prepare, serve_notifying};
use hisa_server::state::Config;
use hisa_tests::{fresh_store, Backend};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_ready_only_after_migrations() {
    let Some((store, _dir)) = fresh_store(Backend::Sqlite).await else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let prep = async move {
        // Hold preparation until the test has seen the "starting" state.
        let _ = go_rx.await;
        prepare(store, Config::default()).await
    };
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_notifying(
        listener,
        Config::default(),
        prep,
        async move {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "starting"
    );
    let r = client
        .get(format!("{base}/api/me"))
        .basic_auth("admin", Some("district"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);

    go_tx.send(()).unwrap();
    // The server says when it serves; from then on health is green.
    ready_rx.await.expect("the server became ready");
    let r = client
        .get(format!("{base}/api/health"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "ready means healthy");
    // Ready, and the default category objects exist.
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(client
        .get(format!("{base}/api/health"))
        .send()
        .await
        .is_err());
}

/// A new, empty installation can be signed into as DHIS2's first superuser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_gets_a_first_admin() {
    let Some(server) = hisa_tests::TestServer::start(Backend::Sqlite).await else {
        return;
    };
    assert!(hisa_server::server::ensure_first_admin(&server.services)
        .await
        .unwrap());
    let (status, me) = server.get_as("admin", "district", "/api/me").await;
    assert_eq!(status, 200);
    assert!(me["authorities"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("ALL")));
    // Only once: a database with users is left alone.
    assert!(!hisa_server::server::ensure_first_admin(&server.services)
        .await
        .unwrap());
    server.stop().await;
}
