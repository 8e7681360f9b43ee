//! The phone's local store: SQLite, every payload sealed with AES-256-GCM, locked by a PIN.
//!
//! Key hierarchy: a random 256-bit data key (DEK) seals records; the database only holds
//! the DEK wrapped under a key derived from the PIN with Argon2id. A PIN change therefore
//! re-wraps 32 bytes instead of re-encrypting every record.
//!
//! Threat model, so nobody over-trusts this module:
//! - It protects health data against someone holding the phone who goes through the app
//!   (PIN prompt, attempt limit, idle lock) and against casual reads of the database file
//!   (nothing but collection names, record keys, timestamps and sizes is in clear).
//! - PINs are short. Anyone who copies the database file can brute-force a 4-6 digit PIN
//!   offline whatever the Argon2 cost; the attempt counter lives in the same file and cannot
//!   stop that. Against file-level attackers we rely on Android's app sandbox and file-based
//!   encryption.
//! - Wiping overwrites freed SQLite space (`secure_delete`), VACUUMs and truncates the WAL,
//!   but flash wear levelling may keep old blocks physically; destroying the wrapped DEK is
//!   what really makes the leftovers unreadable.
//!
//! One `SealedStore` per database file is expected: each handle caches its lock state.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const SCHEMA_VERSION: i64 = 1;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const SALT_LEN: usize = 16;
/// Refuse larger Argon2 memory costs: a corrupted or hostile meta row must not be able to
/// make a cheap phone allocate gigabytes and get killed on every unlock.
const MAX_KDF_MEMORY_KIB: u32 = 1 << 20;

// Domain-separation labels, so a ciphertext sealed for one purpose never opens as another.
const DEK_AAD: &[u8] = b"hisa-store/v1/dek";
const PROFILE_AAD: &[u8] = b"hisa-store/v1/pin-profile";
const RECORD_AAD_LABEL: &[u8] = b"hisa-store/v1/record\0";

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    wiped INTEGER NOT NULL DEFAULT 0,
    wrapped_dek BLOB,
    dek_nonce BLOB,
    kdf_salt BLOB,
    kdf_memory_kib INTEGER,
    kdf_iterations INTEGER,
    kdf_parallelism INTEGER,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    max_failed_attempts INTEGER,
    pin_min_length INTEGER,
    pin_digits_only INTEGER,
    pin_reject_trivial INTEGER,
    idle_lock_secs INTEGER,
    needs_pin_change INTEGER NOT NULL DEFAULT 0,
    pin_profile_nonce BLOB,
    pin_profile BLOB
);
CREATE TABLE IF NOT EXISTS record (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (collection, key)
);
";

/// Source of wall-clock time for the idle lock; injectable so tests need not sleep.
pub trait Clock: Send + Sync {
    fn now_millis(&self) -> u64;
}

/// Wall-clock time. Deliberately not a monotonic clock: on Android the monotonic clock stops
/// while the phone sleeps, so a phone left in a pocket for an hour would never idle-lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// PIN rules. The server may push a stricter policy with [`SealedStore::set_policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinPolicy {
    /// Minimum length in characters (not bytes).
    pub min_length: usize,
    /// Only ASCII digits `0-9`; the PIN screen must use an ASCII numeric keypad, because
    /// digits from other scripts are different bytes and would derive a different key.
    pub digits_only: bool,
    /// Reject a single repeated character and ascending/descending runs (1234, 4321, 7890).
    pub reject_trivial: bool,
    /// Consecutive wrong PINs after which the store wipes itself. Must be at least 1.
    pub max_failed_attempts: u32,
}

impl Default for PinPolicy {
    fn default() -> Self {
        PinPolicy {
            min_length: 4,
            digits_only: true,
            reject_trivial: true,
            max_failed_attempts: 5,
        }
    }
}

impl PinPolicy {
    /// Checks a candidate PIN, e.g. for live feedback on the PIN-setup screen.
    /// The error message never contains the PIN.
    pub fn check(&self, pin: &str) -> Result<(), StoreError> {
        self.check_traits(&PinTraits::of(pin))
            .map_err(StoreError::WeakPin)
    }

