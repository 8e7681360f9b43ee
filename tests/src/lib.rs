//! The end-to-end harness: start the real server on 127.0.0.1:0 over a fresh
//! database (a temporary SQLite file, or a new PostgreSQL schema), wait for
//! `/api/health` to say ready, and hand out HTTP clients.
//!
//! PostgreSQL comes from `HISA_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Where it is unreachable the
//! PostgreSQL tests are skipped with a message, except under `CI=true`,
//! where they fail: CI must never pass without the PostgreSQL suite.

pub mod proxy;

use std::str::FromStr;
use std::sync::Arc;

use hisa_server::demo::DemoOptions;
use hisa_server::seed::seed_demo;
use hisa_server::server::{prepare, serve_notifying};
use hisa_server::state::{Config, Services};
use hisa_server::store::{PgStore, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("HISA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// How to open a test's database again (a server restart).
#[derive(Debug, Clone)]
enum Reopen {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Reopen {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Reopen::Sqlite(path) => Arc::new(
                SqliteStore::open(path.to_str().expect("utf-8 path"))
                    .await
                    .expect("reopen sqlite"),
            ),
            Reopen::Postgres(schema) => {
                let options = PgConnectOptions::from_str(&pg_url())
                    .expect("pg url")
                    .options([("search_path", schema.as_str())]);
                Arc::new(PgStore::connect_with(options).await.expect("reconnect pg"))
            }
        }
    }
}

/// A fresh, empty database of the given kind. `None` means PostgreSQL is
/// unreachable outside CI: the caller skips.
pub async fn fresh_store(backend: Backend) -> Option<(Arc<dyn Store>, Option<tempfile::TempDir>)> {
    fresh(backend).await.map(|(store, dir, _)| (store, dir))
}

async fn fresh(backend: Backend) -> Option<(Arc<dyn Store>, Option<tempfile::TempDir>, Reopen)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("hisa.db");
            let store = SqliteStore::open(path.to_str().expect("utf-8 path"))
                .await
                .expect("open sqlite");
            Some((Arc::new(store), Some(dir), Reopen::Sqlite(path)))
        }
        Backend::Postgres => {
            let url = pg_url();
            let mut conn = match sqlx::PgConnection::connect(&url).await {
                Ok(c) => c,
                Err(e) if !in_ci() => {
                    eprintln!("skipping PostgreSQL test: {url} unreachable ({e}); CI=true makes this a failure");
                    return None;
                }
                Err(e) => panic!("CI=true and PostgreSQL at {url} is unreachable: {e}"),
            };
            // Each test gets its own schema: tests run in parallel on one database.
            let schema = format!("hisa_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create schema");
            let options = PgConnectOptions::from_str(&url)
                .expect("pg url")
                .options([("search_path", schema.as_str())]);
            let store = PgStore::connect_with(options).await.expect("connect pg");
            Some((Arc::new(store), None, Reopen::Postgres(schema)))
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub services: Services,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    reopen: Reopen,
    config: Config,
}

#[derive(Default)]
pub struct StartOptions {
    pub config: Config,
    /// Seed a demo country of this many facilities.
    pub demo_facilities: Option<usize>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, StartOptions::default()).await
    }

    pub async fn start_with(backend: Backend, options: StartOptions) -> Option<TestServer> {
        let (store, dir, reopen) = fresh(backend).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Some(Self::launch(store, dir, reopen, listener, options).await)
    }

    /// Stop the server and start it again on the same database and address,
    /// as a process restart would (a new store connection, a new snapshot).
    pub async fn restart(mut self) -> TestServer {
        let addr = self.address();
        let dir = self._dir.take();
        let reopen = self.reopen.clone();
        let config = self.config.clone();
        self.stop().await;
        let store = reopen.open().await;
        // The old listener is closed (`stop` awaited the server); SO_REUSEADDR
        // lets the port be bound again while its old connections linger.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("rebind the same address");
        let listener = socket.listen(1024).expect("listen");
        let options = StartOptions {
            config,
            demo_facilities: None,
        };
        Self::launch(store, dir, reopen, listener, options).await
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("server address")
    }

    async fn launch(
        store: Arc<dyn Store>,
        dir: Option<tempfile::TempDir>,
        reopen: Reopen,
        listener: TcpListener,
        options: StartOptions,
    ) -> TestServer {
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Services>();
        let (serving_tx, serving_rx) = oneshot::channel::<()>();
        let config = options.config.clone();
        let options_config = options.config.clone();
        let demo = options.demo_facilities;
        let prep = async move {
            let services = prepare(store, config).await?;
            if let Some(facilities) = demo {
                seed_demo(
                    &services,
                    DemoOptions {
                        facilities,
                        end_period: (2026, 10),
                        seed: 7,
                    },
                    None,
                )
                .await?;
            }
            let _ = ready_tx.send(services.clone());
            Ok(services)
        };
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) =
                serve_notifying(listener, options.config, prep, shutdown, Some(serving_tx)).await
            {
                eprintln!("test server failed: {e}");
            }
        });
        let base = format!("http://{addr}");
        let services = ready_rx.await.expect("server failed to prepare");
        let server = TestServer {
            base,
            services,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
            reopen,
            config: options_config,
        };
        // Every route is served from the moment the server says so.
        serving_rx.await.expect("server never became ready");
        server
    }

    /// A second instance over the same PostgreSQL schema, on an address of
    /// its own, as a national deployment runs several behind a balancer;
    /// `None` on SQLite (one writing process per file).
    pub async fn beside(&self) -> Option<TestServer> {
        let Reopen::Postgres(_) = &self.reopen else {
            return None;
        };
        let store = self.reopen.open().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let options = StartOptions {
            config: self.config.clone(),
            demo_facilities: None,
        };
        Some(Self::launch(store, None, self.reopen.clone(), listener, options).await)
    }

    /// A connection of its own to the server's PostgreSQL schema, for a
    /// test that plays another instance over the same database; `None` on
    /// SQLite.
    pub async fn pg_connection(&self) -> Option<sqlx::PgConnection> {
        let Reopen::Postgres(schema) = &self.reopen else {
            return None;
        };
        let options = PgConnectOptions::from_str(&pg_url())
            .expect("pg url")
            .options([("search_path", schema.as_str())]);
        Some(
            sqlx::PgConnection::connect_with(&options)
                .await
                .expect("connect pg"),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn get_as(&self, user: &str, password: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client()
            .get(self.url(path))
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    pub async fn post_json_as(
        &self,
        user: &str,
        password: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client()
            .post(self.url(path))
            .basic_auth(user, Some(password))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Run one async test body against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A real DHIS2 metadata package kept in `tests/data/dhis2-packages`.
pub fn dhis2_package(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let path = root
        .join("tests")
        .join("data")
        .join("dhis2-packages")
        .join(name);
    assert!(path.exists(), "DHIS2 package {name} is missing: {path:?}");
    path
}
