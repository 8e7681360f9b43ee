//! Hisa's SMS format against DHIS2's compressed SMS (v2): how many SMS a
//! monthly form of small counts costs, and how fast each decodes.
//!
//! `cargo bench -p hisa-shared --bench sms` prints the size table first (it
//! is quoted in docs/sms-format.md, "Sizes"), then criterion's timings.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use hisa_shared::dhis2_sms::{self, AggregateDataset, DataValue, DataValueGroup, HashRef, Header};
use hisa_shared::dhis2_sms::{IdRef, Submission, Value};
use hisa_shared::hisa_sms::{self, Envelope, FieldValue, FormLayout, FormSubmission, Message};
use hisa_shared::period::Period;
use hisa_shared::uid::Uid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEY: hisa_sms::DeviceKey = [0x5a; 32];
const DATA_SET: &str = "BfMAe6Itzgt";
const ORG_UNIT: &str = "DiszpKrYNg8";
const DEFAULT_COMBO: &str = "HllvX50cXC0";
const USER: &str = "GOLswS44mh8";
const PERIOD: &str = "202501";
/// What a phone's metadata lists hold when DHIS2 hashes ids: the data
/// elements of a few data sets, the user's org units, the combos.
const PHONE_DATA_ELEMENTS: usize = 300;
const PHONE_ORG_UNITS: usize = 5;
const PHONE_COMBOS: usize = 40;
const GSM_SINGLE: usize = 160;
const GSM_CONCATENATED: usize = 153;

/// Small counts 0–50, the same for every run.
fn counts(n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(2025);
    (0..n).map(|_| rng.gen_range(0..=50)).collect()
}

fn data_elements(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| Uid::derive(&format!("de-{i}")).to_string())
        .collect()
}

fn hisa_envelope(values: &[u64]) -> Envelope {
    let elements = data_elements(values.len());
    let layout = FormLayout::new(
        DATA_SET,
        elements
            .iter()
            .map(|de| (de.clone(), vec![DEFAULT_COMBO.to_string()])),
    );
    let values = elements
        .iter()
        .zip(values)
        .map(|(de, v)| FieldValue {
            position: layout.position(de, DEFAULT_COMBO).expect("in the layout"),
            value: Some(v.to_string()),
        })
        .collect();
    Envelope {
        key_id: 12,
        counter: 1_500,
        message: Message::Form(FormSubmission {
            data_set: hisa_sms::uid_hash24(DATA_SET),
            layout: layout.fingerprint(),
            period: Period::parse(PERIOD).expect("a period"),
            org_unit: hisa_sms::uid_hash24(ORG_UNIT),
            attribute_option_combo: 0,
            complete: true,
            values,
        }),
    }
}

/// The id as DHIS2's phone sends it: the UID, or a hash at the length its
/// list needs (the list being the UID plus `others` more of its kind).
fn dhis2_id(uid: &str, hashed: bool, kind: &str, others: usize) -> IdRef {
    if !hashed {
        return IdRef::Uid(uid.to_string());
    }
    let mut list: Vec<String> = (0..others)
        .map(|i| Uid::derive(&format!("{kind}-{i}")).to_string())
        .collect();
    list.push(uid.to_string());
    let bits = dhis2_sms::hash_length(list.iter().map(String::as_str)).expect("distinct UIDs");
    IdRef::Hash(HashRef {
        bits,
        value: dhis2_sms::uid_hash(uid, bits),
    })
}

fn dhis2_submission(values: &[u64], hashed: bool) -> Submission {
    let mut phone_elements = data_elements(PHONE_DATA_ELEMENTS.max(values.len()));
    phone_elements.sort();
    let element_bits = if hashed {
        dhis2_sms::hash_length(phone_elements.iter().map(String::as_str)).expect("distinct")
    } else {
        0
    };
    let data_values = data_elements(values.len())
        .into_iter()
        .zip(values)
        .map(|(de, v)| DataValue {
            data_element: if hashed {
                IdRef::Hash(HashRef {
                    bits: element_bits,
                    value: dhis2_sms::uid_hash(&de, element_bits),
                })
            } else {
                IdRef::Uid(de)
            },
            value: Value::Int(*v as i64),
        })
        .collect();
    Submission::AggregateDataset {
        header: Header {
            version: 2,
            last_sync: if hashed { 1_735_689_600 } else { 0 },
            submission_id: 1,
            // The Android app has no user list, so the user always travels whole.
            user: IdRef::Uid(USER.to_string()),
        },
        body: AggregateDataset {
            org_unit: dhis2_id(ORG_UNIT, hashed, "ou", PHONE_ORG_UNITS),
            data_set: IdRef::Uid(DATA_SET.to_string()),
            complete: true,
            attribute_option_combo: dhis2_id(DEFAULT_COMBO, hashed, "coc", PHONE_COMBOS),
            period: PERIOD.to_string(),
            values: vec![DataValueGroup {
                category_option_combo: dhis2_id(DEFAULT_COMBO, hashed, "coc", PHONE_COMBOS),
                values: data_values,
            }],
        },
    }
}

/// DHIS2 sends its one Base64 text as a concatenated SMS.
fn concatenated_sms(chars: usize) -> usize {
    if chars <= GSM_SINGLE {
        1
    } else {
        chars.div_ceil(GSM_CONCATENATED)
    }
}

fn print_sizes() {
    println!("| values | Hisa SMS | Hisa chars | DHIS2 v2 (UIDs) SMS | chars | DHIS2 v2 (hashed ids) SMS | chars |");
    println!("|-------:|---------:|-----------:|--------------------:|------:|--------------------------:|------:|");
    for n in [10, 40, 100] {
        let values = counts(n);
        let hisa = hisa_sms::encode(&hisa_envelope(&values), &KEY).expect("encodes");
        let hisa_chars: usize = hisa.iter().map(String::len).sum();
        let plain = dhis2_sms::encode(&dhis2_submission(&values, false), 2).expect("encodes");
        let hashed = dhis2_sms::encode(&dhis2_submission(&values, true), 2).expect("encodes");
        println!(
            "| {n:>6} | {:>8} | {hisa_chars:>10} | {:>19} | {:>5} | {:>25} | {:>5} |",
            hisa.len(),
            concatenated_sms(plain.len()),
            plain.len(),
            concatenated_sms(hashed.len()),
            hashed.len(),
        );
    }
}

fn decode_benches(c: &mut Criterion) {
    let values = counts(40);
    let hisa_text = hisa_sms::encode(&hisa_envelope(&values), &KEY).expect("encodes");
    let [hisa_text] = hisa_text.as_slice() else {
        panic!("a 40-value form is one SMS");
    };
    let dhis2_text = dhis2_sms::encode(&dhis2_submission(&values, false), 2).expect("encodes");

    let mut group = c.benchmark_group("decode 40-value form");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hisa read_frame+open", |b| {
        b.iter(|| match hisa_sms::read_frame(black_box(hisa_text)) {
            Ok(hisa_sms::Frame::Whole(bytes)) => hisa_sms::open(&bytes, &KEY).expect("opens"),
            other => panic!("unexpected frame {other:?}"),
        })
    });
    group.bench_function("dhis2 v2 decode", |b| {
        b.iter(|| dhis2_sms::decode(black_box(&dhis2_text)).expect("decodes"))
    });
    group.finish();
}

fn main() {
    print_sizes();
    let mut criterion = Criterion::default().configure_from_args();
    decode_benches(&mut criterion);
    criterion.final_summary();
}
