//! Analytics benchmark: live aggregates on the demo country at national
//! scale (15,000 facilities and 24 months by default;
//! `HISA_BENCH_FACILITIES=N` to change), over HTTP as a client sees them.
//!
//! 1. One data element (confirmed malaria cases) × 12 months × all districts
//!    (`ou:LEVEL-3`): the first query (reads the element into the cube) and
//!    the p50/p95 of 15 more. Baseline in the same run: a plain `GROUP BY`
//!    over the raw values of the same element, months and districts, on the
//!    same database. Targets: p50 < 250 ms and ≥ 10× faster than the
//!    baseline.
//! 2. An indicator with a population denominator (Penta 3 coverage, yearly
//!    surviving infants, annualised), same shape. Target: p50 < 400 ms.
//! 3. All validation rules for one month over the whole country
//!    (`POST /api/dataAnalysis/validationRules`). Target: < 10 s. Baseline:
//!    reading that month's raw values once.
//! 4. Live: a value imported (`POST /api/dataValueSets`), then the district
//!    query repeated until the district total shows it. Target: < 5 s.
//!    Baseline: the import request itself.
//! 5. The same on PostgreSQL (a fresh schema, dropped at the end) when
//!    `HISA_BENCH_DATABASE_URL=postgres://…` is set
//!    (`HISA_BENCH_PG_FACILITIES` sizes it; default as for SQLite).
//!
//! Targets are printed next to the figures, never asserted. What is
//! asserted: the analytics answer equals the baseline's numbers, so a fast
//! wrong answer cannot pass.
//!
//! `HISA_BENCH_SQLITE_FILE=path` keeps the seeded SQLite country there and
//! reuses it on the next run (seeding 15,000 facilities takes minutes);
//! `HISA_BENCH_PG_SCHEMA=name` does the same in a PostgreSQL schema.
//!
//! `cargo bench -p hisa-server --bench analytics`

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{bench_store, start_demo, Backend, Running};
use serde_json::{json, Value};
use sqlx::{Connection, Row};

const LAST_MONTH: (i32, u8) = (2026, 10);
const RUNS: usize = 15;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A plain connection to the same database, for the baselines.
enum Raw {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// The demo server and a raw connection to its database.
struct Bench {
    server: Running,
    raw: Raw,
}

async fn start(backend: Backend, pg_url: &str, facilities: usize) -> Bench {
    // HISA_BENCH_SQLITE_FILE / HISA_BENCH_PG_SCHEMA keep the seeded country.
    let store = bench_store(
        backend,
        pg_url,
        std::env::var("HISA_BENCH_SQLITE_FILE").ok(),
        std::env::var("HISA_BENCH_PG_SCHEMA").ok(),
    )
    .await;
    let raw = match (&store.sqlite_path, &store.pg_schema) {
        (Some(path), _) => Raw::Sqlite(
            sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .expect("raw SQLite"),
        ),
        (None, Some(schema)) => {
            let mut conn = sqlx::PgConnection::connect(pg_url)
                .await
                .expect("raw PostgreSQL");
            sqlx::query(&format!("SET search_path TO {schema}"))
                .execute(&mut conn)
                .await
                .expect("search path");
            Raw::Postgres(conn)
        }
        (None, None) => unreachable!("a store is on one database"),
    };
    let server = start_demo(store, facilities, LAST_MONTH).await;
    Bench { server, raw }
}

impl Bench {
    async fn get(&self, client: &reqwest::Client, path: &str) -> (Duration, Value) {
        let t = Instant::now();
        let res = client
            .get(self.server.url(path))
            .basic_auth("admin", Some("district"))
            .send()
            .await
            .expect("request");
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        let took = t.elapsed();
        assert!(status.is_success(), "{path}: {status} {body}");
        (took, body)
    }
}

/// Rows of a grid as (pe, ou) → value.
fn grid(body: &Value) -> BTreeMap<(String, String), f64> {
    body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                (
                    r[1].as_str().unwrap_or_default().to_string(),
                    r[2].as_str().unwrap_or_default().to_string(),
                ),
                r[3].as_str()
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(f64::NAN),
            )
        })
        .collect()
}

async fn baseline_group_by(
    raw: &mut Raw,
    element: i64,
    months: &[String],
    district_level_path_len: i64,
) -> (Duration, BTreeMap<(String, String), f64>) {
    let list = months
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // The straightforward query a reporting tool would run: join the raw
    // values to their periods and units, group by district and month.
    let sql = format!(
        "SELECT substr(o.path, {start}, 11) AS district, p.iso AS iso, \
         SUM(CAST(d.value AS {real})) AS total \
         FROM data_value d JOIN period p ON p.id = d.period_id \
         JOIN organisation_unit o ON o.object_id = d.org_unit_id \
         WHERE d.data_element_id = {element} AND d.deleted = FALSE AND p.iso IN ({list}) \
         AND length(o.path) >= {len} \
         GROUP BY substr(o.path, {start}, 11), p.iso",
        start = district_level_path_len - 10,
        len = district_level_path_len,
        real = match raw {
            Raw::Sqlite(_) => "REAL",
            Raw::Postgres(_) => "DOUBLE PRECISION",
        },
    );
    // One body for both databases' row types.
    macro_rules! totals {
        ($conn:expr) => {
            sqlx::query(&sql)
                .fetch_all(&mut *$conn)
                .await
                .expect("baseline")
                .into_iter()
                .map(|r| {
                    (
                        (r.get::<String, _>("iso"), r.get::<String, _>("district")),
                        r.get::<f64, _>("total"),
                    )
                })
                .collect()
        };
    }
    let t = Instant::now();
    let rows = match raw {
        Raw::Sqlite(c) => totals!(c),
        Raw::Postgres(c) => totals!(c),
    };
    (t.elapsed(), rows)
}

