//! Turning one stored inbound message into data and a reply. The three
//! formats are told apart by their first character: `*` is Hisa's, bare
//! Base64 is DHIS2's compressed SMS, anything else is a typed command.
//!
//! Processing never writes data for an unknown sender, and never writes
//! part of a submission it has refused: the directory applies a form or an
//! event as one unit.

use std::sync::Arc;

use hisa_shared::dhis2_sms::{self, IdRef, MetadataType, ReplyCode, Resolution};
use hisa_shared::hisa_sms::{self, Frame, Freshness, Reply, ReplyStatus};
use hisa_shared::period::Period;
use serde_json::{json, Value};
use time::{Date, OffsetDateTime};

use crate::directory::*;
use crate::model::*;
use crate::plaintext::{self, CodeSpec, CommandSpec};
use crate::replies::{self, CustomTexts, Language, ReplyKind};
use crate::store::SmsStore;
use crate::GatewayError;

/// The outcome of processing one message.
#[derive(Debug, Clone)]
pub struct Processed {
    pub state: InboundState,
    pub format: Option<MessageFormat>,
    pub reason: Option<String>,
    pub user: Option<String>,
    pub device: Option<String>,
    pub reply: Option<String>,
    /// What the message decoded to: shown by `hisa-server sms decode`.
    pub decoded: Value,
    /// Earlier parts of a multipart message: they share this outcome.
    pub parts: Vec<String>,
    /// A security event worth counting (bad MAC, replay, unknown key…).
    pub security: Option<&'static str>,
    /// The inbound message this is the outcome of.
    pub inbound: String,
}

impl Processed {
    fn new(format: MessageFormat, inbound: &str) -> Processed {
        Processed {
            inbound: inbound.to_string(),
            state: InboundState::Rejected,
            format: Some(format),
            reason: None,
            user: None,
            device: None,
            reply: None,
            decoded: Value::Null,
            parts: Vec::new(),
            security: None,
        }
    }

    fn reject(mut self, reason: impl Into<String>, reply: Option<String>) -> Processed {
        self.state = InboundState::Rejected;
        self.reason = Some(reason.into());
        self.reply = reply;
        self
    }
}

/// What processing may touch.
pub struct Processor<'a> {
    pub store: &'a dyn SmsStore,
    pub directory: &'a dyn SmsDirectory,
    pub catalog: Arc<Catalog>,
    pub today: Date,
    /// Decode and resolve only: no data written, no counters moved, no parts kept.
    pub dry_run: bool,
}

