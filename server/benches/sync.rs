//! Device sync benchmark: bytes on the wire and 1,000 phones at once.
//!
//! Starts the real server in-process on `127.0.0.1:0` over a fresh store
//! seeded with the demo country (1,000 facilities; `HISA_BENCH_FACILITIES=N`
//! to change), then measures over HTTP, as a phone would see it:
//!
//! 1. Bytes on the wire: the first metadata sync of a demo health worker
//!    (`GET /api/sync/v1/metadata`, `Accept-Encoding: gzip`; the gzipped body
//!    as read off the socket by a client that does not decompress, and the
//!    JSON inside), and one 40-value monthly form sent up in one round trip
//!    (`POST /api/sync/v1/data`, the `UploadRequest` serialised as the app
//!    does, gzipped, `Content-Encoding: gzip`). Targets: metadata ≤ 50 KB,
//!    form ≤ 1 KB up.
//! 2. 1,000 devices (`HISA_BENCH_DEVICES`), enrolled over `POST /api/devices`
//!    for the demo's health workers and facility reporters, each sending one
//!    40-value form for its user's facility and its own month, all fired at
//!    once. Baseline in the same run: the same forms (other values, so they
//!    are written again) as 1,000 concurrent DHIS2 `POST /api/dataValueSets`
//!    as the superuser `admin` (Basic auth, its cache warmed first). Prints
//!    submissions/s and p50/p95/p99/max latency of both and the ratios.
//!    Targets: ≥ 500 submissions/s, p99 < 300 ms. `HISA_BENCH_IN_FLIGHT=N`
//!    caps the requests in flight (1: one request's service time). Then
//!    the same devices send their form again (other values) paced at
//!    500/s, one every 2 ms whatever the others are doing, and the
//!    baseline at the same pace: p99 at the target rate offered.
//! 3. The same on PostgreSQL (a fresh schema, dropped at the end) when
//!    `HISA_BENCH_DATABASE_URL=postgres://…` is set.
//!
//! The targets are printed next to the figures, never asserted. What the
//! bench does assert: every form it sends is accepted, so a rejected form
//! cannot pass for a fast one (rejections are printed first).
//!
//! The demo's own monthly data sets close a month 45 days after it ends,
//! and the bench's 1,000 forms go a year back (one month per device of an
//! account), so the bench adds one data set of its own (after
//! measuring the metadata package): "Integrated monthly report (bench)", every
//! element of the three monthly data sets with malaria deaths by age and sex
//! (exactly 40 fields), no expiry, assigned where the malaria data set is.
//!
//! `cargo bench -p hisa-server --bench sync`

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Running};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use futures::StreamExt;
use hisa_server::metadata::import::ImportParams;
use hisa_server::state::Services;
use hisa_shared::sync::{
    authorization, FormSubmission, FormValue, MetadataPackage, Submission, SubmissionBody,
    UploadRequest, UploadResponse,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

const BENCH_DATA_SET: &str = "BnchMonth40";
const FORM_FIELDS: usize = 40;
const METADATA_TARGET: usize = 50 * 1024;
const UPLOAD_TARGET: usize = 1024;
const THROUGHPUT_TARGET: f64 = 500.0;
const P99_TARGET_MS: f64 = 300.0;
/// The demo's last month with data; forms go to it and the months before.
const LAST_MONTH: (i32, u8) = (2026, 10);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Gzip as the app does (`hisa_app::sync::SyncClient::upload`: best compression).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).expect("gunzip");
    out
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format time")
}

