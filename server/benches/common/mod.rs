//! What the HTTP benchmarks share: a store on either database, the real
//! server on `127.0.0.1:0` with the demo country seeded, and its shutdown.
//! Included by each bench with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hisa_server::demo::DemoOptions;
use hisa_server::seed::seed_demo;
use hisa_server::server::{prepare, serve_notifying};
use hisa_server::state::{Config, Services};
pub use hisa_server::store::Backend;
use hisa_server::store::{PgStore, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A store and what must outlive it or be cleaned up after it.
pub struct BenchStore {
    pub store: Arc<dyn Store>,
    /// The SQLite file's path, for benches that also open it directly.
    pub sqlite_path: Option<String>,
    /// The PostgreSQL schema, for benches that also connect to it.
    pub pg_schema: Option<String>,
    dir: Option<tempfile::TempDir>,
    /// A schema made for this run, dropped at the end.
    drop_schema: Option<String>,
}

/// SQLite: `keep_file` or a temporary file. PostgreSQL: the schema
/// `keep_schema` (made if missing, kept), or a fresh one dropped at the end.
pub async fn bench_store(
    backend: Backend,
    pg_url: &str,
    keep_file: Option<String>,
    keep_schema: Option<String>,
) -> BenchStore {
    match backend {
        Backend::Sqlite => {
            let (dir, path) = match keep_file {
                Some(path) => (None, path),
                None => {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let path = dir.path().join("bench.db");
                    let path = path.to_str().expect("utf-8 path").to_string();
                    (Some(dir), path)
                }
            };
            let store = SqliteStore::open(&path).await.expect("open SQLite");
            BenchStore {
                store: Arc::new(store),
                sqlite_path: Some(path),
                pg_schema: None,
                dir,
                drop_schema: None,
            }
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(pg_url)
                .await
                .expect("connect PostgreSQL");
            let schema = keep_schema
                .clone()
                .unwrap_or_else(|| format!("hisa_bench_{}", uuid::Uuid::new_v4().simple()));
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut conn)
                .await
                .expect("create schema");
            conn.close().await.expect("close");
            let options = PgConnectOptions::from_str(pg_url)
                .expect("PostgreSQL url")
                .options([("search_path", schema.as_str())]);
            let store = PgStore::connect_with(options)
                .await
                .expect("connect PostgreSQL store");
            BenchStore {
                store: Arc::new(store),
                sqlite_path: None,
                drop_schema: keep_schema.is_none().then(|| schema.clone()),
                pg_schema: Some(schema),
                dir: None,
            }
        }
    }
}

pub struct Running {
    pub base: String,
    pub services: Services,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    store: BenchStore,
}

/// Serve on 127.0.0.1:0 as `hisa-server` does, seeding the demo (when the
/// store is empty) while `/api/health` already answers; returns once the
/// server says it serves every route.
pub async fn start_demo(store: BenchStore, facilities: usize, end_period: (i32, u8)) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (seeded_tx, seeded_rx) = oneshot::channel();
    let (served_tx, served_rx) = oneshot::channel();
    let shared = store.store.clone();
    let prep = async move {
        let services = prepare(shared, Config::default()).await?;
        let t = Instant::now();
        let options = DemoOptions {
            facilities,
            end_period,
            seed: 7,
        };
        let report = seed_demo(&services, options, None).await?;
        let _ = seeded_tx.send((services.clone(), report, t.elapsed()));
        Ok(services)
    };
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        let served = serve_notifying(listener, Config::default(), prep, shutdown, Some(served_tx));
        if let Err(e) = served.await {
            eprintln!("bench server failed: {e}");
        }
    });
    let (services, report, took) = seeded_rx.await.expect("server failed to prepare");
    if let Some(r) = report {
        println!(
            "setup: demo seeded in {:.1} s ({} facilities, {} values, {} completions, {} events)",
            took.as_secs_f64(),
            facilities,
            r.data_values,
            r.completions,
            r.events
        );
    }
    served_rx.await.expect("the server never served");
    Running {
        base,
        services,
        shutdown: Some(stop_tx),
        task,
        store,
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn store(&self) -> &BenchStore {
        &self.store
    }

    /// Stop gracefully; drop the PostgreSQL schema made for this run.
    pub async fn stop(mut self, pg_url: &str) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
        drop(self.services);
        drop(self.store.store);
        drop(self.store.dir);
        if let Some(schema) = self.store.drop_schema.take() {
            if let Ok(mut conn) = sqlx::PgConnection::connect(pg_url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}
