//! The SMS fallback: with no data link, a form or an event leaves the phone
//! as Hisa's authenticated compressed SMS (`docs/sms-format.md`).
//!
//! The phone's SMS key and its counter live in the sealed store, so a
//! stolen phone without the PIN cannot sign, and the counter survives
//! restarts: the server refuses a counter it has seen (replay protection),
//! so the counter is saved *before* a message is handed to the SMS app.

use base64::Engine as _;
use hisa_shared::hisa_sms::{
    self, DeviceKey, Envelope, EventSubmission, FieldValue, FormLayout, FormSubmission, Message,
    Reply,
};
use hisa_shared::period::Period;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::store::{SealedStore, StoreError};

const COLLECTION: &str = "sms";
const KEY: &str = "credentials";

#[derive(Debug, thiserror::Error)]
pub enum SmsFallbackError {
    #[error("the SMS key from enrolment is not 32 bytes of Base64")]
    BadKey,
    #[error(
        "field {data_element}/{category_option_combo} is not in the form as synced; sync the phone"
    )]
    UnknownField {
        data_element: String,
        category_option_combo: String,
    },
    #[error("the phone has no SMS key yet: enrol it first")]
    NotEnrolled,
    #[error(transparent)]
    Codec(#[from] hisa_sms::HisaSmsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What enrolment gave the phone for SMS, and the last counter it used.
#[derive(Clone, Serialize, Deserialize)]
pub struct SmsCredentials {
    pub key_id: u32,
    key: DeviceKey,
    pub last_counter: u32,
}

impl std::fmt::Debug for SmsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsCredentials")
            .field("key_id", &self.key_id)
            .field("last_counter", &self.last_counter)
            .finish_non_exhaustive()
    }
}

impl SmsCredentials {
    /// From the enrolment answer (`smsKeyId`, `smsKey` in Base64).
    pub fn from_enrolment(
        key_id: u32,
        key_base64: &str,
    ) -> Result<SmsCredentials, SmsFallbackError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key_base64.trim())
            .map_err(|_| SmsFallbackError::BadKey)?;
        let key: DeviceKey = bytes.try_into().map_err(|_| SmsFallbackError::BadKey)?;
        Ok(SmsCredentials {
            key_id,
            key,
            last_counter: 0,
        })
    }

    pub fn save(&self, store: &mut SealedStore) -> Result<(), SmsFallbackError> {
        Ok(store.put(COLLECTION, KEY, self)?)
    }

    pub fn load(store: &mut SealedStore) -> Result<SmsCredentials, SmsFallbackError> {
        store
            .get(COLLECTION, KEY)?
            .ok_or(SmsFallbackError::NotEnrolled)
    }
}

/// A form as the data entry screen holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FormDraft {
    pub data_set: String,
    pub period: Period,
    pub org_unit: String,
    /// Position of the attribute option combo in the data set's combo (0: default).
    pub attribute_option_combo: u32,
    pub complete: bool,
    /// (data element, category option combo, value); `None` clears.
    pub values: Vec<(String, String, Option<String>)>,
}

/// A single event as the capture screen holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event: String,
    pub program: String,
    pub org_unit: String,
    pub occurred: Date,
    pub attribute_option_combo: u32,
    pub completed: bool,
    pub values: Vec<(String, Option<String>)>,
}

/// Texts to hand to the SMS app, and the counter that identifies the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub counter: u32,
    pub texts: Vec<String>,
}

fn form_message(draft: &FormDraft, layout: &FormLayout) -> Result<Message, SmsFallbackError> {
    let mut values = Vec::with_capacity(draft.values.len());
    for (de, coc, value) in &draft.values {
        let position = layout
            .position(de, coc)
            .ok_or_else(|| SmsFallbackError::UnknownField {
                data_element: de.clone(),
                category_option_combo: coc.clone(),
            })?;
        values.push(FieldValue {
            position,
            value: value.clone(),
        });
    }
    Ok(Message::Form(FormSubmission {
        data_set: hisa_sms::uid_hash24(&draft.data_set),
        layout: layout.fingerprint(),
        period: draft.period,
        org_unit: hisa_sms::uid_hash24(&draft.org_unit),
        attribute_option_combo: draft.attribute_option_combo,
        complete: draft.complete,
        values,
    }))
}

fn event_message(draft: &EventDraft, layout: &FormLayout) -> Result<Message, SmsFallbackError> {
    let mut values = Vec::with_capacity(draft.values.len());
    for (de, value) in &draft.values {
        let position = layout
            .position(de, "")
            .ok_or_else(|| SmsFallbackError::UnknownField {
                data_element: de.clone(),
                category_option_combo: String::new(),
            })?;
        values.push(FieldValue {
            position,
            value: value.clone(),
        });
    }
    Ok(Message::Event(EventSubmission {
        event: draft.event.clone(),
        program: hisa_sms::uid_hash24(&draft.program),
        layout: layout.fingerprint(),
        org_unit: hisa_sms::uid_hash24(&draft.org_unit),
        occurred: draft.occurred,
        attribute_option_combo: draft.attribute_option_combo,
        completed: draft.completed,
        values,
    }))
}

impl SmsCredentials {
    fn seal(&mut self, message: Message) -> Result<Outgoing, SmsFallbackError> {
        let counter = self.last_counter.wrapping_add(1).max(1);
        let texts = hisa_sms::encode(
            &Envelope {
                key_id: self.key_id,
                counter,
                message,
            },
            &self.key,
        )?;
        self.last_counter = counter;
        Ok(Outgoing { counter, texts })
    }

