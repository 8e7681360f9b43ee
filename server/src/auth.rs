//! Who is calling, and what they may do.
//!
//! Every handler that touches data receives a [`Caller`]: the user, their
//! authorities and the org unit subtrees they may capture and view. Services
//! check against it; handlers never decide access themselves.
//!
//! Credentials: HTTP Basic, DHIS2 personal access tokens
//! (`Authorization: ApiToken d2p_…`), and a session cookie for the browser
//! (HttpOnly, SameSite=Strict, with a CSRF token required on writes).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};
use base64::Engine;
use hisa_shared::authority;
use hisa_shared::schema::reference_id;
use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;
use crate::state::{AppState, Services};

pub const SESSION_COOKIE: &str = "HISA_SESSION";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller, as services see them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_uid: String,
    pub username: String,
    pub authorities: BTreeSet<String>,
    /// Roots of the subtrees the caller may enter data for.
    pub capture_roots: Vec<String>,
    /// Roots of the subtrees the caller may read data for (capture roots included).
    pub view_roots: Vec<String>,
}

impl Caller {
    /// Build the caller from the user's metadata body and its roles.
    pub fn from_user(snapshot: &Snapshot, user_uid: &str) -> Option<Caller> {
        let user = snapshot.get_of("users", user_uid)?;
        let refs = |key: &str| -> Vec<String> {
            user.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(reference_id)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut authorities = BTreeSet::new();
        for role in refs("userRoles") {
            if let Some(r) = snapshot.get_of("userRoles", &role) {
                if let Some(list) = r.get("authorities").and_then(Value::as_array) {
                    authorities.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
                }
            }
        }
        let capture_roots = refs("organisationUnits");
        let mut view_roots = refs("dataViewOrganisationUnits");
        for root in &capture_roots {
            if !view_roots.contains(root) {
                view_roots.push(root.clone());
            }
        }
        Some(Caller {
            user_uid: user_uid.to_string(),
            username: user
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            authorities,
            capture_roots,
            view_roots,
        })
    }

    /// The operator at the server's command line: every right, no user row.
    pub fn operator(name: &str) -> Caller {
        Caller {
            user_uid: String::new(),
            username: name.to_string(),
            authorities: [authority::ALL.to_string()].into_iter().collect(),
            capture_roots: vec![],
            view_roots: vec![],
        }
    }

    pub fn is_superuser(&self) -> bool {
        self.authorities.contains(authority::ALL)
    }

    pub fn has(&self, auth: &str) -> bool {
        self.is_superuser() || self.authorities.contains(auth)
    }

    /// Succeeds when the caller holds any of `auths` (or is a superuser).
    pub fn require_any(&self, auths: &[&str]) -> ServerResult<()> {
        if auths.iter().any(|a| self.has(a)) {
            Ok(())
        } else {
            Err(ServerError::Forbidden(format!(
                "You need the authority {} to do this",
                auths.join(" or ")
            )))
        }
    }

    /// Whether the caller may read data of org unit `uid`.
    pub fn can_view(&self, snapshot: &Snapshot, uid: &str) -> bool {
        self.is_superuser() || snapshot.within_any(uid, &self.view_roots)
    }

    /// Whether the caller may write data of org unit `uid`.
    pub fn can_capture(&self, snapshot: &Snapshot, uid: &str) -> bool {
        self.is_superuser() || snapshot.within_any(uid, &self.capture_roots)
    }
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub fn sha256_hex(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62_padded(mut n: u64, width: usize) -> String {
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(BASE62[(n % 62) as usize]);
        n /= 62;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// A new DHIS2 v2 personal access token: `d2p_` + 44 random alphanumerics +
/// their CRC32 in base62, padded to 6.
pub fn new_api_token() -> String {
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..44)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let crc = crc32fast::hash(body.as_bytes());
    format!("d2p_{body}{}", base62_padded(crc as u64, 6))
}

/// Checksum check before any database look-up, as DHIS2 does: a mistyped or
/// invented token costs nothing.
pub fn api_token_checksum_ok(token: &str) -> bool {
    if let Some(rest) = token.strip_prefix("d2p_") {
        if rest.len() != 50 || !rest.is_ascii() {
            return false;
        }
        let (body, check) = rest.split_at(44);
        return base62_padded(crc32fast::hash(body.as_bytes()) as u64, 6) == check;
    }
    if let Some(rest) = token.strip_prefix("d2pat_") {
        if rest.len() != 42 || !rest.is_ascii() {
            return false;
        }
        let (body, check) = rest.split_at(32);
        return format!("{:010}", crc32fast::hash(body.as_bytes())) == check;
    }
    false
}

/// Failed sign-ins per username: after `MAX_FAILURES` within the window the
/// account is locked for the window, as DHIS2's lockout does. Kept per
/// instance; several instances each enforce their own count.
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const MAX_FAILURES: u32 = 5;
const LOCKOUT: Duration = Duration::from_secs(15 * 60);

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl LoginThrottle {
    pub fn check(&self, username: &str) -> ServerResult<()> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, since)) = map.get(&username.to_lowercase()) {
            if *count >= MAX_FAILURES && since.elapsed() < LOCKOUT {
                return Err(ServerError::TooManyAttempts {
                    retry_after_secs: (LOCKOUT - since.elapsed()).as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    pub fn failed(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(username.to_lowercase())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= LOCKOUT {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        entry.1 = Instant::now();
    }

    pub fn succeeded(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&username.to_lowercase());
    }
}

/// Verified Basic credentials, so that each request does not pay for Argon2.
/// Keyed by a hash of the header; entries live a minute.
#[derive(Default)]
pub struct CredentialCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

const CACHE_TTL: Duration = Duration::from_secs(60);

impl CredentialCache {
    fn get(&self, key: &str) -> Option<String> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(uid, _)| uid.clone())
    }

    fn put(&self, key: String, user_uid: String) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        map.insert(key, (user_uid, Instant::now()));
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Check a username and password; the user's UID on success.
pub async fn check_password(
    svc: &Services,
    username: &str,
    password: &str,
) -> ServerResult<String> {
    svc.throttle.check(username)?;
    let credential = svc.store.credential_by_username(username).await?;
    let hash = credential.as_ref().and_then(|c| c.password_hash.clone());
    let password_owned = password.to_string();
    // Verify even for unknown users so that timing does not reveal which exist.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => verify_password(&h, &password_owned),
        None => {
            let _ = verify_password(DUMMY_HASH, &password_owned);
            false
        }
    })
    .await
    .map_err(|e| ServerError::Internal(e.to_string()))?;
    match credential {
        Some(c) if ok && !c.disabled => {
            svc.throttle.succeeded(username);
            Ok(c.user_uid)
        }
        _ => {
            svc.throttle.failed(username);
            Err(ServerError::Unauthorized)
        }
    }
}

/// A valid Argon2 hash of nothing in particular, for constant-time misses.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0JCf/0yZb8zgb0ojf9RE6mQaiW6bp9GVWGNvEhQPOR0";

fn cookie_value(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

async fn authenticate(parts: &Parts, svc: &Services) -> ServerResult<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ServerError::Unauthorized)?;
        let (scheme, credentials) = value.split_once(' ').ok_or(ServerError::Unauthorized)?;
        if scheme.eq_ignore_ascii_case("basic") {
            let key = sha256_hex(value);
            if let Some(uid) = svc.credential_cache.get(&key) {
                return Ok(uid);
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .map_err(|_| ServerError::Unauthorized)?;
            let decoded = String::from_utf8(decoded).map_err(|_| ServerError::Unauthorized)?;
            let (username, password) = decoded.split_once(':').ok_or(ServerError::Unauthorized)?;
            let uid = check_password(svc, username, password).await?;
            svc.credential_cache.put(key, uid.clone());
            let _ = svc
                .store
                .record_login(&uid, OffsetDateTime::now_utc())
                .await;
            return Ok(uid);
        }
        if scheme.eq_ignore_ascii_case("apitoken") {
            let token = credentials.trim();
            if !api_token_checksum_ok(token) {
                return Err(ServerError::Unauthorized);
            }
            let record = svc
                .store
                .api_token_by_hash(&sha256_hex(token))
                .await?
                .ok_or(ServerError::Unauthorized)?;
            if record
                .expires_at
                .is_some_and(|e| e < OffsetDateTime::now_utc())
            {
                return Err(ServerError::Unauthorized);
            }
            return Ok(record.user_uid);
        }
        return Err(ServerError::Unauthorized);
    }
    if let Some(session) = cookie_value(parts, SESSION_COOKIE) {
        let record = svc
            .store
            .session_by_hash(&sha256_hex(&session))
            .await?
            .ok_or(ServerError::Unauthorized)?;
        if record.expires_at < OffsetDateTime::now_utc() {
            return Err(ServerError::Unauthorized);
        }
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if sent.is_empty() || sent != record.csrf_token {
                return Err(ServerError::Forbidden(
                    "A write with a session cookie needs the X-CSRF-Token header".into(),
                ));
            }
        }
        return Ok(record.user_uid);
    }
    Err(ServerError::Unauthorized)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ServerResult<Caller> {
        let svc = state.services()?;
        let uid = authenticate(parts, &svc).await?;
        let snapshot = svc.metadata.snapshot().await?;
        let user = snapshot
            .get_of("users", &uid)
            .ok_or(ServerError::Unauthorized)?;
        if user.get("disabled").and_then(Value::as_bool) == Some(true) {
            return Err(ServerError::Unauthorized);
        }
        Caller::from_user(&snapshot, &uid).ok_or(ServerError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_a_valid_checksum() {
        let t = new_api_token();
        assert!(t.starts_with("d2p_") && t.len() == 54);
        assert!(api_token_checksum_ok(&t));
        let mut forged = t.clone();
        forged.replace_range(10..11, if &t[10..11] == "A" { "B" } else { "A" });
        assert!(!api_token_checksum_ok(&forged));
        assert!(!api_token_checksum_ok("d2p_short"));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("district");
        assert!(verify_password(&h, "district"));
        assert!(!verify_password(&h, "District"));
        assert!(!verify_password("garbage", "district"));
        assert!(!verify_password(DUMMY_HASH, "district"));
    }

    #[test]
    fn throttle_locks_after_repeated_failures() {
        let t = LoginThrottle::default();
        for _ in 0..MAX_FAILURES {
            assert!(t.check("amina").is_ok());
            t.failed("amina");
        }
        assert!(matches!(
            t.check("Amina"),
            Err(ServerError::TooManyAttempts { .. })
        ));
        assert!(t.check("baraka").is_ok());
    }
}