impl Processor<'_> {
    pub async fn process(&self, sms: &InboundSms) -> Result<Processed, GatewayError> {
        let text = sms.text.trim();
        if hisa_sms::is_hisa(text) {
            self.hisa(sms, text).await
        } else if looks_compressed(text) {
            self.dhis2(sms, text).await
        } else {
            self.command(sms, text).await
        }
    }

    // --------------------------------------------------------------------------------------------
    // Hisa's format
    // --------------------------------------------------------------------------------------------

    async fn hisa(&self, sms: &InboundSms, text: &str) -> Result<Processed, GatewayError> {
        let out = Processed::new(MessageFormat::Hisa, &sms.uid);
        let frame = match hisa_sms::read_frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                let mut out = out.reject(format!("unreadable: {e}"), None);
                out.security = Some("garbled");
                return Ok(out);
            }
        };
        match frame {
            Frame::Whole(bytes) => self.hisa_whole(out, &bytes).await,
            Frame::Part(part) => {
                let mut out = out;
                out.decoded = json!({
                    "part": {"reference": part.reference, "index": part.index + 1, "total": part.total}
                });
                if self.dry_run {
                    out.state = InboundState::WaitingForParts;
                    out.reason = Some(format!(
                        "part {} of {} (reference {})",
                        part.index + 1,
                        part.total,
                        part.reference
                    ));
                    return Ok(out);
                }
                let stored = StoredPart {
                    inbound: sms.uid.clone(),
                    index: part.index,
                    chunk: part.chunk.clone(),
                    received_at: sms.received_at,
                };
                let held = self
                    .store
                    .put_part(&sms.sender, part.reference, part.total, &stored)
                    .await?;
                if let Some(first) = held
                    .iter()
                    .find(|p| p.index == part.index && p.inbound != sms.uid)
                {
                    out.state = InboundState::Duplicate;
                    out.reason = Some(format!(
                        "part {} of {} was already received in {}",
                        part.index + 1,
                        part.total,
                        first.inbound
                    ));
                    return Ok(out);
                }
                if held.len() < usize::from(part.total) {
                    out.state = InboundState::WaitingForParts;
                    out.reason = Some(format!(
                        "part {} of {}: {} held",
                        part.index + 1,
                        part.total,
                        held.len()
                    ));
                    return Ok(out);
                }
                // The set is complete: whoever removes it handles it, so
                // two instances never apply one message twice.
                if !self
                    .store
                    .take_parts(&sms.sender, part.reference, part.total)
                    .await?
                {
                    out.state = InboundState::Duplicate;
                    out.reason = Some("its set was assembled by another message".into());
                    return Ok(out);
                }
                let parts: Vec<hisa_sms::Part> = held
                    .iter()
                    .map(|p| hisa_sms::Part {
                        reference: part.reference,
                        index: p.index,
                        total: part.total,
                        chunk: p.chunk.clone(),
                    })
                    .collect();
                let others: Vec<String> = held
                    .iter()
                    .map(|p| p.inbound.clone())
                    .filter(|uid| *uid != sms.uid)
                    .collect();
                let mut out = match hisa_sms::reassemble(&parts) {
                    Ok(bytes) => self.hisa_whole(out, &bytes).await?,
                    Err(e) => {
                        let mut out = out.reject(format!("parts do not fit together: {e}"), None);
                        out.security = Some("garbled");
                        out
                    }
                };
                out.parts = others;
                Ok(out)
            }
        }
    }

    async fn hisa_whole(
        &self,
        mut out: Processed,
        bytes: &[u8],
    ) -> Result<Processed, GatewayError> {
        let (key_id, counter) = match hisa_sms::peek_key(bytes) {
            Ok(k) => k,
            Err(e) => {
                out.security = Some("garbled");
                return Ok(out.reject(format!("unreadable: {e}"), None));
            }
        };
        let err_reply = |detail: &str| {
            Some(
                Reply {
                    counter,
                    status: ReplyStatus::Rejected,
                    detail: detail.to_string(),
                }
                .text(),
            )
        };
        let Some(device) = self.store.device_key(key_id).await? else {
            out.security = Some("unknown_key");
            return Ok(out.reject(format!("no device has SMS key {key_id}"), None));
        };
        out.device = Some(device.device.clone());
        out.user = Some(device.user.clone());
        if device.revoked {
            out.security = Some("revoked_device");
            return Ok(out.reject(
                format!("device {} is revoked", device.device),
                err_reply("this phone is revoked; ask your supervisor"),
            ));
        }
        let Ok(key) = <[u8; 32]>::try_from(device.key.as_slice()) else {
            return Err(GatewayError::Internal(format!(
                "device {} has a malformed SMS key",
                device.device
            )));
        };
        let envelope = match hisa_sms::open(bytes, &key) {
            Ok(e) => e,
            Err(e) => {
                // No reply: a forger learns nothing, and a phone whose SMS was
                // garbled in transit sends it again when no answer comes.
                out.security = Some("bad_mac");
                return Ok(out.reject(format!("authentication failed: {e}"), None));
            }
        };
        out.decoded = json!({"keyId": key_id, "counter": counter, "message": envelope.message});
        match device.window.check(counter) {
            Freshness::Fresh => {}
            Freshness::Replayed => {
                out.security = Some("replay");
                out.state = InboundState::Duplicate;
                out.reason = Some(format!("counter {counter} was received before"));
                out.reply = Some(
                    Reply {
                        counter,
                        status: ReplyStatus::Duplicate,
                        detail: "already received".into(),
                    }
                    .text(),
                );
                return Ok(out);
            }
            Freshness::TooOld => {
                out.security = Some("replay");
                return Ok(out.reject(
                    format!("counter {counter} is older than the replay window"),
                    err_reply("too old; send it again from the app"),
                ));
            }
        }
        let sender = match self.directory.sender_by_user(&device.user).await? {
            Some(s) if !s.disabled => s,
            _ => {
                return Ok(out.reject(
                    format!("user {} is disabled or gone", device.user),
                    err_reply("your account is disabled"),
                ))
            }
        };
        let origin_device = Some(device.device.clone());
        let (summary, report) = match &envelope.message {
            hisa_sms::Message::Form(form) => match self.hisa_form(form, &sender) {
                Ok(resolved) => {
                    let summary = format!(
                        "{} {} {}",
                        resolved.data_set, resolved.period, resolved.org_unit
                    );
                    out.decoded["resolved"] = json!(resolved);
                    let report = self
                        .apply_form(&sender, &resolved, &out, origin_device.clone())
                        .await?;
                    (summary, report)
                }
                Err(why) => return Ok(out.reject(why.clone(), err_reply(&why))),
            },
            hisa_sms::Message::Event(event) => match self.hisa_event(event, &sender) {
                Ok(resolved) => {
                    let summary = format!("event {}", resolved.event);
                    out.decoded["resolved"] = json!(resolved);
                    let report = self
                        .apply_event(&sender, &resolved, &out, origin_device.clone())
                        .await?;
                    (summary, report)
                }
                Err(why) => return Ok(out.reject(why.clone(), err_reply(&why))),
            },
        };
        if !self.dry_run {
            self.accept_counter(key_id, counter, &device.window).await?;
        }
        let (state, status, detail) = describe_report(&report, &summary);
        out.state = state;
        out.reason = Some(detail.clone());
        out.reply = Some(
            Reply {
                counter,
                status,
                detail,
            }
            .text(),
        );
        Ok(out)
    }

    /// Record the counter; if another message of the device moved the window
    /// meanwhile, merge into the fresh window (the data was applied either way).
    async fn accept_counter(
        &self,
        key_id: u32,
        counter: u32,
        seen: &hisa_sms::ReplayWindow,
    ) -> Result<(), GatewayError> {
        let mut old = *seen;
        for _ in 0..8 {
            let mut new = old;
            new.accept(counter);
            if self.store.update_replay_window(key_id, &old, &new).await? {
                return Ok(());
            }
            match self.store.device_key(key_id).await? {
                Some(d) => old = d.window,
                None => return Ok(()),
            }
            if old.check(counter) != Freshness::Fresh {
                return Ok(());
            }
        }
        Err(GatewayError::Internal(format!(
            "replay window of key {key_id} kept changing"
        )))
    }

    fn hisa_form(
        &self,
        form: &hisa_sms::FormSubmission,
        sender: &Sender,
    ) -> Result<FormSubmission, String> {
        let cat = &self.catalog;
        let uid = match cat.data_set_by_hash(form.data_set) {
            Lookup::Found(uid) => uid,
            Lookup::Missing => return Err("unknown form; sync the phone".into()),
            Lookup::Ambiguous(_) => {
                return Err("form id is ambiguous on the server; sync the phone".into())
            }
        };
        let Some(ds) = cat.data_set(uid) else {
            return Err("unknown form; sync the phone".into());
        };
        if ds.fingerprint != form.layout {
            return Err(format!("form {} changed; sync the phone", ds.name));
        }
        if form.period.period_type() != ds.period_type {
            return Err(format!(
                "period {} is not {} for {}",
                form.period.iso(),
                ds.period_type.name(),
                ds.name
            ));
        }
        let org_unit = match cat.org_unit_by_hash(form.org_unit, &ds.org_units, sender) {
            Lookup::Found(ou) => ou.to_string(),
            Lookup::Missing => {
                return Err(format!(
                    "org unit is not yours or does not report {}",
                    ds.name
                ))
            }
            Lookup::Ambiguous(_) => return Err("org unit id is ambiguous; use the app".into()),
        };
        let aoc = ds
            .attribute_option_combos
            .get(form.attribute_option_combo as usize)
            .cloned()
            .ok_or_else(|| "attribute option combo unknown; sync the phone".to_string())?;
        let mut values = Vec::with_capacity(form.values.len());
        for v in &form.values {
            let field = ds
                .layout
                .fields
                .get(usize::from(v.position))
                .ok_or_else(|| format!("field {} is outside the form", v.position))?;
            values.push(FormValue {
                data_element: field.data_element.clone(),
                category_option_combo: Some(field.category_option_combo.clone()),
                value: v.value.clone(),
                comment: None,
            });
        }
        Ok(FormSubmission {
            data_set: ds.uid.clone(),
            period: form.period.iso(),
            org_unit,
            attribute_option_combo: Some(aoc),
            complete: form.complete,
            atomic: false,
            values,
        })
    }

    fn hisa_event(
        &self,
        event: &hisa_sms::EventSubmission,
        sender: &Sender,
    ) -> Result<EventSubmission, String> {
        let cat = &self.catalog;
        let uid = match cat.program_by_hash(event.program) {
            Lookup::Found(uid) => uid,
            Lookup::Missing => return Err("unknown program; sync the phone".into()),
            Lookup::Ambiguous(_) => {
                return Err("program id is ambiguous on the server; sync the phone".into())
            }
        };
        let Some(program) = cat.program(uid) else {
            return Err("unknown program; sync the phone".into());
        };
        if program.fingerprint != event.layout {
            return Err(format!("program {} changed; sync the phone", program.name));
        }
        let org_unit = match cat.org_unit_by_hash(event.org_unit, &program.org_units, sender) {
            Lookup::Found(ou) => ou.to_string(),
            Lookup::Missing => {
                return Err(format!(
                    "org unit is not yours or not in program {}",
                    program.name
                ))
            }
            Lookup::Ambiguous(_) => return Err("org unit id is ambiguous; use the app".into()),
        };
        let aoc = program
            .attribute_option_combos
            .get(event.attribute_option_combo as usize)
            .cloned()
            .ok_or_else(|| "attribute option combo unknown; sync the phone".to_string())?;
        let mut values = Vec::new();
        for v in &event.values {
            let field = program
                .layout
                .fields
                .get(usize::from(v.position))
                .ok_or_else(|| format!("field {} is outside the program stage", v.position))?;
            if let Some(value) = &v.value {
                values.push((field.data_element.clone(), value.clone()));
            }
        }
        Ok(EventSubmission {
            event: event.event.clone(),
            program: program.uid.clone(),
            program_stage: Some(program.stage.clone()),
            org_unit,
            attribute_option_combo: Some(aoc),
            occurred_at: iso_date(event.occurred),
            completed: event.completed,
            values,
        })
    }

    async fn apply_form(
        &self,
        sender: &Sender,
        form: &FormSubmission,
        out: &Processed,
        device: Option<String>,
    ) -> Result<ApplyReport, GatewayError> {
        if self.dry_run {
            return Ok(ApplyReport::default());
        }
        let origin = Origin {
            inbound: out.inbound.clone(),
            device,
        };
        Ok(self.directory.apply_form(sender, form, &origin).await?)
    }

    async fn apply_event(
        &self,
        sender: &Sender,
        event: &EventSubmission,
        out: &Processed,
        device: Option<String>,
    ) -> Result<ApplyReport, GatewayError> {
        if self.dry_run {
            return Ok(ApplyReport::default());
        }
        let origin = Origin {
            inbound: out.inbound.clone(),
            device,
        };
        Ok(self.directory.apply_event(sender, event, &origin).await?)
    }

    // --------------------------------------------------------------------------------------------
    // DHIS2's compressed format
    // --------------------------------------------------------------------------------------------

    async fn dhis2(&self, sms: &InboundSms, text: &str) -> Result<Processed, GatewayError> {
        let mut out = Processed::new(MessageFormat::Dhis2, &sms.uid);
        let submission = match dhis2_sms::decode(text) {
            Ok(s) => s,
            Err(e) => {
                out.security = Some("garbled");
                let reply =
                    dhis2_sms::reply(dhis2_sms::peek_submission_id(text), e.reply_code(), &[]);
                return Ok(out.reject(format!("unreadable: {e}"), Some(reply)));
            }
        };
        out.decoded = json!(submission);
        let id = Some(submission.submission_id());
        let reply = |code: ReplyCode, args: &[&str]| Some(dhis2_sms::reply(id, code, args));
        let header_user = submission.header().user.reply_arg(MetadataType::User);
        let sender = match self.directory.sender_by_phone(&sms.sender).await? {
            Some(s) if !s.disabled => s,
            _ => {
                out.security = Some("unknown_sender");
                return Ok(out.reject(
                    format!("no active user has phone number {}", sms.sender),
                    reply(ReplyCode::InvalidUser, &[&header_user]),
                ));
            }
        };
        out.user = Some(sender.user.clone());
        match &submission {
            dhis2_sms::Submission::AggregateDataset { body, .. } => {
                let form = match self.dhis2_form(body, &sender) {
                    Ok(f) => f,
                    Err((why, code, args)) => {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        return Ok(out.reject(why, reply(code, &args)));
                    }
                };
                let (form, unresolved) = form;
                out.decoded["resolved"] = json!(form);
                if form.values.is_empty() && unresolved.is_empty() {
                    out.state = InboundState::Applied;
                    out.reason = Some("no data values".into());
                    out.reply = reply(ReplyCode::WarnDvempty, &[]);
                    return Ok(out);
                }
                let report = self.apply_form(&sender, &form, &out, None).await?;
                if let Some(rej) = &report.rejection {
                    let (code, args) = match rej {
                        Rejection::PeriodLocked(p) => (
                            ReplyCode::DatasetLocked,
                            vec![form.data_set.clone(), p.clone()],
                        ),
                        Rejection::InvalidPeriod(p) => (ReplyCode::InvalidPeriod, vec![p.clone()]),
                        Rejection::OrgUnitNotAssigned | Rejection::OrgUnitOutsideScope => (
                            ReplyCode::OuNotinDataset,
                            vec![form.org_unit.clone(), form.data_set.clone()],
                        ),
                        Rejection::UnknownAttributeOptionCombo => (
                            ReplyCode::InvalidAoc,
                            vec![form.attribute_option_combo.clone().unwrap_or_default()],
                        ),
                        Rejection::ValuesRefused => (
                            ReplyCode::WarnDverr,
                            bad_value_args(&report.conflicts, &unresolved),
                        ),
                        _ => (ReplyCode::UnknownError, vec![]),
                    };
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    return Ok(out.reject(format!("{rej:?}"), reply(code, &args)));
                }
                let bad = bad_value_args(&report.conflicts, &unresolved);
                let summary = format!("{} {} {}", form.data_set, form.period, form.org_unit);
                let (state, _, detail) = describe_report(&report, &summary);
                out.reason = Some(detail);
                if bad.is_empty() {
                    out.state = state;
                    out.reply = reply(ReplyCode::Success, &[]);
                } else {
                    out.state = InboundState::AppliedWithWarnings;
                    let args: Vec<&str> = bad.iter().map(String::as_str).collect();
                    out.reply = reply(ReplyCode::WarnDverr, &args);
                }
                Ok(out)
            }
            dhis2_sms::Submission::SimpleEvent { body, .. } => {
                let event = match self.dhis2_event(body, &sender) {
                    Ok(e) => e,
                    Err((why, code, args)) => {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        return Ok(out.reject(why, reply(code, &args)));
                    }
                };
                out.decoded["resolved"] = json!(event);
                let report = self.apply_event(&sender, &event, &out, None).await?;
                if let Some(rej) = &report.rejection {
                    return Ok(out.reject(
                        format!("{rej:?}"),
                        reply(ReplyCode::InvalidEvent, &[&event.event]),
                    ));
                }
                let (state, _, detail) =
                    describe_report(&report, &format!("event {}", event.event));
                out.state = state;
                out.reason = Some(detail);
                out.reply = if report.conflicts.is_empty() {
                    reply(ReplyCode::Success, &[])
                } else {
                    let args: Vec<String> = report
                        .conflicts
                        .iter()
                        .filter_map(|c| c.data_element.clone())
                        .collect();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    reply(ReplyCode::WarnDverr, &args)
                };
                Ok(out)
            }
            dhis2_sms::Submission::Unsupported { kind, .. } => Ok(out.reject(
                format!("{} submissions are not processed by Hisa", kind.name()),
                reply(ReplyCode::NOT_SUPPORTED, &[]),
            )),
        }
    }

    #[allow(clippy::type_complexity)]
    fn dhis2_form(
        &self,
        body: &dhis2_sms::AggregateDataset,
        sender: &Sender,
    ) -> Result<(FormSubmission, Vec<String>), (String, ReplyCode, Vec<String>)> {
        let cat = &self.catalog;
        let ds_arg = body.data_set.reply_arg(MetadataType::Dataset);
        let ds = match resolve(&body.data_set, cat.data_sets.iter().map(|d| d.uid.as_str())) {
            Ok(uid) => cat.data_set(uid),
            Err(ambiguous) => {
                return Err((
                    format!(
                        "data set {ds_arg} {}",
                        if ambiguous {
                            "is ambiguous"
                        } else {
                            "is unknown"
                        }
                    ),
                    ReplyCode::InvalidDataset,
                    vec![ds_arg],
                ))
            }
        };
        let Some(ds) = ds else {
            return Err((
                format!("data set {ds_arg} is unknown"),
                ReplyCode::InvalidDataset,
                vec![ds_arg],
            ));
        };
        let ou_arg = body.org_unit.reply_arg(MetadataType::OrganisationUnit);
        let not_assigned = || {
            (
                format!("org unit {ou_arg} is not assigned to data set {}", ds.uid),
                ReplyCode::OuNotinDataset,
                vec![ou_arg.clone(), ds.uid.clone()],
            )
        };
        // The phone hashed against its user's org units, so those (that
        // report the data set) are the candidates: a short hash that would
        // be ambiguous country-wide is unique there.
        let org_unit = match &body.org_unit {
            IdRef::Uid(uid) => uid.clone(),
            IdRef::Hash(_) => {
                let candidates = cat.candidates_for(sender, &ds.org_units);
                match resolve(&body.org_unit, candidates.iter().copied()) {
                    Ok(uid) => uid.to_string(),
                    Err(_) => return Err(not_assigned()),
                }
            }
        };
        if !ds.org_units.contains(&org_unit) {
            return Err(not_assigned());
        }
        if !cat
            .org_unit_paths
            .get(&org_unit)
            .is_some_and(|p| sender.covers(p))
        {
            return Err((
                format!("user {} does not report for {org_unit}", sender.username),
                ReplyCode::UserNotinOu,
                vec![sender.user.clone(), org_unit],
            ));
        }
        let period = match Period::parse(&body.period) {
            Ok(p) if p.period_type() == ds.period_type => p.iso(),
            _ => {
                return Err((
                    format!("period {} is invalid for {}", body.period, ds.uid),
                    ReplyCode::InvalidPeriod,
                    vec![body.period.clone()],
                ))
            }
        };
        let aoc_arg = body
            .attribute_option_combo
            .reply_arg(MetadataType::CategoryOptionCombo);
        let aoc = match resolve(
            &body.attribute_option_combo,
            ds.attribute_option_combos.iter().map(String::as_str),
        ) {
            Ok(uid) => uid.to_string(),
            Err(_) => {
                return Err((
                    format!(
                        "attribute option combo {aoc_arg} is not valid for {}",
                        ds.uid
                    ),
                    ReplyCode::InvalidAoc,
                    vec![aoc_arg],
                ))
            }
        };
        let elements: Vec<&str> = dedup(ds.layout.fields.iter().map(|f| f.data_element.as_str()));
        let combos: Vec<&str> = dedup(
            ds.layout
                .fields
                .iter()
                .map(|f| f.category_option_combo.as_str()),
        );
        let mut values = Vec::new();
        let mut unresolved = Vec::new();
        for (coc_ref, dv) in dhis2_sms::iter_data_values(&body.values) {
            let de = resolve(&dv.data_element, elements.iter().copied());
            let coc = resolve(coc_ref, combos.iter().copied());
            match (de, coc) {
                (Ok(de), Ok(coc)) => values.push(FormValue {
                    data_element: de.to_string(),
                    category_option_combo: Some(coc.to_string()),
                    value: Some(dv.value.stored_text()),
                    comment: None,
                }),
                _ => unresolved.push(format!(
                    "{}-{}",
                    dv.data_element.reply_arg(MetadataType::DataElement),
                    coc_ref.reply_arg(MetadataType::CategoryOptionCombo)
                )),
            }
        }
        Ok((
            FormSubmission {
                data_set: ds.uid.clone(),
                period,
                org_unit,
                attribute_option_combo: Some(aoc),
                complete: body.complete,
                atomic: false,
                values,
            },
            unresolved,
        ))
    }

    fn dhis2_event(
        &self,
        body: &dhis2_sms::SimpleEvent,
        sender: &Sender,
    ) -> Result<EventSubmission, (String, ReplyCode, Vec<String>)> {
        let cat = &self.catalog;
        let program_arg = body.program.reply_arg(MetadataType::Program);
        let program = resolve(&body.program, cat.programs.iter().map(|p| p.uid.as_str()))
            .ok()
            .and_then(|uid| cat.program(uid));
        let Some(program) = program else {
            return Err((
                format!("program {program_arg} is unknown or ambiguous"),
                ReplyCode::InvalidProgram,
                vec![program_arg],
            ));
        };
        let ou_arg = body.org_unit.reply_arg(MetadataType::OrganisationUnit);
        let org_unit = match &body.org_unit {
            IdRef::Uid(uid) => Some(uid.clone()),
            IdRef::Hash(_) => {
                let candidates = cat.candidates_for(sender, &program.org_units);
                resolve(&body.org_unit, candidates.iter().copied())
                    .ok()
                    .map(str::to_string)
            }
        }
        .filter(|ou| program.org_units.contains(ou));
        let Some(org_unit) = org_unit else {
            return Err((
                format!(
                    "org unit {ou_arg} is not assigned to program {}",
                    program.uid
                ),
                ReplyCode::OuNotinProgram,
                vec![ou_arg, program.uid.clone()],
            ));
        };
        if !cat
            .org_unit_paths
            .get(&org_unit)
            .is_some_and(|p| sender.covers(p))
        {
            return Err((
                format!("user {} does not report for {org_unit}", sender.username),
                ReplyCode::UserNotinOu,
                vec![sender.user.clone(), org_unit],
            ));
        }
        let Some(event) = body.event.uid().map(str::to_string) else {
            let arg = body.event.reply_arg(MetadataType::Event);
            return Err((
                "the event id was sent as a hash".into(),
                ReplyCode::InvalidEvent,
                vec![arg],
            ));
        };
        let aoc = resolve(
            &body.attribute_option_combo,
            program.attribute_option_combos.iter().map(String::as_str),
        )
        .ok()
        .map(str::to_string);
        let Some(aoc) = aoc else {
            let arg = body
                .attribute_option_combo
                .reply_arg(MetadataType::CategoryOptionCombo);
            return Err((
                format!(
                    "attribute option combo {arg} is not valid for {}",
                    program.uid
                ),
                ReplyCode::InvalidAoc,
                vec![arg],
            ));
        };
        let occurred = body
            .event_date
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .map(|t| t.date())
            .unwrap_or(self.today);
        let elements: Vec<&str> = program
            .layout
            .fields
            .iter()
            .map(|f| f.data_element.as_str())
            .collect();
        let mut values = Vec::new();
        for (_, dv) in dhis2_sms::iter_data_values(&body.values) {
            match resolve(&dv.data_element, elements.iter().copied()) {
                Ok(de) => values.push((de.to_string(), dv.value.stored_text())),
                Err(_) => {
                    let arg = dv.data_element.reply_arg(MetadataType::DataElement);
                    return Err((
                        format!("data element {arg} is not in program {}", program.uid),
                        ReplyCode::InvalidEvent,
                        vec![event],
                    ));
                }
            }
        }
        Ok(EventSubmission {
            event,
            program: program.uid.clone(),
            program_stage: Some(program.stage.clone()),
            org_unit,
            attribute_option_combo: Some(aoc),
            occurred_at: iso_date(occurred),
            completed: body.status == dhis2_sms::EventStatus::Completed,
            values,
        })
    }

    // --------------------------------------------------------------------------------------------
    // Plain-text commands
    // --------------------------------------------------------------------------------------------

    async fn command(&self, sms: &InboundSms, text: &str) -> Result<Processed, GatewayError> {
        let mut out = Processed::new(MessageFormat::Command, &sms.uid);
        let sender = self.directory.sender_by_phone(&sms.sender).await?;
        let lang = Language::from_locale(sender.as_ref().and_then(|s| s.locale.as_deref()));
        let word = plaintext::positional_code(text).or_else(|| plaintext::command_word(text));
        let command = word.and_then(|w| self.catalog.command_for(w));
        let Some(command) = command else {
            let reply =
                replies::reply_text(&ReplyKind::NoCommandFound, lang, &CustomTexts::default());
            return Ok(out.reject("no command matches", Some(reply)));
        };
        let texts = &command.texts;
        let custom = CustomTexts {
            wrong_format: texts.wrong_format_message.as_deref(),
            default_message: texts.default_message.as_deref(),
            no_user: texts.no_user_message.as_deref(),
            more_than_one_org_unit: texts.more_than_one_org_unit_message.as_deref(),
            success: texts.success_message.as_deref(),
        };
        let say = |kind: ReplyKind| Some(replies::reply_text(&kind, lang, &custom));
        let Some(sender) = sender.filter(|s| !s.disabled) else {
            out.security = Some("unknown_sender");
            return Ok(out.reject(
                format!("no active user has phone number {}", sms.sender),
                say(ReplyKind::NoUser),
            ));
        };
        out.user = Some(sender.user.clone());
        let specs: Vec<CodeSpec> = command
            .codes
            .iter()
            .map(|c| CodeSpec {
                code: &c.code,
                compulsory: c.compulsory,
                text: c.text,
            })
            .collect();
        let spec = CommandSpec {
            name: &command.name,
            separator: command.separator.as_deref(),
            codes: &specs,
            dialect: command.dialect,
        };
        let parsed = match plaintext::parse(text, &spec) {
            Ok(p) => p,
            Err(e) => return Ok(out.reject(e.to_string(), say(ReplyKind::from_error(&e)))),
        };
        out.decoded = json!({
            "command": command.name,
            "dialect": parsed.dialect,
            "values": parsed.values,
            "unknownCodes": parsed.unknown_codes,
        });
        if !parsed.unknown_codes.is_empty() {
            let why = format!("unknown codes {}", parsed.unknown_codes.join(", "));
            return Ok(out.reject(
                why,
                say(ReplyKind::UnknownCodes(parsed.unknown_codes.clone())),
            ));
        }
        if sender.org_units.is_empty() {
            return Ok(out.reject("the user has no org unit", say(ReplyKind::NoUser)));
        }
        if sender.org_units.len() > 1 {
            return Ok(out.reject(
                "the user has several org units",
                say(ReplyKind::MoreThanOneOrgUnit),
            ));
        }
        let org_unit = sender.org_units[0].clone();
        match command.parser_type.as_str() {
            "KEY_VALUE_PARSER" => {
                self.key_value(out, command, &parsed, &sender, org_unit, lang, &custom)
                    .await
            }
            "EVENT_REGISTRATION_PARSER" => {
                self.event_command(sms, out, command, &parsed, &sender, org_unit, lang, &custom)
                    .await
            }
            other => Ok(out.reject(
                format!("commands of type {other} are not processed by Hisa"),
                say(ReplyKind::UnsupportedCommandType {
                    parser_type: other.to_string(),
                }),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn key_value(
        &self,
        mut out: Processed,
        command: &SmsCommand,
        parsed: &plaintext::ParsedCommand,
        sender: &Sender,
        org_unit: String,
        lang: Language,
        custom: &CustomTexts<'_>,
    ) -> Result<Processed, GatewayError> {
        let say = |kind: ReplyKind| Some(replies::reply_text(&kind, lang, custom));
        let Some(ds) = command
            .data_set
            .as_deref()
            .and_then(|d| self.catalog.data_set(d))
        else {
            return Ok(out.reject(
                format!("command {} names no known data set", command.name),
                say(ReplyKind::WrongFormat),
            ));
        };
        if parsed.values.is_empty() {
            return Ok(out.reject(
                "no values",
                say(ReplyKind::NoValues {
                    command: command.name.clone(),
                }),
            ));
        }
        let period = match parsed.day_month {
            Some(dm) => match plaintext::period_from_day_month(dm, ds.period_type, self.today) {
                Some(p) => p,
                None => {
                    let token = format!("{:02}{:02}", dm.0, dm.1);
                    return Ok(out.reject(
                        format!("{token} is not a date"),
                        say(ReplyKind::InvalidDayMonth { token }),
                    ));
                }
            },
            None => plaintext::default_period(
                ds.period_type,
                self.today,
                command.current_period_used_for_reporting,
            ),
        };
        let mut values: Vec<FormValue> = Vec::new();
        let mut stored_codes: Vec<(String, String)> = Vec::new();
        for (code, raw) in &parsed.values {
            let Some(c) = command.codes.iter().find(|c| &c.code == code) else {
                continue;
            };
            let value = command
                .special_characters
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(raw))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| raw.clone());
            stored_codes.push((code.clone(), value.clone()));
            upsert_value(
                &mut values,
                &c.data_element,
                c.category_option_combo.clone(),
                value.clone(),
            );
            if let Some(formula) = &c.formula {
                apply_formula(&mut values, formula, &value);
            }
        }
        let complete = match command.completeness_method.as_str() {
            "ALL_DATAVALUE" => command
                .codes
                .iter()
                .all(|c| parsed.values.iter().any(|(code, _)| code == &c.code)),
            "DO_NOT_MARK_COMPLETE" => false,
            _ => !values.is_empty(),
        };
        let form = FormSubmission {
            data_set: ds.uid.clone(),
            period: period.iso(),
            org_unit,
            attribute_option_combo: None,
            complete,
            atomic: true,
            values,
        };
        out.decoded["resolved"] = json!(form);
        let report = self.apply_form(sender, &form, &out, None).await?;
        if let Some(rej) = &report.rejection {
            let kind = match rej {
                Rejection::PeriodLocked(p) | Rejection::InvalidPeriod(p) => {
                    ReplyKind::PeriodClosed { period: p.clone() }
                }
                Rejection::OrgUnitNotAssigned | Rejection::OrgUnitOutsideScope => {
                    ReplyKind::NotAssigned {
                        org_unit: form.org_unit.clone(),
                        data_set: ds.name.clone(),
                    }
                }
                Rejection::ValuesRefused => match report.conflicts.first() {
                    Some(c) => ReplyKind::InvalidValue {
                        code: code_of(command, c),
                        reason: c.message.clone(),
                    },
                    None => ReplyKind::WrongFormat,
                },
                _ => ReplyKind::WrongFormat,
            };
            let why = match report.conflicts.first() {
                Some(c) => format!("{rej:?}: {}", c.message),
                None => format!("{rej:?}"),
            };
            return Ok(out.reject(why, say(kind)));
        }
        let (state, _, detail) = describe_report(&report, &format!("{} {}", ds.uid, form.period));
        out.state = state;
        out.reason = Some(detail);
        out.reply = if complete || command.completeness_method == "DO_NOT_MARK_COMPLETE" {
            say(ReplyKind::Success {
                stored: stored_codes,
                period: form.period.clone(),
            })
        } else {
            say(ReplyKind::StoredNotCompleted {
                stored: stored_codes,
                period: form.period.clone(),
            })
        };
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn event_command(
        &self,
        sms: &InboundSms,
        mut out: Processed,
        command: &SmsCommand,
        parsed: &plaintext::ParsedCommand,
        sender: &Sender,
        org_unit: String,
        lang: Language,
        custom: &CustomTexts<'_>,
    ) -> Result<Processed, GatewayError> {
        let say = |kind: ReplyKind| Some(replies::reply_text(&kind, lang, custom));
        let Some(program) = command
            .program
            .as_deref()
            .and_then(|p| self.catalog.program(p))
        else {
            return Ok(out.reject(
                format!("command {} names no known event program", command.name),
                say(ReplyKind::WrongFormat),
            ));
        };
        let mut values = Vec::new();
        let mut stored = Vec::new();
        for (code, value) in &parsed.values {
            if value.is_empty() {
                continue;
            }
            if let Some(c) = command.codes.iter().find(|c| &c.code == code) {
                values.push((c.data_element.clone(), value.clone()));
                stored.push((code.clone(), value.clone()));
            }
        }
        let occurred = sms
            .sent_at
            .and_then(|ms| OffsetDateTime::from_unix_timestamp(ms / 1000).ok())
            .map(|t| t.date())
            .unwrap_or(self.today);
        // The event's UID is derived from the message, so reprocessing the
        // same SMS replaces its event instead of adding a second one.
        let event = EventSubmission {
            event: derived_uid(&sms.uid),
            program: program.uid.clone(),
            program_stage: command
                .program_stage
                .clone()
                .or(Some(program.stage.clone())),
            org_unit,
            attribute_option_combo: None,
            occurred_at: iso_date(occurred),
            completed: true,
            values,
        };
        out.decoded["resolved"] = json!(event);
        let report = self.apply_event(sender, &event, &out, None).await?;
        if let Some(rej) = &report.rejection {
            let kind = match report.conflicts.first() {
                Some(c) => ReplyKind::InvalidValue {
                    code: code_of(command, c),
                    reason: c.message.clone(),
                },
                None => match rej {
                    Rejection::OrgUnitNotAssigned | Rejection::OrgUnitOutsideScope => {
                        ReplyKind::NotAssigned {
                            org_unit: event.org_unit.clone(),
                            data_set: program.name.clone(),
                        }
                    }
                    _ => ReplyKind::WrongFormat,
                },
            };
            return Ok(out.reject(format!("{rej:?}"), say(kind)));
        }
        out.state = InboundState::Applied;
        out.reason = Some(format!("event {}", event.event));
        out.reply = say(ReplyKind::Success {
            stored,
            period: event.occurred_at.clone(),
        });
        Ok(out)
    }
}

/// DHIS2's test is "the whole text is Base64", which short command words
/// pass too. A Base64 text that decodes is DHIS2's; one that does not is
/// taken as a garbled compressed SMS only when it is long (16 characters or
/// more), so that `HELP` still reaches the command parser while a damaged
/// submission gets DHIS2's error reply.
fn looks_compressed(text: &str) -> bool {
    dhis2_sms::is_compressed(text) && (text.len() >= 16 || dhis2_sms::decode(text).is_ok())
}

/// Resolve an id the phone sent among candidates: `Err(true)` ambiguous,
/// `Err(false)` missing.
fn resolve<'a>(id: &IdRef, candidates: impl IntoIterator<Item = &'a str>) -> Result<&'a str, bool> {
    match id {
        IdRef::Uid(uid) => candidates.into_iter().find(|c| c == uid).ok_or(false),
        IdRef::Hash(hash) => match dhis2_sms::resolve_hash(*hash, candidates) {
            Resolution::Unique(uid) => Ok(uid),
            Resolution::None => Err(false),
            Resolution::Ambiguous(_) => Err(true),
        },
    }
}

fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = items.collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn bad_value_args(conflicts: &[ValueConflict], unresolved: &[String]) -> Vec<String> {
    let mut args: Vec<String> = unresolved.to_vec();
    for c in conflicts {
        if let Some(de) = &c.data_element {
            args.push(format!(
                "{de}-{}",
                c.category_option_combo.clone().unwrap_or_default()
            ));
        }
    }
    args
}

/// State, Hisa reply status and a one-line description of an apply report.
fn describe_report(report: &ApplyReport, what: &str) -> (InboundState, ReplyStatus, String) {
    if let Some(rej) = &report.rejection {
        let detail = match report.conflicts.first() {
            Some(c) => format!("refused: {}", c.message),
            None => format!("refused: {rej:?}"),
        };
        return (InboundState::Rejected, ReplyStatus::Rejected, detail);
    }
    let mut detail = format!("{what}: {} stored", report.stored());
    if report.completed {
        detail.push_str(", complete");
    }
    if report.conflicts.is_empty() {
        (InboundState::Applied, ReplyStatus::Accepted, detail)
    } else {
        detail.push_str(&format!(", {} refused", report.conflicts.len()));
        if let Some(c) = report.conflicts.first() {
            detail.push_str(&format!(" ({})", c.message));
        }
        (
            InboundState::AppliedWithWarnings,
            ReplyStatus::AcceptedWithWarnings,
            detail,
        )
    }
}