    /// Pack a form; the caller saves the credentials (new counter) before sending.
    pub fn compose_form(
        &mut self,
        draft: &FormDraft,
        layout: &FormLayout,
    ) -> Result<Outgoing, SmsFallbackError> {
        let message = form_message(draft, layout)?;
        self.seal(message)
    }

    pub fn compose_event(
        &mut self,
        draft: &EventDraft,
        layout: &FormLayout,
    ) -> Result<Outgoing, SmsFallbackError> {
        let message = event_message(draft, layout)?;
        self.seal(message)
    }
}

/// Pack a form with the stored credentials and persist the new counter
/// before returning the texts, so a crash never reuses a counter.
pub fn compose_form_sealed(
    store: &mut SealedStore,
    draft: &FormDraft,
    layout: &FormLayout,
) -> Result<Outgoing, SmsFallbackError> {
    let mut creds = SmsCredentials::load(store)?;
    let out = creds.compose_form(draft, layout)?;
    creds.save(store)?;
    Ok(out)
}

/// The server's answer to one of our submissions, if `text` is one.
pub fn read_reply(text: &str) -> Option<Reply> {
    hisa_sms::parse_reply(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hisa_shared::hisa_sms::{open, read_frame, reassemble, Frame, ReplyStatus};

    fn layout() -> FormLayout {
        FormLayout::new(
            "DsMonthly01",
            (0..40).map(|i| (format!("De{:09}", i), vec!["HllvX50cXC0".to_string()])),
        )
    }

    fn draft(n: usize) -> FormDraft {
        FormDraft {
            data_set: "DsMonthly01".into(),
            period: Period::parse("202610").unwrap(),
            org_unit: "OuFacA10001".into(),
            attribute_option_combo: 0,
            complete: true,
            values: (0..n)
                .map(|i| {
                    (
                        format!("De{:09}", i),
                        "HllvX50cXC0".to_string(),
                        Some((i % 30).to_string()),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_forty_value_form_is_one_sms_the_server_can_open() {
        let key = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let mut creds = SmsCredentials::from_enrolment(99, &b64).unwrap();
        let out = creds.compose_form(&draft(40), &layout()).unwrap();
        assert_eq!(out.texts.len(), 1);
        assert!(out.texts[0].len() <= 160);
        assert_eq!(out.counter, 1);
        let Frame::Whole(bytes) = read_frame(&out.texts[0]).unwrap() else {
            panic!("expected one whole message")
        };
        let env = open(&bytes, &key).unwrap();
        assert_eq!(env.key_id, 99);
        assert_eq!(env.counter, 1);
        let Message::Form(form) = env.message else {
            panic!()
        };
        assert_eq!(form.values.len(), 40);
        assert_eq!(form.layout, layout().fingerprint());
        // Counters rise.
        assert_eq!(creds.compose_form(&draft(3), &layout()).unwrap().counter, 2);
    }

    #[test]
    fn fields_not_in_the_layout_are_refused_not_dropped() {
        let mut creds = SmsCredentials::from_enrolment(
            1,
            &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
        )
        .unwrap();
        let mut d = draft(2);
        d.values
            .push(("DeUnknown01".into(), "HllvX50cXC0".into(), Some("1".into())));
        assert!(matches!(
            creds.compose_form(&d, &layout()),
            Err(SmsFallbackError::UnknownField { .. })
        ));
        assert_eq!(
            creds.last_counter, 0,
            "a refused form must not use a counter"
        );
    }

    #[test]
    fn long_forms_split_and_reassemble() {
        let key = [3u8; 32];
        let mut creds = SmsCredentials::from_enrolment(
            5,
            &base64::engine::general_purpose::STANDARD.encode(key),
        )
        .unwrap();
        let mut d = draft(40);
        for v in &mut d.values {
            v.2 = Some("a fairly long free text answer".into());
        }
        let out = creds.compose_form(&d, &layout()).unwrap();
        assert!(out.texts.len() > 1);
        let mut parts: Vec<_> = out
            .texts
            .iter()
            .map(|t| match read_frame(t).unwrap() {
                Frame::Part(p) => p,
                Frame::Whole(_) => panic!("expected parts"),
            })
            .collect();
        parts.reverse();
        let env = open(&reassemble(&parts).unwrap(), &key).unwrap();
        assert_eq!(env.counter, out.counter);
    }

    #[test]
    fn credentials_survive_in_the_sealed_store_and_replies_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.db");
        let clock: std::sync::Arc<dyn crate::store::Clock> =
            std::sync::Arc::new(crate::store::SystemClock);
        let mut store = SealedStore::create(
            &path,
            "482913",
            crate::store::PinPolicy::default(),
            crate::store::KdfParams::fast_for_tests(),
            300,
            clock.clone(),
        )
        .unwrap();
        SmsCredentials::from_enrolment(
            7,
            &base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
        )
        .unwrap()
        .save(&mut store)
        .unwrap();
        let first = compose_form_sealed(&mut store, &draft(5), &layout()).unwrap();
        let second = compose_form_sealed(&mut store, &draft(5), &layout()).unwrap();
        assert_eq!((first.counter, second.counter), (1, 2));
        let reply = Reply {
            counter: 2,
            status: ReplyStatus::Accepted,
            detail: "5 stored".into(),
        };
        assert_eq!(read_reply(&reply.text()).map(|r| r.counter), Some(2));
        assert!(read_reply("1:0::Submission has been processed successfully").is_none());
    }
}