async fn raw_month_read(raw: &mut Raw, month: &str, elements: &[i64]) -> (Duration, usize) {
    let list = elements
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT d.org_unit_id, d.data_element_id, d.category_option_combo_id, d.value \
         FROM data_value d WHERE d.data_element_id IN ({list}) \
         AND d.period_id = (SELECT id FROM period WHERE iso = '{month}') AND d.deleted = FALSE"
    );
    let t = Instant::now();
    let n = match raw {
        Raw::Sqlite(c) => sqlx::query(&sql)
            .fetch_all(&mut *c)
            .await
            .expect("read")
            .len(),
        Raw::Postgres(c) => sqlx::query(&sql)
            .fetch_all(&mut *c)
            .await
            .expect("read")
            .len(),
    };
    (t.elapsed(), n)
}

async fn run(backend: Backend, pg_url: &str, facilities: usize) {
    println!("\n== {} ({facilities} facilities) ==", backend.name());
    let mut bench = start(backend, pg_url, facilities).await;
    let client = reqwest::Client::new();
    let snap = bench
        .server
        .services
        .metadata
        .snapshot()
        .await
        .expect("snapshot");
    let element = snap
        .uid_by_code("dataElements", "MAL_CONFIRMED")
        .expect("malaria cases")
        .to_string();
    let element_id = snap.get(&element).expect("element").id;
    let indicator = snap
        .uid_by_code("indicators", "IN_EPI_PENTA3_COV")
        .expect("Penta 3 coverage")
        .to_string();
    let months: Vec<String> = (0..12)
        .map(|back| {
            let k = LAST_MONTH.0 * 12 + LAST_MONTH.1 as i32 - 1 - back;
            format!("{}{:02}", k.div_euclid(12), k.rem_euclid(12) + 1)
        })
        .rev()
        .collect();
    let districts = snap.org_units().filter(|(_, n)| n.level == 3).count();
    let district_path_len = 3 * 12;
    let pe = months.join(";");
    let de_query = format!("/api/analytics?dimension=dx:{element}&dimension=pe:{pe}&dimension=ou:LEVEL-3&skipMeta=true&skipRounding=true");
    let in_query = format!("/api/analytics?dimension=dx:{indicator}&dimension=pe:{pe}&dimension=ou:LEVEL-3&skipMeta=true");
    let rss0 = rss_mb();

    // 1. One data element × 12 months × all districts. The baseline runs
    // first once, so neither gets the other's warm caches for free.
    let (base_cold, _) =
        baseline_group_by(&mut bench.raw, element_id, &months, district_path_len).await;
    let (cold, first) = bench.get(&client, &de_query).await;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        times.push(ms(bench.get(&client, &de_query).await.0));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mut base = Vec::new();
    let mut base_rows = BTreeMap::new();
    for _ in 0..5 {
        let (t, rows) =
            baseline_group_by(&mut bench.raw, element_id, &months, district_path_len).await;
        base.push(ms(t));
        base_rows = rows;
    }
    base.sort_by(|a, b| a.total_cmp(b));
    let ours = grid(&first);
    assert_eq!(
        ours.len(),
        base_rows.len(),
        "cells differ from the baseline"
    );
    for (k, v) in &base_rows {
        let got = ours.get(k).copied().unwrap_or(f64::NAN);
        assert!(
            (got - v).abs() < 1e-6,
            "{k:?}: analytics {got}, GROUP BY {v}"
        );
    }
    let (p50, p95, b50) = (pct(&times, 0.5), pct(&times, 0.95), pct(&base, 0.5));
    println!(
        "data element x 12 months x {districts} districts: {} cells; first query {:.0} ms (loads the element); p50 {p50:.1} ms, p95 {p95:.1} ms",
        ours.len(),
        ms(cold)
    );
    println!(
        "  baseline GROUP BY over raw values: first {:.0} ms, p50 {b50:.1} ms; speed-up {:.1}x (target >= 10x: {}); p50 < 250 ms: {}",
        ms(base_cold),
        b50 / p50,
        verdict(b50 / p50 >= 10.0),
        verdict(p50 < 250.0)
    );
    println!(
        "  cube: {} cells held; process RSS {:.0} MB (was {rss0:.0} MB before the first query)",
        bench.server.services.analytics.cells(),
        rss_mb()
    );

    // 2. Indicator with a population denominator.
    let (cold, body) = bench.get(&client, &in_query).await;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        times.push(ms(bench.get(&client, &in_query).await.0));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p50 = pct(&times, 0.5);
    println!(
        "indicator (Penta 3 coverage, population denominator) x 12 months x {districts} districts: {} cells; first {:.0} ms; p50 {p50:.1} ms, p95 {:.1} ms; p50 < 400 ms: {}",
        body["rows"].as_array().map_or(0, Vec::len),
        ms(cold),
        pct(&times, 0.95),
        verdict(p50 < 400.0)
    );

    // 3. Validation rules, one month, whole country.
    let root = snap
        .org_units()
        .find(|(_, n)| n.parent.is_none())
        .map(|(u, _)| u.clone())
        .expect("root");
    let month = months.last().expect("month").clone();
    let start = format!("{}-{}-01", &month[..4], &month[4..]);
    let end = hisa_shared::period::Period::parse(&month)
        .expect("month")
        .end_date()
        .to_string();
    let t = Instant::now();
    let res = client
        .post(bench.server.url("/api/dataAnalysis/validationRules"))
        .basic_auth("admin", Some("district"))
        .json(&json!({"ou": root, "startDate": start, "endDate": end, "maxResults": 100000}))
        .send()
        .await
        .expect("validation");
    let status = res.status();
    let violations: Value = res.json().await.expect("json");
    let took = t.elapsed();
    assert!(status.is_success(), "{status} {violations}");
    let element_ids: Vec<i64> = snap.data_index().elements.values().map(|e| e.id).collect();
    let (raw_t, raw_n) = raw_month_read(&mut bench.raw, &month, &element_ids).await;
    println!(
        "validation rules, {month}, whole country: {:.2} s, {} violations; < 10 s: {}; baseline reading the month's {raw_n} raw values of every element: {:.2} s (ratio {:.1}x)",
        took.as_secs_f64(),
        violations.as_array().map_or(0, Vec::len),
        verdict(took.as_secs_f64() < 10.0),
        raw_t.as_secs_f64(),
        took.as_secs_f64() / raw_t.as_secs_f64().max(1e-9)
    );

    // 4. Live: import one value, then ask until the district shows it.
    let facility = snap
        .org_units()
        .filter(|(_, n)| n.level == 4)
        .map(|(u, n)| (n.path.clone(), u.clone()))
        .min()
        .expect("facility");
    let district = facility.0.split('/').nth(3).expect("district").to_string();
    let before = grid(&bench.get(&client, &de_query).await.1)
        .get(&(month.clone(), district.clone()))
        .copied()
        .unwrap_or(0.0);
    // The element is disaggregated; write to its first option combo.
    let coc = snap
        .data_index()
        .coc_combo
        .iter()
        .filter(|(_, combo)| **combo == snap.data_index().elements[&element].category_combo)
        .map(|(coc, _)| coc.clone())
        .min()
        .expect("option combo");
    let old = bench
        .server
        .services
        .store
        .query_values(&hisa_server::store::ValueQuery {
            data_element_ids: vec![element_id],
            org_unit_ids: vec![snap.org_unit(&facility.1).expect("unit").id],
            period_ids: hisa_server::store::period_filter(
                &*bench.server.services.store,
                std::slice::from_ref(&month),
            )
            .await
            .expect("period"),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("old values")
        .into_iter()
        .find(|v| snap.uid_of(v.key.category_option_combo_id) == Some(coc.as_str()))
        .and_then(|v| v.value)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let body = json!({"dataValues": [{"dataElement": element, "period": month, "orgUnit": facility.1,
        "categoryOptionCombo": coc, "value": format!("{}", old + 1000.0)}]});
    let t = Instant::now();
    let res = client
        .post(bench.server.url("/api/dataValueSets"))
        .basic_auth("admin", Some("district"))
        .json(&body)
        .send()
        .await
        .expect("import");
    let import_took = t.elapsed();
    assert!(res.status().is_success());
    let reply: Value = res.json().await.expect("json");
    assert_eq!(reply["response"]["status"], "SUCCESS", "{reply}");
    let want = before + 1000.0;
    let mut polls = 0;
    let visible = loop {
        polls += 1;
        let (_, b) = bench.get(&client, &de_query).await;
        let now = grid(&b)
            .get(&(month.clone(), district.clone()))
            .copied()
            .unwrap_or(0.0);
        if (now - want).abs() < 1e-6 {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never visible: {now} vs {want}"
        );
    };
    println!(
        "live: imported value visible in the district total {:.0} ms after the import was sent ({polls} queries); < 5 s: {}; baseline the import request alone {:.0} ms",
        ms(visible),
        verdict(visible < Duration::from_secs(5)),
        ms(import_took)
    );
    bench.server.stop(pg_url).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let facilities = env_usize("HISA_BENCH_FACILITIES", 15_000);
    let pg_url = std::env::var("HISA_BENCH_DATABASE_URL").unwrap_or_default();
    runtime.block_on(async {
        run(Backend::Sqlite, &pg_url, facilities).await;
        if !pg_url.is_empty() {
            run(
                Backend::Postgres,
                &pg_url,
                env_usize("HISA_BENCH_PG_FACILITIES", facilities),
            )
            .await;
        }
    });
}