fn code_of(command: &SmsCommand, conflict: &ValueConflict) -> String {
    command
        .codes
        .iter()
        .find(|c| Some(&c.data_element) == conflict.data_element.as_ref())
        .map(|c| c.code.clone())
        .unwrap_or_else(|| conflict.data_element.clone().unwrap_or_default())
}

fn upsert_value(values: &mut Vec<FormValue>, de: &str, coc: Option<String>, value: String) {
    if let Some(v) = values
        .iter_mut()
        .find(|v| v.data_element == de && v.category_option_combo == coc)
    {
        v.value = Some(value);
    } else {
        values.push(FormValue {
            data_element: de.to_string(),
            category_option_combo: coc,
            value: Some(value),
            comment: None,
        });
    }
}

/// DHIS2's `+<uid>` / `-<uid>` formula: fold this value into another
/// element's (default combo). Non-numeric values are left alone; the
/// value's own check reports them.
fn apply_formula(values: &mut Vec<FormValue>, formula: &str, value: &str) {
    let formula = formula.trim();
    let (sign, target) = match formula.split_at_checked(1) {
        Some(("+", t)) => (1.0, t),
        Some(("-", t)) => (-1.0, t),
        _ => return,
    };
    let Ok(delta) = value.trim().parse::<f64>() else {
        return;
    };
    let current = values
        .iter()
        .find(|v| v.data_element == target && v.category_option_combo.is_none())
        .and_then(|v| v.value.as_deref())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let total = current + sign * delta;
    let text = if total.fract() == 0.0 && total.abs() < 1e15 {
        format!("{}", total as i64)
    } else {
        total.to_string()
    };
    upsert_value(values, target, None, text);
}

fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// An 11-character UID derived from a message's UID (stable for the message).
pub fn derived_uid(seed: &str) -> String {
    hisa_shared::Uid::derive(&format!("sms-event:{seed}"))
        .as_str()
        .to_string()
}
