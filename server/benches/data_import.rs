//! Data import benchmark: one large DHIS2 JSON data value set.
//!
//! Imports the demo country's metadata only, writes all its aggregate data
//! values as ONE data value set file (`{"dataValues":[…]}`), then measures
//! in the same run:
//! - baseline: the streaming JSON parser alone (`input::parse`) over the
//!   file, with a consumer that only counts events;
//! - measured: `import_data` over the same file as the demo's superuser
//!   `admin` with default options (all DHIS2 checks, batched upserts).
//!
//! It prints the ratio import/baseline and the peak resident memory (VmHWM)
//! of each phase next to the body size: the import streams, so memory must
//! stay far below the size of the body.
//!
//! `cargo bench -p hisa-server --bench data_import` (1,500 facilities, about
//! 1,000,000 values; `HISA_BENCH_FACILITIES=N` to change;
//! `HISA_BENCH_DATABASE_URL=postgres://…` to run against PostgreSQL, in a
//! fresh schema, instead of a temporary SQLite file).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hisa_server::auth::Caller;
use hisa_server::data::import::DataImportOptions;
use hisa_server::data::input::{self, Event, Format};
use hisa_server::data::{import_data, ImportRequest};
use hisa_server::demo::{generate, DemoOptions};
use hisa_server::metadata::import::ImportParams;
use hisa_server::server::prepare;
use hisa_server::state::Config;
use hisa_server::store::{PgStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use tokio::sync::mpsc;

/// A `/proc/self/status` figure (`VmHWM:`, `VmRSS:`) in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Reset the peak (VmHWM) to the current RSS, so the next reading is the
/// peak of one phase rather than of the whole process. Linux only; returns
/// whether it worked.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// One value of the bulk form, borrowed, for streaming serialisation.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonValue<'a> {
    data_element: &'a str,
    period: &'a str,
    org_unit: &'a str,
    category_option_combo: &'a str,
    attribute_option_combo: &'a str,
    value: &'a str,
    stored_by: &'a str,
}

