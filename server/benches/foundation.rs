//! Foundation benchmark: the demo country at national scale.
//!
//! Measures, in one run, each step against a baseline that any
//! implementation must pay, and prints the ratio:
//! - metadata import (all checks, derivations, one transaction, snapshot
//!   reload) against reading the same payload as JSON;
//! - seeding data values (id resolution, batched upserts) against only
//!   generating them.
//!
//! Peak resident memory (VmHWM) is printed after each step.
//!
//! `cargo bench -p hisa-server --bench foundation` (15,000 facilities;
//! `HISA_BENCH_FACILITIES=N` to change; `HISA_BENCH_DATABASE_URL=postgres://…`
//! to run against PostgreSQL instead of a temporary SQLite file).

use std::time::Instant;

use hisa_server::demo::{generate, DemoOptions};
use hisa_server::metadata::import::ImportParams;
use hisa_server::seed::seed_demo;
use hisa_server::server::prepare;
use hisa_server::state::Config;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let facilities: usize = std::env::var("HISA_BENCH_FACILITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    let options = DemoOptions {
        facilities,
        end_period: (2026, 10),
        seed: 2026,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = std::env::var("HISA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| dir.path().join("bench.db").display().to_string());
    let backend = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("foundation benchmark: {facilities} facilities on {backend}");

    // Generation.
    let t = Instant::now();
    let mut country = generate(&options);
    let gen_metadata = t.elapsed();
    let objects: usize = country
        .metadata
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_array()).map(Vec::len).sum())
        .unwrap_or(0);
    println!(
        "generate metadata: {objects} objects in {:.2?} (peak RSS {:.0} MiB)",
        gen_metadata,
        peak_rss_mib()
    );

    // Baseline for import: read the payload as JSON.
    let bytes = serde_json::to_vec(&country.metadata).expect("serialize");
    let metadata = std::mem::take(&mut country.metadata);
    let t = Instant::now();
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
    let baseline_import = t.elapsed();
    drop(parsed);

    let store = hisa_server::store::open(&url).await.expect("open store");
    let services = prepare(store, Config::default()).await.expect("prepare");
    let t = Instant::now();
    let report = services
        .metadata
        .import(metadata, ImportParams::default())
        .await
        .expect("import");
    let import = t.elapsed();
    assert!(!report.has_errors(), "import failed");
    println!(
        "metadata import: {} objects ({:.1} MiB JSON) in {:.2?}; JSON parse baseline {:.2?}; ratio {:.1}x (peak RSS {:.0} MiB)",
        report.stats.total,
        bytes.len() as f64 / 1048576.0,
        import,
        baseline_import,
        import.as_secs_f64() / baseline_import.as_secs_f64(),
        peak_rss_mib()
    );

    // Baseline for seeding: only generating the values.
    let t = Instant::now();
    let mut generated = 0u64;
    country.for_each_data_value(|_| generated += 1);
    let baseline_seed = t.elapsed();

    // The seed refuses a database with org units, so seed a second, fresh one.
    let dir2 = tempfile::tempdir().expect("temp dir");
    let url2 = if url.starts_with("postgres") {
        url.clone()
    } else {
        dir2.path().join("seed.db").display().to_string()
    };
    if url2 == url && url.starts_with("postgres") {
        println!("(PostgreSQL: seeding skipped, the database already holds the imported country; run again on an empty database)");
        return;
    }
    let store = hisa_server::store::open(&url2).await.expect("open store");
    let services = prepare(store, Config::default()).await.expect("prepare");
    let t = Instant::now();
    let seeded = seed_demo(&services, options, None)
        .await
        .expect("seed")
        .expect("empty database");
    let seed = t.elapsed();
    println!(
        "seed-demo: {} values, {} completions, {} events in {:.2?} ({:.0} values/s); generation-only baseline {:.2?} for {generated} values; ratio {:.1}x (peak RSS {:.0} MiB)",
        seeded.data_values,
        seeded.completions,
        seeded.events,
        seed,
        seeded.data_values as f64 / seed.as_secs_f64(),
        baseline_seed,
        seed.as_secs_f64() / baseline_seed.as_secs_f64(),
        peak_rss_mib()
    );
}