    fn check_traits(&self, pin: &PinTraits) -> Result<(), String> {
        if pin.length == 0 {
            return Err("PIN must not be empty".into());
        }
        if pin.length < self.min_length {
            return Err(format!(
                "PIN must be at least {} characters long",
                self.min_length
            ));
        }
        if self.digits_only && !pin.all_digits {
            return Err("PIN must contain digits only".into());
        }
        if self.reject_trivial && pin.trivial {
            return Err("PIN is too easy to guess (repeated or sequential digits)".into());
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.max_failed_attempts == 0 {
            return Err(StoreError::InvalidConfig(
                "max_failed_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What the policy needs to know about a PIN, kept sealed under the DEK so that a policy
/// pushed while the user is logged in can be checked against the current PIN without
/// storing the PIN or leaking its length in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PinTraits {
    length: usize,
    all_digits: bool,
    trivial: bool,
}

impl PinTraits {
    fn of(pin: &str) -> Self {
        PinTraits {
            length: pin.chars().count(),
            all_digits: pin.chars().all(|c| c.is_ascii_digit()),
            trivial: is_trivial(pin),
        }
    }
}

fn is_trivial(pin: &str) -> bool {
    let mut chars = pin.chars();
    let Some(first) = chars.next() else {
        return true;
    };
    if chars.all(|c| c == first) {
        return true;
    }
    let steps = || {
        pin.chars()
            .zip(pin.chars().skip(1))
            .map(|(a, b)| step(a, b))
    };
    steps().all(|s| s == 1) || steps().all(|s| s == -1)
}

/// Distance between neighbouring characters; digits wrap around so that 7890 and 0987,
/// which are runs on a phone keypad, count as sequences too.
fn step(a: char, b: char) -> i64 {
    match (a.to_digit(10), b.to_digit(10)) {
        (Some(x), Some(y)) => match (i64::from(y) - i64::from(x)).rem_euclid(10) {
            1 => 1,
            9 => -1,
            _ => 0,
        },
        _ => i64::from(u32::from(b)) - i64::from(u32::from(a)),
    }
}

/// Argon2id cost for deriving the key-encryption key from the PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id baseline (19 MiB, t=2, p=1): well under a second on a cheap phone.
    fn default() -> Self {
        KdfParams {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Minimum Argon2 cost, so tests run in milliseconds. Never use it on a device.
    pub fn fast_for_tests() -> Self {
        KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, String> {
        if self.memory_kib > MAX_KDF_MEMORY_KIB {
            return Err(format!(
                "Argon2 memory {} KiB exceeds the {MAX_KDF_MEMORY_KIB} KiB limit",
                self.memory_kib
            ));
        }
        let params = Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong PIN; {attempts_left} attempt(s) left before the local data is erased")]
    WrongPin { attempts_left: u32 },
    #[error("the local store has been wiped")]
    Wiped,
    #[error("the store is locked; enter the PIN to unlock it")]
    Locked,
    #[error("PIN not accepted: {0}")]
    WeakPin(String),
    #[error("the local store has not been set up on this device")]
    NotInitialized,
    #[error("the local store is already set up on this device")]
    AlreadyInitialized,
    #[error("the local store is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("could not convert value to or from JSON: {0}")]
    Serde(#[from] serde_json::Error),
}

fn corrupt(msg: impl Into<String>) -> StoreError {
    StoreError::Corrupt(msg.into())
}

/// A 256-bit key on the heap, so moving its owner around does not leave copies on the
/// stack, and zeroized when dropped.
struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    fn zeroed() -> Self {
        SecretKey(Box::new([0u8; KEY_LEN]))
    }

    fn random() -> Self {
        let mut key = Self::zeroed();
        OsRng.fill_bytes(&mut key.0[..]);
        key
    }

    // The AES key schedule inside `Aes256Gcm` is only zeroized with the `aes/zeroize`
    // feature, so ciphers are built per operation and never kept beyond it.
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// Seals with a fresh random nonce. One DEK sees far fewer than the 2^32 messages at which
/// random 96-bit nonces would become a collision risk.
fn seal(
    cipher: &Aes256Gcm,
    aad: &[u8],
    msg: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), StoreError> {
    let nonce = random_bytes::<NONCE_LEN>();
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg, aad })
        .map_err(|_| StoreError::InvalidConfig("value too large to encrypt".into()))?;
    Ok((nonce, ciphertext))
}

/// `None` means authentication failed: wrong key, tampered bytes or a row moved elsewhere.
fn open_sealed(
    cipher: &Aes256Gcm,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Binds a record to its place: moving a row to another key or collection breaks the tag.
/// The collection is length-prefixed so ("ab", "c") and ("a", "bc") differ.
fn record_aad(collection: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RECORD_AAD_LABEL.len() + 8 + collection.len() + key.len());
    aad.extend_from_slice(RECORD_AAD_LABEL);
    aad.extend_from_slice(&(collection.len() as u64).to_le_bytes());
    aad.extend_from_slice(collection.as_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad
}

fn derive_kek(kdf: &KdfParams, pin: &str, salt: &[u8; SALT_LEN]) -> Result<SecretKey, StoreError> {
    let argon = kdf.argon2().map_err(StoreError::InvalidConfig)?;
    let mut kek = SecretKey::zeroed();
    argon
        .hash_password_into(pin.as_bytes(), salt, &mut kek.0[..])
        .map_err(|e| StoreError::InvalidConfig(format!("key derivation failed: {e}")))?;
    Ok(kek)
}

/// The DEK wrapped under a PIN-derived key, plus what is needed to re-derive that key.
struct WrappedKey {
    wrapped: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    salt: [u8; SALT_LEN],
    kdf: KdfParams,
}

impl WrappedKey {
    fn new(dek: &SecretKey, pin: &str, kdf: KdfParams) -> Result<Self, StoreError> {
        let salt = random_bytes::<SALT_LEN>();
        let kek = derive_kek(&kdf, pin, &salt)?;
        let (nonce, wrapped) = seal(&kek.cipher(), DEK_AAD, &dek.0[..])?;
        Ok(WrappedKey {
            wrapped,
            nonce,
            salt,
            kdf,
        })
    }

    /// `Ok(None)` for a wrong PIN. A damaged wrapped key looks the same, which is
    /// unavoidable: without the right key the two cannot be told apart.
    fn unwrap_with(&self, pin: &str) -> Result<Option<SecretKey>, StoreError> {
        let kek = derive_kek(&self.kdf, pin, &self.salt)?;
        let Some(plain) = open_sealed(&kek.cipher(), DEK_AAD, &self.nonce, &self.wrapped) else {
            return Ok(None);
        };
        if plain.len() != KEY_LEN {
            return Err(corrupt("unwrapped data key has the wrong length"));
        }
        let mut dek = SecretKey::zeroed();
        dek.0.copy_from_slice(&plain);
        Ok(Some(dek))
    }
}

struct Meta {
    key: WrappedKey,
    failed_attempts: u32,
    policy: PinPolicy,
    idle_lock_secs: u64,
    needs_pin_change: bool,
    profile: Option<([u8; NONCE_LEN], Vec<u8>)>,
}

enum MetaState {
    Absent,
    Wiped,
    Active(Box<Meta>),
}

const META_COLUMNS: &str = "schema_version, wiped, wrapped_dek, dek_nonce, kdf_salt, \
    kdf_memory_kib, kdf_iterations, kdf_parallelism, failed_attempts, max_failed_attempts, \
    pin_min_length, pin_digits_only, pin_reject_trivial, idle_lock_secs, needs_pin_change, \
    pin_profile_nonce, pin_profile";
const META_COLUMN_COUNT: usize = 17;

/// A column's value copied out of SQLite without trusting its declared type. Not
/// `rusqlite::types::Value`: converting TEXT holding invalid UTF-8 into it panics, and
/// tampered rows must give `Corrupt`, not a crash or a conversion error that callers would
/// mistake for an I/O problem.
enum Column {
    Null,
    Int(i64),
    Blob(Vec<u8>),
    Other,
}

impl Column {
    fn read(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Column> {
        Ok(match row.get_ref(idx)? {
            ValueRef::Null => Column::Null,
            ValueRef::Integer(i) => Column::Int(i),
            ValueRef::Blob(b) => Column::Blob(b.to_vec()),
            ValueRef::Real(_) | ValueRef::Text(_) => Column::Other,
        })
    }
}

struct MetaRow(Vec<Column>);

impl MetaRow {
    fn take(&mut self, idx: usize) -> Column {
        self.0
            .get_mut(idx)
            .map(|v| std::mem::replace(v, Column::Null))
            .unwrap_or(Column::Null)
    }

    fn int(&mut self, idx: usize, name: &str) -> Result<i64, StoreError> {
        match self.take(idx) {
            Column::Int(i) => Ok(i),
            _ => Err(corrupt(format!("meta.{name} is missing or not an integer"))),
        }
    }

    fn u32(&mut self, idx: usize, name: &str) -> Result<u32, StoreError> {
        u32::try_from(self.int(idx, name)?)
            .map_err(|_| corrupt(format!("meta.{name} is out of range")))
    }

    fn flag(&mut self, idx: usize, name: &str) -> Result<bool, StoreError> {
        Ok(self.int(idx, name)? != 0)
    }

    fn opt_blob(&mut self, idx: usize, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.take(idx) {
            Column::Null => Ok(None),
            Column::Blob(b) => Ok(Some(b)),
            _ => Err(corrupt(format!("meta.{name} is not a blob"))),
        }
    }

    fn blob(&mut self, idx: usize, name: &str) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(idx, name)?
            .ok_or_else(|| corrupt(format!("meta.{name} is missing")))
    }
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    <[u8; N]>::try_from(bytes).map_err(|_| corrupt(format!("{what} has the wrong length")))
}

fn read_meta(conn: &Connection) -> Result<MetaState, StoreError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(MetaState::Absent);
    }
    let row = conn
        .query_row(
            &format!("SELECT {META_COLUMNS} FROM meta WHERE id = 1"),
            [],
            |r| (0..META_COLUMN_COUNT).map(|i| Column::read(r, i)).collect(),
        )
        .optional()?;
    let Some(values) = row else {
        return Ok(MetaState::Absent);
    };
    let mut row = MetaRow(values);
    if row.flag(1, "wiped")? {
        return Ok(MetaState::Wiped);
    }
    let version = row.int(0, "schema_version")?;
    if version != SCHEMA_VERSION {
        return Err(corrupt(format!("unsupported schema version {version}")));
    }
    let wrapped = row.blob(2, "wrapped_dek")?;
    let nonce = fixed(&row.blob(3, "dek_nonce")?, "meta.dek_nonce")?;
    let salt = fixed(&row.blob(4, "kdf_salt")?, "meta.kdf_salt")?;
    let kdf = KdfParams {
        memory_kib: row.u32(5, "kdf_memory_kib")?,
        iterations: row.u32(6, "kdf_iterations")?,
        parallelism: row.u32(7, "kdf_parallelism")?,
    };
    // Checked here so a bad value is reported as corruption before an attempt is counted.
    kdf.argon2().map_err(StoreError::Corrupt)?;
    let failed_attempts = row.u32(8, "failed_attempts")?;
    let policy = PinPolicy {
        max_failed_attempts: row.u32(9, "max_failed_attempts")?,
        min_length: usize::try_from(row.int(10, "pin_min_length")?)
            .map_err(|_| corrupt("meta.pin_min_length is out of range"))?,
        digits_only: row.flag(11, "pin_digits_only")?,
        reject_trivial: row.flag(12, "pin_reject_trivial")?,
    };
    policy
        .validate()
        .map_err(|_| corrupt("meta.max_failed_attempts is zero"))?;
    let idle_lock_secs = u64::try_from(row.int(13, "idle_lock_secs")?)
        .map_err(|_| corrupt("meta.idle_lock_secs is negative"))?;
    let needs_pin_change = row.flag(14, "needs_pin_change")?;
    let profile = match (
        row.opt_blob(15, "pin_profile_nonce")?,
        row.opt_blob(16, "pin_profile")?,
    ) {
        (Some(n), Some(c)) => Some((fixed(&n, "meta.pin_profile_nonce")?, c)),
        _ => None,
    };
    Ok(MetaState::Active(Box::new(Meta {
        key: WrappedKey {
            wrapped,
            nonce,
            salt,
            kdf,
        },
        failed_attempts,
        policy,
        idle_lock_secs,
        needs_pin_change,
        profile,
    })))
}

fn to_i64<T: TryInto<i64>>(v: T, what: &str) -> Result<i64, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::InvalidConfig(format!("{what} is too large")))
}

/// Opens without SQLite's URI handling so a path is always taken literally.
fn connect(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    // WAL keeps writers from blocking the UI's reads. A filesystem without shared-memory
    // support falls back to a rollback journal, which is still correct, so the answer is
    // not checked.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    // FULL syncs the WAL on every commit. Without it a power cut (pulling the battery right
    // after a wrong PIN) could roll back the attempt counter, and a CHW could lose the last
    // submission they saved.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let secure_delete: i64 =
        conn.pragma_update_and_check(None, "secure_delete", 1, |r| r.get(0))?;
    if secure_delete != 1 {
        return Err(StoreError::InvalidConfig(
            "SQLite refused to enable secure_delete".into(),
        ));
    }
    Ok(conn)
}

/// Drops WAL frames that still hold superseded pages (old ciphertexts, an old wrapped DEK).
/// Best effort: a concurrent reader can keep the WAL alive, which the caller cannot fix.
fn truncate_wal(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn upsert_record(
    conn: &Connection,
    collection: &str,
    key: &str,
    nonce: &[u8],
    ciphertext: &[u8],
    updated_at: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO record (collection, key, nonce, ciphertext, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (collection, key) DO UPDATE SET
             nonce = excluded.nonce,
             ciphertext = excluded.ciphertext,
             updated_at = excluded.updated_at",
        params![collection, key, nonce, ciphertext, updated_at],
    )?;
    Ok(())
}

fn sealed_profile(dek: &SecretKey, pin: &str) -> Result<([u8; NONCE_LEN], Vec<u8>), StoreError> {
    let plain = Zeroizing::new(serde_json::to_vec(&PinTraits::of(pin))?);
    seal(&dek.cipher(), PROFILE_AAD, &plain)
}

/// The encrypted, PIN-locked local store. Opened locked; see the module docs for what it
/// does and does not protect against.
pub struct SealedStore {
    conn: Connection,
    clock: Arc<dyn Clock>,
    dek: Option<SecretKey>,
    last_activity_ms: u64,
    policy: PinPolicy,
    idle_lock_secs: u64,
    failed_attempts: u32,
    needs_pin_change: bool,
    wiped: bool,
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore")
            .field("locked", &self.is_locked())
            .field("wiped", &self.wiped)
            .field("failed_attempts", &self.failed_attempts)
            .field("policy", &self.policy)
            .field("idle_lock_secs", &self.idle_lock_secs)
            .field("needs_pin_change", &self.needs_pin_change)
            .finish_non_exhaustive()
    }
}

impl SealedStore {
    /// Sets up a new store and returns it unlocked. Also re-provisions a store that was
    /// wiped. `idle_lock_secs == 0` disables the idle lock.
    pub fn create(
        path: &Path,
        pin: &str,
        policy: PinPolicy,
        kdf: KdfParams,
        idle_lock_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<SealedStore, StoreError> {
        policy.validate()?;
        policy.check(pin)?;
        kdf.argon2().map_err(StoreError::InvalidConfig)?;
        let idle_i64 = to_i64(idle_lock_secs, "idle_lock_secs")?;
        let min_length_i64 = to_i64(policy.min_length, "min_length")?;

        let mut conn = connect(path, true)?;
        // Fail before spending a second on Argon2 when there is nothing to do.
        if let MetaState::Active(_) = read_meta(&conn)? {
            return Err(StoreError::AlreadyInitialized);
        }
        let dek = SecretKey::random();
        let wrapped = WrappedKey::new(&dek, pin, kdf)?;
        let (profile_nonce, profile) = sealed_profile(&dek, pin)?;

        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA_SQL)?;
        // Re-checked under the write lock in case another process initialised it meanwhile.
        if let MetaState::Active(_) = read_meta(&tx)? {
            return Err(StoreError::AlreadyInitialized);
        }
        // Leftovers from a wiped or foreign store would be undecryptable under the new DEK.
        tx.execute("DELETE FROM record", [])?;
        tx.execute("DELETE FROM meta", [])?;
        tx.execute(
            &format!(
                "INSERT INTO meta (id, {META_COLUMNS})
                 VALUES (1, ?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, ?12, 0, ?13, ?14)"
            ),
            params![
                SCHEMA_VERSION,
                wrapped.wrapped,
                &wrapped.nonce[..],
                &wrapped.salt[..],
                kdf.memory_kib,
                kdf.iterations,
                kdf.parallelism,
                policy.max_failed_attempts,
                min_length_i64,
                policy.digits_only,
                policy.reject_trivial,
                idle_i64,
                &profile_nonce[..],
                profile,
            ],
        )?;
        tx.commit()?;

        let now = clock.now_millis();
        Ok(SealedStore {
            conn,
            clock,
            dek: Some(dek),
            last_activity_ms: now,
            policy,
            idle_lock_secs,
            failed_attempts: 0,
            needs_pin_change: false,
            wiped: false,
        })
    }

    /// Opens an existing store, locked. Never creates a file.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<SealedStore, StoreError> {
        if matches!(path.try_exists(), Ok(false)) {
            return Err(StoreError::NotInitialized);
        }
        let conn = connect(path, false)?;
        let meta = match read_meta(&conn)? {
            MetaState::Absent => return Err(StoreError::NotInitialized),
            MetaState::Wiped => return Err(StoreError::Wiped),
            MetaState::Active(meta) => meta,
        };
        Ok(SealedStore {
            conn,
            clock,
            dek: None,
            last_activity_ms: 0,
            policy: meta.policy,
            idle_lock_secs: meta.idle_lock_secs,
            failed_attempts: meta.failed_attempts,
            needs_pin_change: meta.needs_pin_change,
            wiped: false,
        })
    }

    /// Whether a usable store exists at `path`; a wiped store counts as not initialized, so
    /// the app goes back to set-up. Never creates a file.
    pub fn is_initialized(path: &Path) -> Result<bool, StoreError> {
        if matches!(path.try_exists(), Ok(false)) {
            return Ok(false);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(matches!(read_meta(&conn)?, MetaState::Active(_)))
    }

    /// Unlocks with the PIN. A wrong PIN counts towards the wipe limit even if the store
    /// was already unlocked, and leaves it locked.
    pub fn unlock(&mut self, pin: &str) -> Result<(), StoreError> {
        self.lock();
        let dek = self.authenticate(pin)?;
        self.dek = Some(dek);
        self.last_activity_ms = self.clock.now_millis();
        Ok(())
    }

    /// Forgets the data key; the key bytes are zeroized when dropped.
    pub fn lock(&mut self) {
        self.dek = None;
    }

    /// True when locked, wiped, or idle for longer than the idle-lock period.
    pub fn is_locked(&self) -> bool {
        self.wiped || self.dek.is_none() || self.idle_expired(self.clock.now_millis())
    }

    /// Changes the PIN. The new PIN must satisfy the current policy (checked first, so a
    /// rejected new PIN costs no attempt); a wrong old PIN counts towards the wipe limit.
    /// Works on a locked store and leaves it unlocked.
    pub fn change_pin(&mut self, old: &str, new: &str) -> Result<(), StoreError> {
        if self.wiped {
            return Err(StoreError::Wiped);
        }
        self.policy.check(new)?;
        let (dek, kdf) = self.authenticate_with_kdf(old)?;
        let wrapped = WrappedKey::new(&dek, new, kdf)?;
        let (profile_nonce, profile) = sealed_profile(&dek, new)?;
        let changed = self.conn.execute(
            "UPDATE meta SET wrapped_dek = ?1, dek_nonce = ?2, kdf_salt = ?3,
                 pin_profile_nonce = ?4, pin_profile = ?5, needs_pin_change = 0,
                 failed_attempts = 0
             WHERE id = 1 AND wiped = 0",
            params![
                wrapped.wrapped,
                &wrapped.nonce[..],
                &wrapped.salt[..],
                &profile_nonce[..],
                profile,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotInitialized);
        }
        // The PIN may be changing because the old one leaked; the DEK wrapped under it must
        // not survive in the WAL.
        truncate_wal(&self.conn);
        self.needs_pin_change = false;
        self.failed_attempts = 0;
        self.dek = Some(dek);
        self.last_activity_ms = self.clock.now_millis();
        Ok(())
    }

    /// Applies a device policy from the server. Requires an unlocked store. A PIN rule the
    /// current PIN breaks does not lock the user out: it sets [`Self::needs_pin_change`] and
    /// is enforced at the next [`Self::change_pin`]. The attempt limit and idle lock apply
    /// at once; `idle_lock_secs == 0` disables the idle lock.
    pub fn set_policy(&mut self, policy: PinPolicy, idle_lock_secs: u64) -> Result<(), StoreError> {
        policy.validate()?;
        let idle_i64 = to_i64(idle_lock_secs, "idle_lock_secs")?;
        let min_length_i64 = to_i64(policy.min_length, "min_length")?;
        let cipher = self.active_cipher()?;
        let meta = self.current_meta()?;
        let (nonce, sealed) = meta
            .profile
            .ok_or_else(|| corrupt("PIN profile is missing"))?;
        let plain = open_sealed(&cipher, PROFILE_AAD, &nonce, &sealed)
            .ok_or_else(|| corrupt("PIN profile failed authentication"))?;
        let traits: PinTraits =
            serde_json::from_slice(&plain).map_err(|_| corrupt("PIN profile is unreadable"))?;
        let needs_pin_change = policy.check_traits(&traits).is_err();
        let changed = self.conn.execute(
            "UPDATE meta SET max_failed_attempts = ?1, pin_min_length = ?2, pin_digits_only = ?3,
                 pin_reject_trivial = ?4, idle_lock_secs = ?5, needs_pin_change = ?6
             WHERE id = 1 AND wiped = 0",
            params![
                policy.max_failed_attempts,
                min_length_i64,
                policy.digits_only,
                policy.reject_trivial,
                idle_i64,
                needs_pin_change,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotInitialized);
        }
        self.policy = policy;
        self.idle_lock_secs = idle_lock_secs;
        self.needs_pin_change = needs_pin_change;
        Ok(())
    }

    /// The current PIN breaks the policy in force; the app should prompt for a new one.
    pub fn needs_pin_change(&self) -> bool {
        self.needs_pin_change
    }

    pub fn policy(&self) -> PinPolicy {
        self.policy
    }

    pub fn idle_lock_secs(&self) -> u64 {
        self.idle_lock_secs
    }

    /// Consecutive wrong PINs so far, as persisted in the database.
    pub fn failed_attempts(&self) -> u32 {
        self.failed_attempts
    }

    pub fn put<T: Serialize>(
        &mut self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let cipher = self.active_cipher()?;
        let plain = Zeroizing::new(serde_json::to_vec(value)?);
        let (nonce, ciphertext) = seal(&cipher, &record_aad(collection, key), &plain)?;
        upsert_record(
            &self.conn,
            collection,
            key,
            &nonce,
            &ciphertext,
            self.now_i64(),
        )
    }

    /// Stores several records atomically, e.g. all parts of one submission: either all are
    /// saved or none. A key repeated in `items` ends with its last value.
    pub fn put_many(
        &mut self,
        items: &[(&str, &str, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let cipher = self.active_cipher()?;
        let now = self.now_i64();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (collection, key, value) in items {
            let plain = Zeroizing::new(serde_json::to_vec(value)?);
            let (nonce, ciphertext) = seal(&cipher, &record_aad(collection, key), &plain)?;
            upsert_record(&tx, collection, key, &nonce, &ciphertext, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `Corrupt` when the stored bytes fail authentication (tampering, or a row moved from
    /// another key); never returns undetected garbage.
    pub fn get<T: DeserializeOwned>(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let cipher = self.active_cipher()?;
        let row: Option<(Column, Column)> = self
            .conn
            .query_row(
                "SELECT nonce, ciphertext FROM record WHERE collection = ?1 AND key = ?2",
                params![collection, key],
                |r| Ok((Column::read(r, 0)?, Column::read(r, 1)?)),
            )
            .optional()?;
        let Some((nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let bad = || {
            corrupt(format!(
                "record {collection:?}/{key:?} failed authentication"
            ))
        };
        let (Column::Blob(nonce), Column::Blob(ciphertext)) = (nonce, ciphertext) else {
            return Err(bad());
        };
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce.as_slice()).map_err(|_| bad())?;
        let plain = open_sealed(&cipher, &record_aad(collection, key), &nonce, &ciphertext)
            .ok_or_else(bad)?;
        // serde_json's messages can quote the offending value, i.e. health data that would
        // end up in logs; keep only the position and category.
        serde_json::from_slice(&plain).map(Some).map_err(|e| {
            StoreError::Serde(<serde_json::Error as serde::de::Error>::custom(format!(
                "record {collection:?}/{key:?} does not match the requested type \
                 ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )))
        })
    }

    /// Returns whether the record existed.
    pub fn delete(&mut self, collection: &str, key: &str) -> Result<bool, StoreError> {
        self.ensure_active()?;
        let n = self.conn.execute(
            "DELETE FROM record WHERE collection = ?1 AND key = ?2",
            params![collection, key],
        )?;
        Ok(n > 0)
    }

    /// Keys of a collection in ascending order. Keys are stored in clear but still need an
    /// unlocked store, so a locked phone does not reveal what it holds.
    pub fn list_keys(&mut self, collection: &str) -> Result<Vec<String>, StoreError> {
        self.ensure_active()?;
        let mut stmt = self
            .conn
            .prepare("SELECT key FROM record WHERE collection = ?1 ORDER BY key")?;
        let keys = stmt
            .query_map([collection], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }

    /// Erases everything, locked or not (a server's remote-wipe order needs no PIN).
    /// Afterwards this handle answers `Wiped`, `open` answers `Wiped` and `is_initialized`
    /// false. Calling it again repeats the wipe, so a wipe interrupted by an I/O error can
    /// be retried.
    pub fn wipe(&mut self) -> Result<(), StoreError> {
        self.wipe_storage()
    }

    fn mark_wiped(&mut self) {
        self.dek = None;
        self.wiped = true;
        self.failed_attempts = 0;
        self.needs_pin_change = false;
    }

    fn wipe_storage(&mut self) -> Result<(), StoreError> {
        // First, so that even if the SQL below fails this handle never serves data again.
        self.mark_wiped();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA_SQL)?;
        tx.execute("DELETE FROM record", [])?;
        // Replacing the row, not nulling columns, leaves no policy or salt behind; the
        // tombstone lets `open` say "wiped" rather than "never set up".
        tx.execute("DELETE FROM meta", [])?;
        tx.execute(
            "INSERT INTO meta (id, schema_version, wiped) VALUES (1, ?1, 1)",
            [SCHEMA_VERSION],
        )?;
        tx.commit()?;
        // secure_delete has zeroed the freed cells; VACUUM drops the freed pages from the
        // file and the checkpoint discards WAL frames still holding the old pages.
        self.conn.execute_batch("VACUUM")?;
        truncate_wal(&self.conn);
        Ok(())
    }

    fn idle_expired(&self, now: u64) -> bool {
        // Either direction: a clock moved back by more than the window is treated as idle,
        // so changing the phone's time cannot keep a session open.
        self.idle_lock_secs != 0
            && now.abs_diff(self.last_activity_ms) >= self.idle_lock_secs.saturating_mul(1000)
    }

    fn ensure_active(&mut self) -> Result<(), StoreError> {
        self.active_cipher().map(drop)
    }

    fn active_cipher(&mut self) -> Result<Aes256Gcm, StoreError> {
        if self.wiped {
            return Err(StoreError::Wiped);
        }
        let now = self.clock.now_millis();
        if self.idle_expired(now) {
            self.lock();
        }
        let cipher = self.dek.as_ref().ok_or(StoreError::Locked)?.cipher();
        self.last_activity_ms = now;
        Ok(cipher)
    }

    fn now_i64(&self) -> i64 {
        i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX)
    }

    fn current_meta(&mut self) -> Result<Box<Meta>, StoreError> {
        match read_meta(&self.conn)? {
            MetaState::Absent => Err(StoreError::NotInitialized),
            MetaState::Wiped => {
                self.mark_wiped();
                Err(StoreError::Wiped)
            }
            MetaState::Active(meta) => Ok(meta),
        }
    }

    fn authenticate(&mut self, pin: &str) -> Result<SecretKey, StoreError> {
        self.authenticate_with_kdf(pin).map(|(dek, _)| dek)
    }

    /// Checks a PIN against the wrapped DEK under the attempt limit.
    ///
    /// The counter is incremented and committed *before* the check and reset only after a
    /// success, so killing the app (or pulling the battery) once the answer is visible
    /// cannot undo a wrong guess. A count already at the limit here means the previous
    /// check never finished, so nothing was learned from it; the guess is still allowed,
    /// and if wrong the store is wiped.
    fn authenticate_with_kdf(&mut self, pin: &str) -> Result<(SecretKey, KdfParams), StoreError> {
        if self.wiped {
            return Err(StoreError::Wiped);
        }
        let state = {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state = read_meta(&tx)?;
            if let MetaState::Active(_) = state {
                tx.execute(
                    "UPDATE meta SET failed_attempts = failed_attempts + 1 WHERE id = 1",
                    [],
                )?;
            }
            tx.commit()?;
            state
        };
        let meta = match state {
            MetaState::Absent => return Err(StoreError::NotInitialized),
            MetaState::Wiped => {
                self.mark_wiped();
                return Err(StoreError::Wiped);
            }
            MetaState::Active(meta) => meta,
        };
        let attempts = meta.failed_attempts.saturating_add(1);
        self.failed_attempts = attempts;
        self.policy = meta.policy;
        self.idle_lock_secs = meta.idle_lock_secs;
        self.needs_pin_change = meta.needs_pin_change;

        match meta.key.unwrap_with(pin)? {
            Some(dek) => {
                self.conn
                    .execute("UPDATE meta SET failed_attempts = 0 WHERE id = 1", [])?;
                self.failed_attempts = 0;
                Ok((dek, meta.key.kdf))
            }
            None if attempts >= meta.policy.max_failed_attempts => {
                self.wipe_storage()?;
                Err(StoreError::Wiped)
            }
            None => Err(StoreError::WrongPin {
                attempts_left: meta.policy.max_failed_attempts - attempts,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tempfile::TempDir;

    const PIN: &str = "2580";

    struct FakeClock(AtomicU64);

    impl FakeClock {
        fn new() -> Arc<Self> {
            Arc::new(FakeClock(AtomicU64::new(1_700_000_000_000)))
        }
        fn advance_secs(&self, secs: u64) {
            self.0.fetch_add(secs * 1000, Ordering::SeqCst);
        }
        fn rewind_secs(&self, secs: u64) {
            self.0.fetch_sub(secs * 1000, Ordering::SeqCst);
        }
    }

    impl Clock for FakeClock {
        fn now_millis(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Visit {
        patient: String,
        muac_mm: u32,
        referred: bool,
    }

    fn db_path(dir: &TempDir) -> PathBuf {
        dir.path().join("hisa.db")
    }

    fn policy(max_failed_attempts: u32) -> PinPolicy {
        PinPolicy {
            max_failed_attempts,
            ..PinPolicy::default()
        }
    }

    fn new_store(dir: &TempDir, max_failed_attempts: u32) -> SealedStore {
        SealedStore::create(
            &db_path(dir),
            PIN,
            policy(max_failed_attempts),
            KdfParams::fast_for_tests(),
            300,
            Arc::new(SystemClock),
        )
        .expect("create store")
    }

    fn reopen(dir: &TempDir) -> SealedStore {
        SealedStore::open(&db_path(dir), Arc::new(SystemClock)).expect("open store")
    }

    /// Database plus WAL: right after a write the data usually lives in the WAL only.
    fn raw_bytes(path: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).expect("read db");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
            bytes.extend(more);
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn raw_blob(path: &Path, sql: &str) -> Vec<u8> {
        let conn = Connection::open(path).expect("raw open");
        conn.query_row(sql, [], |r| r.get(0)).expect("raw query")
    }

    fn raw_exec(path: &Path, sql: &str) {
        let conn = Connection::open(path).expect("raw open");
        conn.execute_batch(sql).expect("raw exec");
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SealedStore>();
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new().unwrap();
        let mut store = new_store(&dir, 5);
        let visit = Visit {
            patient: "Amina".into(),
            muac_mm: 114,
            referred: true,
        };
        store.put("visits", "v-1", &visit).unwrap();
        store.put("visits", "v-0", &json!({"a": 1})).unwrap();
        assert_eq!(store.get::<Visit>("visits", "v-1").unwrap(), Some(visit));
        assert_eq!(store.get::<Visit>("visits", "missing").unwrap(), None);
        assert_eq!(store.get::<Visit>("other", "v-1").unwrap(), None);
        assert_eq!(store.list_keys("visits").unwrap(), vec!["v-0", "v-1"]);

        store.put("visits", "v-0", &json!({"a": 2})).unwrap();
        assert_eq!(
            store.get::<serde_json::Value>("visits", "v-0").unwrap(),
            Some(json!({"a": 2}))
        );
        assert!(store.delete("visits", "v-0").unwrap());
        assert!(!store.delete("visits", "v-0").unwrap());

        store
            .put_many(&[
                ("sub", "s-1", json!({"part": 1})),
                ("sub-items", "s-1/a", json!([1, 2])),
            ])
            .unwrap();
        drop(store);

        let mut store = reopen(&dir);
        assert!(store.is_locked());
        assert!(matches!(
            store.get::<Visit>("visits", "v-1"),
            Err(StoreError::Locked)
        ));
        store.unlock(PIN).unwrap();
        assert_eq!(
            store
                .get::<Visit>("visits", "v-1")
                .unwrap()
                .unwrap()
                .muac_mm,
            114
        );
        assert_eq!(
            store
                .get::<serde_json::Value>("sub-items", "s-1/a")
                .unwrap(),
            Some(json!([1, 2]))
        );
        store.lock();
        assert!(matches!(store.list_keys("visits"), Err(StoreError::Locked)));
    }

    #[test]
    fn put_many_is_atomic() {
        let dir = TempDir::new().unwrap();
        let mut store = new_store(&dir, 5);
        // A trigger makes the second insert fail after the first succeeded.
        raw_exec(
            &db_path(&dir),
            "CREATE TRIGGER no_bad BEFORE INSERT ON record WHEN NEW.key = 'bad'
             BEGIN SELECT RAISE(ABORT, 'rejected'); END;",
        );
        let err = store
            .put_many(&[("c", "good", json!(1)), ("c", "bad", json!(2))])
            .unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        assert!(store.list_keys("c").unwrap().is_empty());
    }

    #[test]
    fn type_mismatch_error_does_not_quote_the_value() {
        let dir = TempDir::new().unwrap();
        let mut store = new_store(&dir, 5);
        store.put("p", "1", &"Secret Patient Name").unwrap();
        let err = store.get::<u32>("p", "1").unwrap_err();
        assert!(matches!(err, StoreError::Serde(_)));
        assert!(!err.to_string().contains("Secret"), "{err}");
    }

    #[test]
    fn wrong_pin_counts_down_and_wipes_at_limit_across_reopen() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let mut store = new_store(&dir, 3);
        store.put("visits", "v-1", &"data").unwrap();
        drop(store);

        let mut store = reopen(&dir);
        assert!(matches!(
            store.unlock("9999"),
            Err(StoreError::WrongPin { attempts_left: 2 })
        ));
        assert_eq!(store.failed_attempts(), 1);
        // Simulates the app being killed: the count must come back from disk.
        drop(store);

        let mut store = reopen(&dir);
        assert_eq!(store.failed_attempts(), 1);
        assert!(matches!(
            store.unlock("9998"),
            Err(StoreError::WrongPin { attempts_left: 1 })
        ));
        drop(store);

        let mut store = reopen(&dir);
        assert_eq!(store.failed_attempts(), 2);
        assert!(matches!(store.unlock("9997"), Err(StoreError::Wiped)));
        assert!(matches!(store.unlock(PIN), Err(StoreError::Wiped)));
        assert!(matches!(
            store.get::<String>("visits", "v-1"),
            Err(StoreError::Wiped)
        ));
        drop(store);

        assert!(matches!(
            SealedStore::open(&path, Arc::new(SystemClock)),
            Err(StoreError::Wiped)
        ));
        assert!(!SealedStore::is_initialized(&path).unwrap());
    }

    #[test]
    fn correct_pin_resets_counter() {
        let dir = TempDir::new().unwrap();
        let mut store = new_store(&dir, 3);
        store.lock();
        assert!(store.unlock("1357").is_err());
        assert!(store.unlock("1358").is_err());
        assert_eq!(store.failed_attempts(), 2);
        store.unlock(PIN).unwrap();
        assert_eq!(store.failed_attempts(), 0);
        drop(store);

        let mut store = reopen(&dir);
        assert_eq!(store.failed_attempts(), 0);
        // A full budget again: two more wrong PINs do not wipe.
        assert!(matches!(
            store.unlock("1"),
            Err(StoreError::WrongPin { attempts_left: 2 })
        ));
        assert!(matches!(
            store.unlock("2"),
            Err(StoreError::WrongPin { attempts_left: 1 })
        ));
        store.unlock(PIN).unwrap();
    }

    #[test]
    fn plaintext_never_reaches_the_file() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let mut store = new_store(&dir, 5);
        let marker = "MARKER-Fatuma-Hassan-HIV-positive";
        store
            .put("visits", "visit-key-in-clear", &json!({"note": marker}))
            .unwrap();
        store
            .put_many(&[("visits", "batch-key", json!({"note": marker}))])
            .unwrap();
        let bytes = raw_bytes(&path);
        // Positive control: keys are stored in clear, so the search does find text.
        assert!(contains(&bytes, b"visit-key-in-clear"));
        assert!(!contains(&bytes, marker.as_bytes()));
        assert!(!contains(&bytes, b"Fatuma"));
        drop(store);
        assert!(!contains(&raw_bytes(&path), marker.as_bytes()));
    }

    #[test]
    fn tampered_ciphertext_is_corrupt() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let mut store = new_store(&dir, 5);
        store.put("c", "a", &"alpha").unwrap();
        for i in [0, 3, 7] {
            let mut ciphertext = raw_blob(&path, "SELECT ciphertext FROM record WHERE key = 'a'");
            let original = ciphertext.clone();
            ciphertext[i] ^= 0x01;
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE record SET ciphertext = ?1 WHERE key = 'a'",
                [&ciphertext],
            )
            .unwrap();
            assert!(matches!(
                store.get::<String>("c", "a"),
                Err(StoreError::Corrupt(_))
            ));
            conn.execute(
                "UPDATE record SET ciphertext = ?1 WHERE key = 'a'",
                [&original],
            )
            .unwrap();
            assert_eq!(
                store.get::<String>("c", "a").unwrap().as_deref(),
                Some("alpha")
            );
        }

        store.put("c", "b", &"beta").unwrap();
        raw_exec(&path, "UPDATE record SET nonce = x'0102' WHERE key = 'b'");
        assert!(matches!(
            store.get::<String>("c", "b"),
            Err(StoreError::Corrupt(_))
        ));

        // `||` turns the blob into TEXT holding invalid UTF-8, which must not panic.
        store.put("c", "d", &"delta").unwrap();
        raw_exec(
            &path,
            "UPDATE record SET ciphertext = x'ff' || ciphertext WHERE key = 'd';
             UPDATE meta SET kdf_salt = x'ff' || kdf_salt",
        );
        assert!(matches!(
            store.get::<String>("c", "d"),
            Err(StoreError::Corrupt(_))
        ));
        store.put("c", "e", &"truncated").unwrap();
        raw_exec(
            &path,
            "UPDATE record SET ciphertext = x'00' WHERE key = 'e'",
        );
        assert!(matches!(
            store.get::<String>("c", "e"),
            Err(StoreError::Corrupt(_))
        ));
        drop(store);
        assert!(matches!(
            SealedStore::open(&path, Arc::new(SystemClock)),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn swapped_rows_are_corrupt() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let mut store = new_store(&dir, 5);
        store.put("c", "a", &"alpha").unwrap();
        store.put("c", "b", &"beta").unwrap();
        store.put("d", "a", &"other collection").unwrap();
        raw_exec(
            &path,
            "CREATE TEMP TABLE t AS SELECT collection, key, nonce, ciphertext FROM record;
             UPDATE record SET
                 nonce = (SELECT nonce FROM t WHERE t.collection = 'c' AND t.key = 'b'),
                 ciphertext = (SELECT ciphertext FROM t WHERE t.collection = 'c' AND t.key = 'b')
             WHERE collection = 'c' AND key = 'a';
             UPDATE record SET
                 nonce = (SELECT nonce FROM t WHERE t.collection = 'c' AND t.key = 'a'),
                 ciphertext = (SELECT ciphertext FROM t WHERE t.collection = 'c' AND t.key = 'a')
             WHERE collection = 'c' AND key = 'b';
             UPDATE record SET collection = 'e' WHERE collection = 'd';",
        );
        assert!(matches!(
            store.get::<String>("c", "a"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.get::<String>("c", "b"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.get::<String>("e", "a"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn change_pin_rewraps_and_rejects_old() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let mut store = new_store(&dir, 5);
        store.put("c", "k", &"kept").unwrap();
        let old_wrapped = raw_blob(&path, "SELECT wrapped_dek FROM meta");

        assert!(matches!(
            store.change_pin("0000", "8642"),
            Err(StoreError::WrongPin { attempts_left: 4 })
        ));
        store.change_pin(PIN, "8642").unwrap();
        assert_eq!(store.failed_attempts(), 0);
        assert_eq!(
            store.get::<String>("c", "k").unwrap().as_deref(),
            Some("kept")
        );
        // The old wrapping must be gone from the file and the WAL, not just superseded.
        assert!(!contains(&raw_bytes(&path), &old_wrapped));
        drop(store);

        let mut store = reopen(&dir);
        assert!(matches!(
            store.unlock(PIN),
            Err(StoreError::WrongPin { .. })
        ));
        store.unlock("8642").unwrap();
        assert_eq!(
            store.get::<String>("c", "k").unwrap().as_deref(),
            Some("kept")
        );
    }

    #[test]
    fn idle_lock_with_fake_clock() {
        let dir = TempDir::new().unwrap();
        let clock = FakeClock::new();
        let mut store = SealedStore::create(
            &db_path(&dir),
            PIN,
            PinPolicy::default(),
            KdfParams::fast_for_tests(),
            60,
            clock.clone(),
        )
        .unwrap();
        store.put("c", "k", &1).unwrap();
        clock.advance_secs(59);
        assert!(!store.is_locked());
        // Activity pushes the deadline back.
        assert_eq!(store.get::<i32>("c", "k").unwrap(), Some(1));
        clock.advance_secs(59);
        assert_eq!(store.get::<i32>("c", "k").unwrap(), Some(1));
        clock.advance_secs(60);
        assert!(store.is_locked());
        assert!(matches!(
            store.get::<i32>("c", "k"),
            Err(StoreError::Locked)
        ));
        assert!(store.dek.is_none(), "idle lock must drop the key");
        assert!(matches!(store.put("c", "k", &2), Err(StoreError::Locked)));
        store.unlock(PIN).unwrap();
        assert_eq!(store.get::<i32>("c", "k").unwrap(), Some(1));

        // Setting the phone's clock back does not keep the session alive.
        clock.rewind_secs(3600);
        assert!(matches!(
            store.get::<i32>("c", "k"),
            Err(StoreError::Locked)
        ));
        store.unlock(PIN).unwrap();

        // 0 disables the idle lock.
        store.set_policy(PinPolicy::default(), 0).unwrap();
        clock.advance_secs(86_400);
        assert_eq!(store.get::<i32>("c", "k").unwrap(), Some(1));
    }

    #[test]
    fn weak_pins_are_rejected() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let strict = PinPolicy::default();
        for pin in [
            "", "1", "123", "1111", "1234", "4321", "7890", "0987", "123456", "12a4", "12 4",
        ] {
            let result = SealedStore::create(
                &path,
                pin,
                strict,
                KdfParams::fast_for_tests(),
                0,
                Arc::new(SystemClock),
            );
            assert!(
                matches!(result, Err(StoreError::WeakPin(_))),
                "{pin:?} accepted"
            );
        }
        assert!(!SealedStore::is_initialized(&path).unwrap());
        for pin in ["2580", "1357", "9154", "1212", "24680"] {
            strict
                .check(pin)
                .unwrap_or_else(|e| panic!("{pin:?} rejected: {e}"));
        }
        let lax = PinPolicy {
            min_length: 6,
            digits_only: false,
            reject_trivial: false,
            max_failed_attempts: 5,
        };
        lax.check("aaaaaa").unwrap();
        lax.check("pässwörd").unwrap();
        assert!(
            lax.check("äöüäö").is_err(),
            "length counts characters, not bytes"
        );
        assert!(PinPolicy {
            reject_trivial: true,
            ..lax
        }
        .check("abcdef")
        .is_err());

        let mut store = new_store(&dir, 5);
        assert!(matches!(
            store.change_pin(PIN, "1111"),
            Err(StoreError::WeakPin(_))
        ));
        assert_eq!(
            store.failed_attempts(),
            0,
            "a rejected new PIN costs no attempt"
        );
        assert!(matches!(
            SealedStore::create(
                &path,
                "1470",
                PinPolicy {
                    max_failed_attempts: 0,
                    ..strict
                },
                KdfParams::fast_for_tests(),
                0,
                Arc::new(SystemClock),
            ),
            Err(StoreError::InvalidConfig(_))
        ));
    }

    #[test]
    fn stricter_policy_requests_pin_change() {
        let dir = TempDir::new().unwrap();
        let mut store = new_store(&dir, 5);
        assert!(!store.needs_pin_change());
        let six = PinPolicy {
            min_length: 6,
            ..PinPolicy::default()
        };
        store.lock();
        assert!(matches!(
            store.set_policy(six, 300),
            Err(StoreError::Locked)
        ));
        store.unlock(PIN).unwrap();
        store.set_policy(six, 300).unwrap();
        assert!(store.needs_pin_change());
        drop(store);

        let mut store = reopen(&dir);
        assert!(store.needs_pin_change());
        assert_eq!(store.policy(), six);
        // The old PIN still unlocks; only the next change must follow the new rule.
        store.unlock(PIN).unwrap();
        assert!(matches!(
            store.change_pin(PIN, "3691"),
            Err(StoreError::WeakPin(_))
        ));
        store.change_pin(PIN, "369147").unwrap();
        assert!(!store.needs_pin_change());

        // A policy the current PIN already meets asks for nothing.
        store.set_policy(PinPolicy::default(), 300).unwrap();
        assert!(!store.needs_pin_change());
    }

    #[test]
    fn remote_wipe_leaves_nothing() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let mut store = new_store(&dir, 5);
        for i in 0..50 {
            store
                .put(
                    "visits",
                    &format!("v-{i}"),
                    &json!({"i": i, "pad": "x".repeat(200)}),
                )
                .unwrap();
        }
        let ciphertext = raw_blob(&path, "SELECT ciphertext FROM record WHERE key = 'v-7'");
        let wrapped = raw_blob(&path, "SELECT wrapped_dek FROM meta");
        let salt = raw_blob(&path, "SELECT kdf_salt FROM meta");
        store.lock();
        // Works while locked: the server's order does not wait for the user.
        store.wipe().unwrap();

        assert!(store.is_locked());
        assert!(matches!(store.unlock(PIN), Err(StoreError::Wiped)));
        assert!(matches!(
            store.get::<i32>("visits", "v-1"),
            Err(StoreError::Wiped)
        ));
        assert!(matches!(
            store.put("visits", "v-1", &1),
            Err(StoreError::Wiped)
        ));
        assert!(matches!(store.list_keys("visits"), Err(StoreError::Wiped)));
        assert!(matches!(
            store.change_pin(PIN, "8642"),
            Err(StoreError::Wiped)
        ));
        store.wipe().unwrap();
        drop(store);

        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM record", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        drop(conn);
        let bytes = raw_bytes(&path);
        assert!(!contains(&bytes, &ciphertext[..32]));
        assert!(!contains(&bytes, &wrapped));
        assert!(!contains(&bytes, &salt));
        assert!(!contains(&bytes, b"v-7"));

        assert!(matches!(
            SealedStore::open(&path, Arc::new(SystemClock)),
            Err(StoreError::Wiped)
        ));
        assert!(!SealedStore::is_initialized(&path).unwrap());

        // The device can be set up again.
        let mut store = new_store(&dir, 5);
        assert!(store.list_keys("visits").unwrap().is_empty());
    }

    #[test]
    fn lifecycle_errors() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        assert!(!SealedStore::is_initialized(&path).unwrap());
        assert!(!path.exists(), "is_initialized must not create the file");
        assert!(matches!(
            SealedStore::open(&path, Arc::new(SystemClock)),
            Err(StoreError::NotInitialized)
        ));
        assert!(!path.exists());

        let store = new_store(&dir, 5);
        assert!(SealedStore::is_initialized(&path).unwrap());
        assert!(matches!(
            SealedStore::create(
                &path,
                "9154",
                PinPolicy::default(),
                KdfParams::fast_for_tests(),
                0,
                Arc::new(SystemClock),
            ),
            Err(StoreError::AlreadyInitialized)
        ));
        drop(store);

        raw_exec(&path, "UPDATE meta SET kdf_salt = x'00'");
        assert!(matches!(
            SealedStore::open(&path, Arc::new(SystemClock)),
            Err(StoreError::Corrupt(_))
        ));
        raw_exec(
            &path,
            "UPDATE meta SET kdf_salt = zeroblob(16), kdf_memory_kib = 999999999",
        );
        assert!(matches!(
            SealedStore::open(&path, Arc::new(SystemClock)),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn proptest_round_trip(
            collection in any::<String>(),
            key in any::<String>(),
            text in any::<String>(),
            value in json_value(),
        ) {
            let dir = TempDir::new().unwrap();
            let mut store = new_store(&dir, 5);
            store.put(&collection, &key, &text).unwrap();
            prop_assert_eq!(store.get::<String>(&collection, &key).unwrap(), Some(text));
            store
                .put_many(&[(collection.as_str(), key.as_str(), value.clone())])
                .unwrap();
            prop_assert_eq!(store.list_keys(&collection).unwrap(), vec![key.clone()]);
            drop(store);
            let mut store = reopen(&dir);
            store.unlock(PIN).unwrap();
            prop_assert_eq!(
                store.get::<serde_json::Value>(&collection, &key).unwrap(),
                Some(value)
            );
        }
    }
}