/// The ISO month `back` months before `LAST_MONTH`.
fn month_back(back: usize) -> String {
    let k = LAST_MONTH.0 * 12 + LAST_MONTH.1 as i32 - 1 - back as i32;
    format!("{}{:02}", k.div_euclid(12), k.rem_euclid(12) + 1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn kb(bytes: usize) -> String {
    format!("{:.1} KB", bytes as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ------------------------------------------------------------------------------------------------
// The server
// ------------------------------------------------------------------------------------------------

/// A fresh store (a temporary SQLite file or a new PostgreSQL schema) with
/// the demo seeded, served on 127.0.0.1:0.
async fn start(backend: Backend, pg_url: &str, facilities: usize) -> Running {
    let store = common::bench_store(backend, pg_url, None, None).await;
    common::start_demo(store, facilities, LAST_MONTH).await
}

// ------------------------------------------------------------------------------------------------
// Users, devices, forms
// ------------------------------------------------------------------------------------------------

/// A demo account that enrols phones, with its one facility.
#[derive(Clone)]
struct Account {
    username: String,
    password: &'static str,
    facility: String,
}

/// The demo's health workers (`chw.*`) and facility reporters (`fac.*`),
/// health workers first, each sorted by name.
async fn accounts(services: &Services) -> Vec<Account> {
    let snap = services.metadata.snapshot().await.expect("snapshot");
    let mut out: Vec<Account> = snap
        .all_of("users")
        .filter_map(|u| {
            let username = u.get("username")?.as_str()?.to_string();
            let password = if username.starts_with("chw.") {
                "Worker123!"
            } else if username.starts_with("fac.") {
                "Reporter123!"
            } else {
                return None;
            };
            let facility = u.pointer("/organisationUnits/0/id")?.as_str()?.to_string();
            Some(Account {
                username,
                password,
                facility,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (!a.username.starts_with("chw."), &a.username)
            .cmp(&(!b.username.starts_with("chw."), &b.username))
    });
    out
}

#[derive(Clone)]
struct Device {
    uid: String,
    secret: String,
}

impl Device {
    fn authorization(&self) -> String {
        authorization(&self.uid, &self.secret)
    }
}

async fn enrol(client: &reqwest::Client, base: &str, account: &Account, n: usize) -> Device {
    let r = client
        .post(format!("{base}/api/devices"))
        .basic_auth(&account.username, Some(account.password))
        .json(&json!({"name": format!("Bench phone {n}"), "model": "Bench", "appVersion": "0.1.0"}))
        .send()
        .await
        .expect("enrol request");
    let status = r.status();
    let body: Value = r.json().await.expect("enrolment JSON");
    assert!(
        status.is_success(),
        "enrolment of {} failed: {status} {body}",
        account.username
    );
    Device {
        uid: body["device"].as_str().expect("device id").to_string(),
        secret: body["secret"].as_str().expect("device secret").to_string(),
    }
}

/// Add the bench's 40-field monthly data set: every element of the demo's
/// three monthly data sets, malaria deaths by age and sex, no expiry.
async fn add_bench_data_set(services: &Services) {
    let snap = services.metadata.snapshot().await.expect("snapshot");
    let code = |kind: &str, code: &str| {
        snap.uid_by_code(kind, code)
            .unwrap_or_else(|| panic!("demo {kind} {code}"))
            .to_string()
    };
    let deaths = code("dataElements", "MAL_DEATHS");
    let age_sex = code("categoryCombos", "AGE_AND_SEX");
    let mut elements = Vec::new();
    let mut org_units = Value::Null;
    for ds_code in ["DS_MALARIA_MONTHLY", "DS_EPI_MONTHLY", "DS_ANC_MONTHLY"] {
        let ds = snap
            .get_of("dataSets", &code("dataSets", ds_code))
            .expect("demo data set");
        if org_units.is_null() {
            org_units = ds["organisationUnits"].clone();
        }
        for dse in ds["dataSetElements"].as_array().expect("dataSetElements") {
            let de = dse["dataElement"]["id"]
                .as_str()
                .expect("element")
                .to_string();
            let mut out = json!({"dataSet": {"id": BENCH_DATA_SET}, "dataElement": {"id": de}});
            if de == deaths {
                out["categoryCombo"] = json!({"id": age_sex});
            }
            elements.push(out);
        }
    }
    let payload = json!({"dataSets": [{
        "id": BENCH_DATA_SET,
        "name": "Integrated monthly report (bench)",
        "shortName": "Integrated monthly (bench)",
        "code": "BENCH_MONTHLY_40",
        "periodType": "Monthly",
        "categoryCombo": {"id": hisa_server::demo::DEFAULT_CATEGORY_COMBO},
        "expiryDays": 0,
        "openFuturePeriods": 0,
        "timelyDays": 10,
        "dataSetElements": elements,
        "organisationUnits": org_units,
    }]});
    drop(snap);
    let report = services
        .metadata
        .import(payload, ImportParams::default())
        .await
        .expect("bench data set import");
    if report.has_errors() {
        let first: Vec<String> = report.errors().take(5).map(|e| e.message.clone()).collect();
        panic!("the bench data set did not import: {}", first.join("; "));
    }
}

#[derive(Clone)]
enum FieldKind {
    Count,
    Text,
    Bool,
    /// The option set's codes in order.
    Option(Vec<String>),
}

#[derive(Clone)]
struct Field {
    data_element: String,
    category_option_combo: String,
    kind: FieldKind,
}

/// The fields of `data_set` as the app sees them in its package: each
/// element (in form order) × the option combos of its category combo.
fn form_fields(package: &MetadataPackage, data_set: &str) -> Vec<Field> {
    let list = |kind: &str| package.objects.get(kind).cloned().unwrap_or_default();
    let find = |kind: &str, id: &str| list(kind).into_iter().find(|o| o["id"] == id);
    let ds = find("dataSets", data_set).expect("the bench data set is in the package");
    let cocs = list("categoryOptionCombos");
    let mut fields = Vec::new();
    for dse in ds["dataSetElements"].as_array().expect("dataSetElements") {
        let de_id = dse["dataElement"]["id"].as_str().expect("element");
        let de = find("dataElements", de_id).expect("element in the package");
        let combo = dse["categoryCombo"]["id"]
            .as_str()
            .or(de["categoryCombo"]["id"].as_str())
            .expect("category combo")
            .to_string();
        let kind = if let Some(set) = de["optionSet"]["id"].as_str() {
            let mut options: Vec<Value> = list("options")
                .into_iter()
                .filter(|o| o["optionSet"]["id"] == set)
                .collect();
            options.sort_by_key(|o| o["sortOrder"].as_i64());
            FieldKind::Option(
                options
                    .iter()
                    .map(|o| o["code"].as_str().expect("option code").to_string())
                    .collect(),
            )
        } else {
            match de["valueType"].as_str().unwrap_or("TEXT") {
                "TEXT" | "LONG_TEXT" => FieldKind::Text,
                "BOOLEAN" | "TRUE_ONLY" => FieldKind::Bool,
                _ => FieldKind::Count,
            }
        };
        for coc in cocs
            .iter()
            .filter(|c| c["categoryCombo"]["id"] == combo.as_str())
        {
            fields.push(Field {
                data_element: de_id.to_string(),
                category_option_combo: coc["id"].as_str().expect("coc").to_string(),
                kind: kind.clone(),
            });
        }
    }
    fields
}

/// One form's values: small counts (1–30), an option code, a short
/// remark. Another `revision` of the same form changes every value.
fn form_values(fields: &[Field], seed: u64, revision: u32) -> Vec<(Field, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    fields
        .iter()
        .map(|f| {
            let value = match &f.kind {
                FieldKind::Count => (rng.gen_range(1..=30u32) + revision).to_string(),
                FieldKind::Text => format!("Stock received mid-month ({revision})"),
                FieldKind::Bool => ["true", "false"][revision as usize % 2].to_string(),
                FieldKind::Option(codes) => codes[revision as usize % codes.len()].clone(),
            };
            (f.clone(), value)
        })
        .collect()
}

/// The upload as the app's outbox sends it: a fresh UUID, the capture time.
fn upload_request(org_unit: &str, period: &str, values: &[(Field, String)]) -> UploadRequest {
    let now = now_rfc3339();
    UploadRequest {
        device_time: now.clone(),
        pending: 1,
        submissions: vec![Submission {
            id: uuid::Uuid::new_v4().to_string(),
            captured_at: Some(now),
            body: SubmissionBody::Form(FormSubmission {
                data_set: BENCH_DATA_SET.to_string(),
                period: period.to_string(),
                org_unit: org_unit.to_string(),
                attribute_option_combo: None,
                complete: true,
                values: values
                    .iter()
                    .map(|(f, v)| FormValue {
                        data_element: f.data_element.clone(),
                        category_option_combo: Some(f.category_option_combo.clone()),
                        value: Some(v.clone()),
                        comment: None,
                    })
                    .collect(),
            }),
        }],
    }
}

/// The same form as a DHIS2 data value set.
fn data_value_set(org_unit: &str, period: &str, values: &[(Field, String)]) -> Value {
    json!({
        "dataSet": BENCH_DATA_SET,
        "period": period,
        "orgUnit": org_unit,
        "completeDate": time::OffsetDateTime::now_utc().date().to_string(),
        "dataValues": values.iter().map(|(f, v)| json!({
            "dataElement": f.data_element,
            "categoryOptionCombo": f.category_option_combo,
            "value": v,
        })).collect::<Vec<_>>(),
    })
}

/// Roughly what HTTP/1.1 puts around a body: status or request line and headers.
/// A gzipped JSON body sent with this `Authorization`, gzip accepted back.
fn gzip_json_headers(authorization: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_str(authorization).expect("header"),
    );
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        reqwest::header::CONTENT_ENCODING,
        HeaderValue::from_static("gzip"),
    );
    headers.insert(
        reqwest::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip"),
    );
    headers
}

fn header_bytes(first_line: &str, headers: &HeaderMap) -> usize {
    first_line.len()
        + 2
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
            .sum::<usize>()
        + 2
}

// ------------------------------------------------------------------------------------------------
// Firing requests at once
// ------------------------------------------------------------------------------------------------

struct Shot {
    url: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

struct Outcome {
    latency: Duration,
    status: u16,
    /// The body, decompressed.
    body: Vec<u8>,
    error: Option<String>,
}

/// Send every shot at the same moment (at most `in_flight` at a time),
/// each on its own connection (a new client, so no connection is reused
/// from an earlier run). Returns the outcomes, each latency taken from its
/// own send, and the wall time from the release to the last answer.
async fn fire(shots: Vec<Shot>, in_flight: usize) -> (Vec<Outcome>, Duration) {
    fire_at(shots, in_flight, None).await
}

/// Write the kernel's dirty pages out before a measured run, so that it
/// does not pay for the writes of the setup (seeding writes hundreds of
/// megabytes) or of the run before it.
fn settle_disk() {
    if let Err(e) = std::process::Command::new("sync").status() {
        println!("note: `sync` could not run ({e}); runs may pay for earlier writes");
    }
}

/// Send shot *i* at `i / rate` seconds after the release (an open load:
/// each goes at its time whatever the others are doing), or all at once
/// when `rate` is `None`.
async fn fire_at(
    shots: Vec<Shot>,
    in_flight: usize,
    rate: Option<f64>,
) -> (Vec<Outcome>, Duration) {
    settle_disk();
    let client = reqwest::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    let barrier = Arc::new(tokio::sync::Barrier::new(shots.len() + 1));
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let mut tasks = Vec::with_capacity(shots.len());
    for (i, shot) in shots.into_iter().enumerate() {
        let client = client.clone();
        let barrier = barrier.clone();
        let gate = gate.clone();
        let Shot { url, headers, body } = shot;
        let offset = rate.map(|r| Duration::from_secs_f64(i as f64 / r));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if let Some(offset) = offset {
                tokio::time::sleep(offset).await;
            }
            let _permit = gate.acquire().await.expect("gate");
            let t = Instant::now();
            let result = async move {
                let r = client.post(url).headers(headers).body(body).send().await?;
                let status = r.status().as_u16();
                let gz = r
                    .headers()
                    .get(reqwest::header::CONTENT_ENCODING)
                    .is_some_and(|v| v == "gzip");
                let bytes = r.bytes().await?;
                Ok::<_, reqwest::Error>((status, gz, bytes))
            }
            .await;
            let latency = t.elapsed();
            match result {
                Ok((status, gz, bytes)) => Outcome {
                    latency,
                    status,
                    body: if gz { gunzip(&bytes) } else { bytes.to_vec() },
                    error: None,
                },
                Err(e) => Outcome {
                    latency,
                    status: 0,
                    body: Vec::new(),
                    error: Some(e.to_string()),
                },
            }
        }));
    }
    barrier.wait().await;
    let t = Instant::now();
    let outcomes = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("request task"))
        .collect();
    (outcomes, t.elapsed())
}

#[derive(Clone, Copy)]
struct Load {
    accepted: usize,
    wall: Duration,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.accepted as f64 / self.wall.as_secs_f64()
    }
}

