//! Shared state. The HTTP listener starts before migrations finish so that
//! `/api/health` can say "starting"; every other route waits for
//! [`Services`], which exists only once the store is migrated and the
//! metadata snapshot loaded.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{CredentialCache, LoginThrottle};
use crate::error::ServerError;
use crate::metadata::MetadataService;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Largest data value set body accepted, in bytes (streamed, so large is fine).
    pub data_body_limit: usize,
    /// Send the session cookie with `Secure` (behind TLS).
    pub secure_cookies: bool,
    pub session_hours: i64,
    pub sms: hisa_sms_gateway::SmsConfig,
    /// A submission claim not finished within this time (its request or
    /// server died) may be taken over by a retry.
    pub sync_claim_stale_ms: i64,
    /// Data values analytics keeps in memory before dropping the least
    /// recently used data elements (about 60 bytes each).
    pub analytics_max_cells: usize,
    /// Read every numeric data element into the analytics cube in the
    /// background once started (the server binary does; tests do not).
    pub analytics_warm_up: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            body_limit: 64 * 1024 * 1024,
            data_body_limit: 2 * 1024 * 1024 * 1024,
            secure_cookies: false,
            session_hours: 12,
            sms: hisa_sms_gateway::SmsConfig::default(),
            sync_claim_stale_ms: 30_000,
            analytics_max_cells: 30_000_000,
            analytics_warm_up: false,
        }
    }
}

pub struct ServicesInner {
    pub store: Arc<dyn Store>,
    pub metadata: MetadataService,
    pub throttle: LoginThrottle,
    pub credential_cache: CredentialCache,
    pub jobs: crate::jobs::Jobs,
    pub config: Config,
    pub sms: Arc<hisa_sms_gateway::SmsService>,
    pub sync_versions: crate::sync::PackageVersions,
    pub analytics: Arc<crate::analytics::cube::Cube>,
    pub upload_writer: crate::sync::UploadWriter,
}

#[derive(Clone)]
pub struct Services(pub Arc<ServicesInner>);

impl Deref for Services {
    type Target = ServicesInner;
    fn deref(&self) -> &ServicesInner {
        &self.0
    }
}

#[derive(Clone)]
pub struct AppState {
    services: Arc<OnceLock<Services>>,
    pub config: Config,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        AppState {
            services: Arc::new(OnceLock::new()),
            config,
        }
    }

    pub fn ready(&self, services: Services) {
        let _ = self.services.set(services);
    }

    pub fn is_ready(&self) -> bool {
        self.services.get().is_some()
    }

    pub fn services(&self) -> Result<Services, ServerError> {
        self.services.get().cloned().ok_or(ServerError::Starting)
    }
}

impl FromRequestParts<AppState> for Services {
    type Rejection = ServerError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Services, ServerError> {
        state.services()
    }
}
