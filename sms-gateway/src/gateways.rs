//! Gateway configurations (`/api/gateways`, DHIS2's JSON shape where it
//! fits) and the outbound half of each protocol.
//!
//! Kinds:
//! - `cht`: a phone running CHT's gateway app polls one URL; it receives
//!   its outgoing messages in the poll answer. Basic auth.
//! - `smsgate`: a phone running SMS Gate posts signed webhooks; Hisa sends
//!   through its HTTP API.
//! - `http`: DHIS2's generic HTTP gateway for sending (URL and
//!   configuration templates, parameters), and a generic signed inbound.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::model::{GatewayRecord, OutboundSms, OutboundState};
use crate::GatewayError;

/// DHIS2's system default for an outbound text.
pub const MAX_TEXT_CHARS: usize = 1071;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    Cht,
    SmsGate,
    Http,
}

impl GatewayKind {
    pub fn parse(s: &str) -> Option<GatewayKind> {
        match s {
            "cht" => Some(GatewayKind::Cht),
            "smsgate" => Some(GatewayKind::SmsGate),
            "http" => Some(GatewayKind::Http),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GatewayKind::Cht => "cht",
            GatewayKind::SmsGate => "smsgate",
            GatewayKind::Http => "http",
        }
    }
}

/// One parameter of DHIS2's generic HTTP gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub key: String,
    pub value: String,
    pub header: bool,
    pub encode: bool,
    pub confidential: bool,
}

/// A gateway configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    pub kind: GatewayKind,
    pub username: Option<String>,
    pub password: Option<String>,
    /// SMS Gate: its API (`http://phone:8080/message` or the cloud API).
    /// Generic HTTP: DHIS2's `urlTemplate`.
    pub url: Option<String>,
    /// HMAC-SHA256 key for signed inbound webhooks.
    pub signing_key: Option<String>,
    pub configuration_template: Option<String>,
    pub parameters: Vec<Parameter>,
    pub use_get: bool,
    pub content_type: String,
    pub send_url_parameters: bool,
    pub max_sms_length: usize,
    /// Messages handed over per minute (a phone: 30, Android's own cap).
    pub rate_per_minute: Option<i64>,
}

const SECRET_FIELDS: &[&str] = &["password", "signingKey", "authToken"];