/// Nearest-rank percentiles of the latencies, in ms.
fn load_of(outcomes: &[Outcome], accepted: usize, wall: Duration) -> Load {
    let mut l: Vec<f64> = outcomes.iter().map(|o| ms(o.latency)).collect();
    l.sort_by(f64::total_cmp);
    let at = |p: f64| l[((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1];
    Load {
        accepted,
        wall,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn print_load(label: &str, load: &Load, sent: usize) {
    println!(
        "{label}: {}/{sent} accepted in {:.2} s wall: {:.0} submissions/s; latency p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        load.accepted,
        load.wall.as_secs_f64(),
        load.per_second(),
        load.p50,
        load.p95,
        load.p99,
        load.max
    );
}

/// Count sync outcomes by status; print what was not accepted.
fn sync_accepted(outcomes: &[Outcome]) -> usize {
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut accepted = 0;
    for o in outcomes {
        let parsed = serde_json::from_slice::<UploadResponse>(&o.body).ok();
        let key = match (&o.error, &parsed) {
            (Some(e), _) => {
                problems.push(format!("transport error: {e}"));
                "transport error".to_string()
            }
            (None, Some(r)) if r.results.len() == 1 => {
                let result = &r.results[0];
                let status = serde_json::to_value(result.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                if status == "ACCEPTED" {
                    accepted += 1;
                } else {
                    problems.push(format!(
                        "{status}: {} {:?}",
                        result.message.clone().unwrap_or_default(),
                        result.conflicts.iter().take(3).collect::<Vec<_>>()
                    ));
                }
                format!("HTTP {} {status}", o.status)
            }
            _ => {
                problems.push(format!(
                    "HTTP {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.body[..o.body.len().min(300)])
                ));
                format!("HTTP {}", o.status)
            }
        };
        *statuses.entry(key).or_default() += 1;
    }
    println!("  sync statuses: {statuses:?}");
    report_problems(&problems);
    accepted
}

/// Count DHIS2 import summaries; a form counts when every value was taken.
fn baseline_accepted(outcomes: &[Outcome], values: usize) -> usize {
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut accepted = 0;
    for o in outcomes {
        let parsed = serde_json::from_slice::<Value>(&o.body).ok();
        let key = match (&o.error, &parsed) {
            (Some(e), _) => {
                problems.push(format!("transport error: {e}"));
                "transport error".to_string()
            }
            (None, Some(m)) if m.pointer("/response/importCount").is_some() => {
                let count = &m["response"]["importCount"];
                // Ignored = unchanged: accepted, nothing to write.
                let taken = ["imported", "updated", "ignored"]
                    .iter()
                    .map(|k| count[*k].as_u64().unwrap_or(0))
                    .sum::<u64>();
                let status = m["response"]["status"].as_str().unwrap_or("?").to_string();
                if taken == values as u64 && status == "SUCCESS" {
                    accepted += 1;
                } else {
                    problems.push(format!(
                        "{status}: importCount {count}, conflicts {}",
                        m["response"]["conflicts"]
                    ));
                }
                format!("HTTP {} {status}", o.status)
            }
            _ => {
                problems.push(format!(
                    "HTTP {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.body[..o.body.len().min(300)])
                ));
                format!("HTTP {}", o.status)
            }
        };
        *statuses.entry(key).or_default() += 1;
    }
    println!("  dataValueSets statuses: {statuses:?}");
    report_problems(&problems);
    accepted
}

fn report_problems(problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    println!("  {} NOT ACCEPTED; the first ones:", problems.len());
    let mut seen = HashSet::new();
    for p in problems.iter().filter(|p| seen.insert(p.as_str())).take(5) {
        println!("    {p}");
    }
}

// ------------------------------------------------------------------------------------------------
// One backend
// ------------------------------------------------------------------------------------------------

struct Wire {
    metadata_gz: usize,
    metadata_json: usize,
    form_values: usize,
    upload_json: usize,
    upload_gz: usize,
    response_gz: usize,
    response_json: usize,
}

struct Results {
    backend: Backend,
    wire: Wire,
    devices: usize,
    sync: Load,
    baseline: Load,
    sync_paced: Load,
    baseline_paced: Load,
}

async fn run(
    backend: Backend,
    pg_url: &str,
    facilities: usize,
    devices: usize,
    in_flight: usize,
) -> Results {
    println!();
    println!("== {} ==", backend.name());
    let t = Instant::now();
    let server = start(backend, pg_url, facilities).await;
    println!("setup: server ready in {:.1} s", t.elapsed().as_secs_f64());
    let base = server.base.clone();
    let people = accounts(&server.services).await;
    let workers = people
        .iter()
        .filter(|a| a.username.starts_with("chw."))
        .count();
    println!(
        "setup: {} accounts that enrol phones ({} health workers, {} facility reporters)",
        people.len(),
        workers,
        people.len() - workers
    );
    let plain = reqwest::Client::new();
    // A client that leaves gzipped bodies as they came off the socket.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");

    // 1. Bytes on the wire: the first metadata sync of a health worker.
    let worker = people[0].clone();
    let phone = enrol(&plain, &base, &worker, 0).await;
    let get_package = || async {
        let r = raw
            .get(server.url("/api/sync/v1/metadata"))
            .header("Authorization", phone.authorization())
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .expect("metadata request");
        assert!(r.status().is_success(), "metadata: {}", r.status());
        let gz = r
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .is_some_and(|v| v == "gzip");
        let headers = header_bytes("HTTP/1.1 200 OK", r.headers());
        let body = r.bytes().await.expect("metadata body").to_vec();
        let json = if gz { gunzip(&body) } else { body.clone() };
        let package: MetadataPackage = serde_json::from_slice(&json).expect("metadata package");
        (gz, body.len(), json.len(), headers, package)
    };
    let (gz, metadata_gz, metadata_json, metadata_headers, package) = get_package().await;
    assert!(gz, "the metadata package was not gzipped");
    let counts: Vec<String> = package
        .objects
        .iter()
        .map(|(k, v)| format!("{k} {}", v.len()))
        .collect();
    println!(
        "metadata: first sync of {} (facility {}): {} gzipped on the wire ({} B; response headers ~{} B), {} JSON, {} objects: {}",
        worker.username,
        worker.facility,
        kb(metadata_gz),
        metadata_gz,
        metadata_headers,
        kb(metadata_json),
        package.objects.values().map(Vec::len).sum::<usize>(),
        counts.join(", ")
    );

    // The bench's 40-field form, then one upload of it in one round trip.
    add_bench_data_set(&server.services).await;
    let (_, _, _, _, package) = get_package().await;
    let mut fields = form_fields(&package, BENCH_DATA_SET);
    if fields.len() < FORM_FIELDS {
        println!(
            "WARNING: the bench data set has only {} fields, not {FORM_FIELDS}",
            fields.len()
        );
    }
    fields.truncate(FORM_FIELDS);
    let values = form_values(&fields, 0, 0);
    let request = upload_request(&worker.facility, &month_back(0), &values);
    let json_body = serde_json::to_vec(&request).expect("serialise upload");
    let gz_body = gzip(&json_body);
    let mut envelope = request.clone();
    if let SubmissionBody::Form(f) = &mut envelope.submissions[0].body {
        f.values.clear();
    }
    let envelope_json = serde_json::to_vec(&envelope).expect("serialise envelope");
    let values_json = match &request.submissions[0].body {
        SubmissionBody::Form(f) => serde_json::to_vec(&f.values).expect("serialise values"),
        SubmissionBody::Event(_) => unreachable!(),
    };
    let headers = gzip_json_headers(&phone.authorization());
    let mut request_headers = headers.clone();
    request_headers.insert(
        reqwest::header::HOST,
        HeaderValue::from_str(base.trim_start_matches("http://")).expect("host"),
    );
    request_headers.insert(
        reqwest::header::CONTENT_LENGTH,
        HeaderValue::from(gz_body.len()),
    );
    request_headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("*/*"));
    let upload_headers = header_bytes("POST /api/sync/v1/data HTTP/1.1", &request_headers);
    let r = raw
        .post(server.url("/api/sync/v1/data"))
        .headers(headers)
        .body(gz_body.clone())
        .send()
        .await
        .expect("upload");
    let status = r.status();
    let response_gzipped = r
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| v == "gzip");
    let response_headers = header_bytes("HTTP/1.1 200 OK", r.headers());
    let response_body = r.bytes().await.expect("upload answer").to_vec();
    let response_json = if response_gzipped {
        gunzip(&response_body)
    } else {
        response_body.clone()
    };
    let answer: UploadResponse = serde_json::from_slice(&response_json)
        .unwrap_or_else(|e| panic!("upload answer ({status}): {e}"));
    let result = &answer.results[0];
    assert!(
        status.is_success() && serde_json::to_value(result.status).ok() == Some(json!("ACCEPTED")),
        "the 40-value form was not accepted: {result:?}"
    );
    let wire = Wire {
        metadata_gz,
        metadata_json,
        form_values: values.len(),
        upload_json: json_body.len(),
        upload_gz: gz_body.len(),
        response_gz: response_body.len(),
        response_json: response_json.len(),
    };
    println!(
        "upload: one {}-value form ({} {}) in one round trip: request {} B JSON, {} B gzipped (headers ~{} B); answer {} B gzipped, {} B JSON (headers ~{} B){}",
        values.len(),
        worker.facility,
        month_back(0),
        wire.upload_json,
        wire.upload_gz,
        upload_headers,
        wire.response_gz,
        wire.response_json,
        response_headers,
        if response_gzipped { "" } else { " (answer NOT gzipped)" }
    );
    println!(
        "upload: of the request, the envelope (ids, times, data set, period, org unit) is {} B JSON / {} B gzipped alone, the values array {} B JSON ({:.0} B a value) / {} B gzipped alone",
        envelope_json.len(),
        gzip(&envelope_json).len(),
        values_json.len(),
        values_json.len() as f64 / values.len().max(1) as f64,
        gzip(&values_json).len()
    );
    if wire.upload_gz > UPLOAD_TARGET {
        println!(
            "upload: the gzipped {}-value form is {} B, OVER the {UPLOAD_TARGET} B target",
            values.len(),
            wire.upload_gz
        );
    }

    // 2. Enrol the devices over HTTP, spread over the accounts.
    let t = Instant::now();
    let enrolled: Vec<Device> = futures::stream::iter((0..devices).map(|k| {
        let client = plain.clone();
        let base = base.clone();
        let account = people[k % people.len()].clone();
        async move { enrol(&client, &base, &account, k + 1).await }
    }))
    .buffered(8)
    .collect()
    .await;
    println!(
        "setup: enrolled {devices} devices over {} accounts in {:.1} s ({:.0}/s, 8 at a time; the first enrolment of each account pays its Argon2 sign-in)",
        people.len().min(devices),
        t.elapsed().as_secs_f64(),
        devices as f64 / t.elapsed().as_secs_f64()
    );

    // Device k sends its account's facility form for month 1 + k / accounts
    // back: every (org unit, period) differs unless accounts share a facility.
    let forms: Vec<(String, String)> = (0..devices)
        .map(|k| {
            (
                people[k % people.len()].facility.clone(),
                month_back(1 + k / people.len()),
            )
        })
        .collect();
    let distinct: HashSet<&(String, String)> = forms.iter().collect();
    println!(
        "forms: {} forms for {} distinct (org unit, period), months {} back to {}",
        forms.len(),
        distinct.len(),
        month_back(1),
        month_back(devices.div_ceil(people.len()))
    );

    // Bodies are built before the clock starts; each revision has other
    // values, so every value is written again.
    let sync_shots = |revision: u32| -> Vec<Shot> {
        enrolled
            .iter()
            .zip(&forms)
            .enumerate()
            .map(|(k, (device, (ou, period)))| {
                let values = form_values(&fields, 1 + k as u64, revision);
                let body = serde_json::to_vec(&upload_request(ou, period, &values)).expect("json");
                let headers = gzip_json_headers(&device.authorization());
                Shot {
                    url: server.url("/api/sync/v1/data"),
                    headers,
                    body: gzip(&body),
                }
            })
            .collect()
    };
    let admin = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "admin:district")
    );
    let baseline_shots = |revision: u32| -> Vec<Shot> {
        forms
            .iter()
            .enumerate()
            .map(|(k, (ou, period))| {
                let values = form_values(&fields, 1 + k as u64, revision);
                let body = serde_json::to_vec(&data_value_set(ou, period, &values)).expect("json");
                let headers = gzip_json_headers(&admin);
                Shot {
                    url: server.url("/api/dataValueSets"),
                    headers,
                    body: gzip(&body),
                }
            })
            .collect()
    };

    // Measured: all devices at once.
    let (outcomes, wall) = fire(sync_shots(0), in_flight).await;
    let accepted = sync_accepted(&outcomes);
    let sync = load_of(&outcomes, accepted, wall);
    print_load("sync", &sync, devices);

    // Baseline: the same forms as DHIS2 data value sets, admin's sign-in cached first.
    let me = plain
        .get(server.url("/api/me"))
        .header("Authorization", &admin)
        .send()
        .await
        .expect("warm admin");
    assert!(me.status().is_success(), "admin sign-in: {}", me.status());
    let (outcomes, wall) = fire(baseline_shots(1), in_flight).await;
    let accepted = baseline_accepted(&outcomes, fields.len());
    let baseline = load_of(&outcomes, accepted, wall);
    print_load("baseline dataValueSets", &baseline, devices);

    // Paced: the same devices send their form again (every value changed),
    // spread evenly at the target rate, as an open load: p99 at 500/s
    // offered. Then the baseline at the same pace.
    let (outcomes, wall) = fire_at(sync_shots(2), in_flight, Some(THROUGHPUT_TARGET)).await;
    let accepted = sync_accepted(&outcomes);
    let sync_paced = load_of(&outcomes, accepted, wall);
    print_load("sync paced at 500/s", &sync_paced, devices);
    let (outcomes, wall) = fire_at(baseline_shots(3), in_flight, Some(THROUGHPUT_TARGET)).await;
    let accepted = baseline_accepted(&outcomes, fields.len());
    let baseline_paced = load_of(&outcomes, accepted, wall);
    print_load(
        "baseline dataValueSets paced at 500/s",
        &baseline_paced,
        devices,
    );
    println!(
        "ratio sync/baseline: throughput {:.2}x, p99 {:.2}x",
        sync.per_second() / baseline.per_second(),
        sync.p99 / baseline.p99
    );
    if in_flight >= devices {
        println!(
        "note: when {devices} requests start together, 99% of them can only be answered within {P99_TARGET_MS:.0} ms at {:.0} submissions/s or more",
        0.99 * devices as f64 / (P99_TARGET_MS / 1000.0)
    );
    }
    for (load, what) in [
        (&sync, "sync form"),
        (&baseline, "baseline form"),
        (&sync_paced, "paced sync form"),
        (&baseline_paced, "paced baseline form"),
    ] {
        assert_eq!(load.accepted, devices, "every {what} must be accepted");
    }

    drop(plain);
    drop(raw);
    server.stop(pg_url).await;
    Results {
        backend,
        wire,
        devices,
        sync,
        baseline,
        sync_paced,
        baseline_paced,
    }
}

#[tokio::main]
async fn main() {
    let facilities = env_usize("HISA_BENCH_FACILITIES", 1_000);
    let devices = env_usize("HISA_BENCH_DEVICES", 1_000);
    // At most this many requests in flight (default: all at once); 1 gives
    // the service time of one request on an idle server.
    let in_flight = env_usize("HISA_BENCH_IN_FLIGHT", devices);
    let pg_url = std::env::var("HISA_BENCH_DATABASE_URL").unwrap_or_default();
    println!(
        "device sync benchmark: demo of {facilities} facilities, {devices} devices, {in_flight} requests in flight at most; {} worker threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut results = vec![run(Backend::Sqlite, &pg_url, facilities, devices, in_flight).await];
    if pg_url.starts_with("postgres") {
        results.push(run(Backend::Postgres, &pg_url, facilities, devices, in_flight).await);
    } else {
        println!();
        println!("PostgreSQL skipped: set HISA_BENCH_DATABASE_URL=postgres://… to run it too");
    }

    println!();
    println!("== Summary ==");
    println!("| Bytes on the wire | Backend | Measured | Target | |");
    println!("|---|---|---|---|---|");
    for r in &results {
        let w = &r.wire;
        println!(
            "| First metadata sync of a health worker, gzipped body | {} | {} ({} JSON) | ≤ 50 KB | {} |",
            r.backend.name(),
            kb(w.metadata_gz),
            kb(w.metadata_json),
            verdict(w.metadata_gz <= METADATA_TARGET)
        );
        println!(
            "| One {}-value form up, gzipped body, one round trip | {} | {} B ({} B JSON) | ≤ 1 KB | {} |",
            w.form_values,
            r.backend.name(),
            w.upload_gz,
            w.upload_json,
            verdict(w.upload_gz <= UPLOAD_TARGET)
        );
        println!(
            "| Its answer down, gzipped body | {} | {} B ({} B JSON) | – | |",
            r.backend.name(),
            w.response_gz,
            w.response_json
        );
    }
    println!();
    println!("| Backend | Run | Accepted | Wall | Submissions/s | p50 | p95 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        for (label, l) in [
            ("sync upload, all at once", &r.sync),
            ("baseline dataValueSets, all at once", &r.baseline),
            ("sync upload, paced at 500/s", &r.sync_paced),
            ("baseline dataValueSets, paced at 500/s", &r.baseline_paced),
        ] {
            println!(
                "| {} | {label} | {}/{} | {:.2} s | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
                r.backend.name(),
                l.accepted,
                r.devices,
                l.wall.as_secs_f64(),
                l.per_second(),
                l.p50,
                l.p95,
                l.p99,
                l.max
            );
        }
    }
    println!();
    println!("| Backend | Throughput sync/baseline (at once) | p99 sync/baseline (at once, paced) | ≥ 500/s (at once) | p99 < 300 ms (at once) | p99 < 300 ms (paced at 500/s) |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.2}x | {:.2}x, {:.2}x | {} | {} | {} |",
            r.backend.name(),
            r.sync.per_second() / r.baseline.per_second(),
            r.sync.p99 / r.baseline.p99,
            r.sync_paced.p99 / r.baseline_paced.p99,
            verdict(r.sync.per_second() >= THROUGHPUT_TARGET),
            verdict(r.sync.p99 < P99_TARGET_MS),
            verdict(r.sync_paced.p99 < P99_TARGET_MS)
        );
    }
}