/// A fresh, empty store: a temporary SQLite file, or a new schema in the
/// PostgreSQL database at `url`. Returns the schema to drop afterwards.
async fn fresh_store(url: &str, dir: &tempfile::TempDir) -> (Arc<dyn Store>, Option<String>) {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect PostgreSQL");
        let schema = format!("hisa_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        conn.close().await.expect("close");
        let options = PgConnectOptions::from_str(url)
            .expect("PostgreSQL url")
            .options([("search_path", schema.as_str())]);
        let store = PgStore::connect_with(options)
            .await
            .expect("connect PostgreSQL store");
        (Arc::new(store), Some(schema))
    } else {
        let path = if url.is_empty() {
            dir.path().join("bench.db").display().to_string()
        } else {
            url.to_string()
        };
        let store = hisa_server::store::open(&path).await.expect("open store");
        (store, None)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let facilities: usize = std::env::var("HISA_BENCH_FACILITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let options = DemoOptions {
        facilities,
        end_period: (2026, 10),
        seed: 2026,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = std::env::var("HISA_BENCH_DATABASE_URL").unwrap_or_default();
    let backend = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("data import benchmark: {facilities} facilities on {backend}");

    // Metadata only: the values come in through the data import.
    let mut country = generate(&options);
    let (store, schema) = fresh_store(&url, &dir).await;
    let services = prepare(store, Config::default()).await.expect("prepare");
    let t = Instant::now();
    let report = services
        .metadata
        .import(
            std::mem::take(&mut country.metadata),
            ImportParams::default(),
        )
        .await
        .expect("metadata import");
    assert!(!report.has_errors(), "metadata import failed");
    println!(
        "setup: metadata import of {} objects in {:.2?}",
        report.stats.total,
        t.elapsed()
    );

    // The body: one data value set, streamed to a file.
    let path = dir.path().join("values.json");
    let t = Instant::now();
    let mut count = 0u64;
    {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path).expect("create file"));
        w.write_all(b"{\"dataValues\":[").expect("write");
        let mut error = None;
        country.for_each_data_value(|v| {
            if error.is_some() {
                return;
            }
            let result = (|| {
                if count > 0 {
                    w.write_all(b",")?;
                }
                serde_json::to_writer(
                    &mut w,
                    &JsonValue {
                        data_element: &v.data_element,
                        period: &v.period,
                        org_unit: &v.org_unit,
                        category_option_combo: &v.category_option_combo,
                        attribute_option_combo: &v.attribute_option_combo,
                        value: &v.value,
                        stored_by: &v.stored_by,
                    },
                )?;
                Ok::<(), std::io::Error>(())
            })();
            match result {
                Ok(()) => count += 1,
                Err(e) => error = Some(e),
            }
        });
        if let Some(e) = error {
            panic!("write data value set: {e}");
        }
        w.write_all(b"]}").expect("write");
        w.flush().expect("flush");
    }
    drop(country);
    let size = std::fs::metadata(&path).expect("file size").len();
    println!(
        "setup: wrote {count} values ({:.1} MiB JSON) in {:.2?}",
        mib(size),
        t.elapsed()
    );

    // Baseline: the streaming parser alone, drained by a counting consumer.
    let reset = reset_peak_rss();
    let rss_before_baseline = rss_mib();
    let t = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let file = File::open(&path).expect("open file");
    let parser =
        tokio::task::spawn_blocking(move || input::parse(Format::Json, file, false, None, tx));
    let mut parsed = 0u64;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Header(_) => {}
            Event::Value(_) => parsed += 1,
            Event::Malformed(m) => panic!("baseline parse failed: {m}"),
        }
    }
    parser.await.expect("parser thread");
    let baseline = t.elapsed();
    let peak_baseline = peak_rss_mib();
    assert_eq!(parsed, count, "the parser must see every value");

    // Measured: the full import as the demo's superuser.
    let snapshot = services.metadata.snapshot().await.expect("snapshot");
    let admin = snapshot
        .user_uid_by_username("admin")
        .expect("demo user admin")
        .to_string();
    let caller = Caller::from_user(&snapshot, &admin).expect("admin caller");
    drop(snapshot);
    reset_peak_rss();
    let rss_before_import = rss_mib();
    let t = Instant::now();
    let summary = import_data(
        &services,
        caller,
        ImportRequest {
            format: Format::Json,
            options: DataImportOptions::default(),
            csv_header_row: false,
            data_set: None,
        },
        File::open(&path).expect("open file"),
    )
    .await
    .expect("data import");
    let import = t.elapsed();
    let peak_import = peak_rss_mib();
    let c = &summary.import_count;
    assert!(
        summary.conflicts.is_empty(),
        "import had conflicts: {:?}",
        &summary.conflicts[..summary.conflicts.len().min(5)]
    );
    assert_eq!(
        (c.imported, c.updated, c.ignored, c.deleted),
        (count, 0, 0, 0),
        "every value must be imported"
    );

    let phase = if reset {
        "peak RSS of the phase"
    } else {
        "peak RSS of the process (could not reset VmHWM)"
    };
    println!(
        "baseline: parse {parsed} values in {:.2?} ({:.0} values/s); RSS at start {:.0} MiB, {phase} {:.0} MiB",
        baseline,
        parsed as f64 / secs(baseline),
        rss_before_baseline,
        peak_baseline
    );
    println!(
        "import: {} values imported in {:.2?} ({:.0} values/s); RSS at start {:.0} MiB, {phase} {:.0} MiB",
        c.imported,
        import,
        c.imported as f64 / secs(import),
        rss_before_import,
        peak_import
    );
    println!(
        "data import: {count} values, body {:.1} MiB; import {:.2?} vs parse baseline {:.2?}; ratio {:.1}x; peak RSS {:.0} MiB (baseline {:.0} MiB) for a {:.1} MiB body",
        mib(size),
        import,
        baseline,
        secs(import) / secs(baseline),
        peak_import,
        peak_baseline,
        mib(size)
    );

    drop(services);
    if let Some(schema) = schema {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
}