fn text(config: &Value, key: &str) -> Option<String> {
    config
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl GatewaySettings {
    pub fn from_record(record: &GatewayRecord) -> Result<GatewaySettings, GatewayError> {
        Self::from_config(&record.config)
    }

    pub fn from_config(config: &Value) -> Result<GatewaySettings, GatewayError> {
        let kind_text = text(config, "type").unwrap_or_default();
        let kind = GatewayKind::parse(&kind_text).ok_or_else(|| {
            GatewayError::BadRequest(format!(
                "Gateway type `{kind_text}` is not supported; use cht, smsgate or http"
            ))
        })?;
        let parameters = config
            .get("parameters")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|p| Parameter {
                        key: text(p, "key").unwrap_or_default(),
                        value: p
                            .get("value")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        header: p.get("header").and_then(Value::as_bool).unwrap_or(false),
                        encode: p.get("encode").and_then(Value::as_bool).unwrap_or(false),
                        confidential: p
                            .get("confidential")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let settings = GatewaySettings {
            kind,
            username: text(config, "username"),
            password: text(config, "password"),
            url: text(config, "urlTemplate"),
            signing_key: text(config, "signingKey"),
            configuration_template: text(config, "configurationTemplate"),
            parameters,
            use_get: config
                .get("useGet")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            content_type: text(config, "contentType").unwrap_or_else(|| "FORM_URL_ENCODED".into()),
            send_url_parameters: config
                .get("sendUrlParameters")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_sms_length: config
                .get("maxSmsLength")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .unwrap_or(MAX_TEXT_CHARS),
            rate_per_minute: config.get("ratePerMinute").and_then(Value::as_i64),
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), GatewayError> {
        let bad = |m: &str| Err(GatewayError::BadRequest(m.to_string()));
        if let Some(rate) = self.rate_per_minute {
            if rate < 1 {
                return bad("ratePerMinute must be at least 1");
            }
        }
        match self.kind {
            GatewayKind::Cht => {
                if self.username.is_none() || self.password.is_none() {
                    return bad(
                        "A cht gateway needs the username and password its phone signs in with",
                    );
                }
            }
            GatewayKind::SmsGate => {
                if self.signing_key.is_none()
                    && (self.username.is_none() || self.password.is_none())
                {
                    return bad("An smsgate gateway needs a signingKey for its webhooks (or a username and password)");
                }
                if let Some(url) = &self.url {
                    check_url(url)?;
                }
            }
            GatewayKind::Http => {
                if self.url.is_none()
                    && self.signing_key.is_none()
                    && (self.username.is_none() || self.password.is_none())
                {
                    return bad("An http gateway needs a urlTemplate to send, or a signingKey (or username and password) to receive");
                }
                if let Some(url) = &self.url {
                    check_url(url)?;
                }
                if !matches!(
                    self.content_type.as_str(),
                    "APPLICATION_JSON" | "APPLICATION_XML" | "TEXT_PLAIN" | "FORM_URL_ENCODED"
                ) {
                    return bad("contentType must be APPLICATION_JSON, APPLICATION_XML, TEXT_PLAIN or FORM_URL_ENCODED");
                }
            }
        }
        Ok(())
    }

    /// Whether messages can go out through this gateway.
    pub fn can_send(&self) -> bool {
        match self.kind {
            GatewayKind::Cht => true,
            GatewayKind::SmsGate | GatewayKind::Http => self.url.is_some(),
        }
    }

    /// Whether Hisa pushes to it (rather than a phone pulling).
    pub fn pushes(&self) -> bool {
        self.kind != GatewayKind::Cht && self.url.is_some()
    }

    pub fn per_minute(&self) -> i64 {
        self.rate_per_minute.unwrap_or(match self.kind {
            // Android asks the user to confirm beyond about 30 SMS a minute.
            GatewayKind::Cht | GatewayKind::SmsGate => 30,
            GatewayKind::Http => 600,
        })
    }

    /// Basic credentials, compared in constant time.
    pub fn basic_matches(&self, username: &str, password: &str) -> bool {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => {
                constant_eq(u.as_bytes(), username.as_bytes())
                    & constant_eq(p.as_bytes(), password.as_bytes())
            }
            _ => false,
        }
    }
}

fn check_url(url: &str) -> Result<(), GatewayError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(GatewayError::BadRequest(format!(
            "urlTemplate `{url}` must start with http:// or https://"
        )))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check a posted configuration and turn it into a record. Secrets left
/// out of an update keep their stored values (the API never shows them).
pub fn record_from_payload(
    uid: String,
    mut payload: Value,
    previous: Option<&GatewayRecord>,
) -> Result<GatewayRecord, GatewayError> {
    let Some(obj) = payload.as_object_mut() else {
        return Err(GatewayError::BadRequest(
            "The gateway must be a JSON object".into(),
        ));
    };
    if let Some(prev) = previous.and_then(|p| p.config.as_object()) {
        for key in SECRET_FIELDS {
            if !obj.contains_key(*key) {
                if let Some(v) = prev.get(*key) {
                    obj.insert((*key).to_string(), v.clone());
                }
            }
        }
        // Confidential parameters sent back without a value keep theirs.
        if let (Some(new_params), Some(old_params)) = (
            obj.get_mut("parameters").and_then(Value::as_array_mut),
            prev.get("parameters").and_then(Value::as_array),
        ) {
            for p in new_params.iter_mut() {
                let key = p.get("key").and_then(Value::as_str).map(str::to_string);
                let missing = p
                    .get("value")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty);
                if let (Some(key), true) = (key, missing) {
                    if let Some(old) = old_params
                        .iter()
                        .find(|o| o.get("key").and_then(Value::as_str) == Some(key.as_str()))
                    {
                        if let (Some(pm), Some(v)) = (p.as_object_mut(), old.get("value")) {
                            pm.insert("value".into(), v.clone());
                        }
                    }
                }
            }
        }
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GatewayError::BadRequest("Gateway name must be specified".into()))?
        .to_string();
    obj.insert("id".into(), json!(uid));
    obj.insert("uid".into(), json!(uid));
    obj.remove("isDefault");
    let settings = GatewaySettings::from_config(&payload)?;
    Ok(GatewayRecord {
        uid,
        name,
        kind: settings.kind.as_str().to_string(),
        is_default: false,
        config: payload,
    })
}

/// The configuration as the API shows it: secrets and confidential
/// parameter values hidden.
pub fn public_view(record: &GatewayRecord) -> Value {
    let mut out = record.config.as_object().cloned().unwrap_or_else(Map::new);
    for key in SECRET_FIELDS {
        out.remove(*key);
    }
    if let Some(params) = out.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            let confidential = p
                .get("confidential")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if confidential {
                if let Some(pm) = p.as_object_mut() {
                    pm.remove("value");
                }
            }
        }
    }
    out.insert("id".into(), json!(record.uid));
    out.insert("uid".into(), json!(record.uid));
    out.insert("name".into(), json!(record.name));
    out.insert("type".into(), json!(record.kind));
    out.insert("isDefault".into(), json!(record.is_default));
    Value::Object(out)
}

/// Verify `X-Signature` = hex(HMAC-SHA256(key, body ‖ timestamp)) with a
/// fresh `X-Timestamp` (SMS Gate's scheme; Hisa's generic inbound uses it too).
pub fn verify_signature(
    key: &str,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    tolerance_s: i64,
) -> Result<(), GatewayError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(GatewayError::Unauthorized(
            "X-Timestamp and X-Signature headers are required".into(),
        ));
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| GatewayError::Unauthorized("X-Timestamp is not a number".into()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - ts).abs() > tolerance_s {
        return Err(GatewayError::Unauthorized(
            "X-Timestamp is too old or in the future".into(),
        ));
    }
    let expected = decode_hex(signature.trim())
        .ok_or_else(|| GatewayError::Unauthorized("X-Signature is not hex".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|_| GatewayError::Internal("HMAC key".into()))?;
    mac.update(body);
    mac.update(timestamp.trim().as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| GatewayError::Unauthorized("X-Signature does not match".into()))
}

/// Sign as [`verify_signature`] checks (tests and gateway simulators).
pub fn sign(key: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hand one message to a provider. Ok carries the state it reached.
pub async fn push(
    http: &reqwest::Client,
    settings: &GatewaySettings,
    message: &OutboundSms,
) -> Result<OutboundState, String> {
    if message.text.chars().count() > settings.max_sms_length {
        return Err(format!(
            "the text is longer than the gateway's {} characters",
            settings.max_sms_length
        ));
    }
    let Some(url) = &settings.url else {
        return Err("the gateway has no urlTemplate".into());
    };
    let request = match settings.kind {
        GatewayKind::SmsGate => {
            let body = json!({
                "id": message.uid,
                "textMessage": {"text": message.text},
                "phoneNumbers": [message.recipient],
            });
            let mut r = http.post(url).json(&body);
            if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
                r = r.basic_auth(u, Some(p));
            }
            r
        }
        GatewayKind::Http => generic_request(http, settings, url, message),
        GatewayKind::Cht => return Err("a cht gateway is polled, not pushed to".into()),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if matches!(status.as_u16(), 200..=202) || status.is_success() {
        Ok(match settings.kind {
            // SMS Gate reports sent and delivered through webhooks.
            GatewayKind::SmsGate => OutboundState::Pending,
            _ => OutboundState::Sent,
        })
    } else {
        Err(format!("the gateway answered {status}"))
    }
}

/// DHIS2's generic HTTP gateway: `${text}`, `${recipients}` and each
/// non-header parameter substituted into the configuration template.
fn generic_request(
    http: &reqwest::Client,
    settings: &GatewaySettings,
    url: &str,
    message: &OutboundSms,
) -> reqwest::RequestBuilder {
    let form = settings.content_type == "FORM_URL_ENCODED";
    let enc = |s: &str| -> String {
        if form || settings.use_get || settings.send_url_parameters {
            form_urlencoded::byte_serialize(s.as_bytes()).collect()
        } else {
            match settings.content_type.as_str() {
                "APPLICATION_JSON" => {
                    let quoted = serde_json::to_string(s).unwrap_or_default();
                    quoted[1..quoted.len().saturating_sub(1).max(1)].to_string()
                }
                _ => s.to_string(),
            }
        }
    };
    let default_template = if settings.content_type == "APPLICATION_JSON" {
        r#"{"to": "${recipients}", "text": "${text}", "id": "${id}"}"#.to_string()
    } else {
        "to=${recipients}&text=${text}&id=${id}".to_string()
    };
    let mut body = settings
        .configuration_template
        .clone()
        .unwrap_or(default_template);
    body = body.replace("${text}", &enc(&message.text));
    body = body.replace("${recipients}", &enc(&message.recipient));
    body = body.replace("${id}", &enc(&message.uid));
    let mut headers: Vec<(String, String)> = Vec::new();
    for p in &settings.parameters {
        let value = if p.encode {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(p.value.as_bytes())
        } else {
            p.value.clone()
        };
        if p.header {
            let value =
                if p.key.eq_ignore_ascii_case("authorization") && !value.starts_with("Basic ") {
                    format!("Basic {value}")
                } else {
                    value
                };
            headers.push((p.key.clone(), value));
        } else {
            body = body.replace(&format!("${{{}}}", p.key), &enc(&value));
        }
    }
    let mut request = if settings.use_get {
        let sep = if url.contains('?') { '&' } else { '?' };
        http.get(format!("{url}{sep}{body}"))
    } else if settings.send_url_parameters {
        let sep = if url.contains('?') { '&' } else { '?' };
        http.post(format!("{url}{sep}{body}"))
    } else {
        let content_type = match settings.content_type.as_str() {
            "APPLICATION_JSON" => "application/json",
            "APPLICATION_XML" => "application/xml",
            "TEXT_PLAIN" => "text/plain",
            _ => "application/x-www-form-urlencoded",
        };
        http.post(url)
            .header("Content-Type", content_type)
            .body(body)
    };
    for (k, v) in headers {
        request = request.header(k, v);
    }
    if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
        if !settings
            .parameters
            .iter()
            .any(|p| p.header && p.key.eq_ignore_ascii_case("authorization"))
        {
            request = request.basic_auth(u, Some(p));
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip_and_staleness() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let sig = sign("k3y", b"{\"a\":1}", &now);
        assert!(verify_signature("k3y", b"{\"a\":1}", Some(&now), Some(&sig), 300).is_ok());
        assert!(verify_signature("k3y", b"{\"a\":2}", Some(&now), Some(&sig), 300).is_err());
        assert!(verify_signature("other", b"{\"a\":1}", Some(&now), Some(&sig), 300).is_err());
        let old = "1000000000";
        let sig = sign("k3y", b"x", old);
        assert!(verify_signature("k3y", b"x", Some(old), Some(&sig), 300).is_err());
        assert!(verify_signature("k3y", b"x", None, Some(&sig), 300).is_err());
    }

    #[test]
    fn configurations_are_checked_and_secrets_hidden() {
        let err = GatewaySettings::from_config(&json!({"type": "bulksms"})).unwrap_err();
        assert!(err.to_string().contains("not supported"));
        assert!(GatewaySettings::from_config(&json!({"type": "cht", "username": "u"})).is_err());
        let rec = record_from_payload(
            "abcdefghijk".into(),
            json!({"type": "cht", "name": "Phone", "username": "u", "password": "p"}),
            None,
        )
        .unwrap();
        let view = public_view(&rec);
        assert!(view.get("password").is_none());
        assert_eq!(view["type"], "cht");
        // An update without the password keeps it.
        let updated = record_from_payload(
            "abcdefghijk".into(),
            json!({"type": "cht", "name": "Phone 2", "username": "u"}),
            Some(&rec),
        )
        .unwrap();
        assert_eq!(updated.config["password"], "p");
        let s = GatewaySettings::from_record(&updated).unwrap();
        assert!(s.basic_matches("u", "p"));
        assert!(!s.basic_matches("u", "q"));
        assert_eq!(s.per_minute(), 30);
    }
}
