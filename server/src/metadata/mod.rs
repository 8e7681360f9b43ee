//! Metadata: the in-memory snapshot, the import planner, and the service that
//! ties them to the store.

pub mod import;
pub mod snapshot;

use std::sync::{Arc, RwLock};

use hisa_shared::metadata::defaults;
use hisa_shared::webmessage::ImportReport;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::auth::{hash_password, Caller};
use crate::error::{ServerError, ServerResult};
use crate::store::Store;
use import::{plan, ImportParams};
pub use snapshot::Snapshot;

pub struct MetadataService {
    store: Arc<dyn Store>,
    current: RwLock<Arc<Snapshot>>,
    /// Imports on one instance run one at a time: each plans against the
    /// snapshot the previous one produced.
    import_lock: Mutex<()>,
}

impl MetadataService {
    /// Load the snapshot and make sure DHIS2's default category objects exist.
    pub async fn start(store: Arc<dyn Store>) -> ServerResult<MetadataService> {
        let service = MetadataService {
            store,
            current: RwLock::new(Arc::new(Snapshot::default())),
            import_lock: Mutex::new(()),
        };
        service.reload().await?;
        if service
            .snapshot_now()
            .get_of("categoryOptionCombos", defaults::CATEGORY_OPTION_COMBO)
            .is_none()
        {
            let report = service
                .import(defaults::payload(), ImportParams::default())
                .await?;
            if report.has_errors() {
                return Err(ServerError::Internal(
                    "the built-in default category objects failed to import".into(),
                ));
            }
        }
        Ok(service)
    }

    async fn reload(&self) -> ServerResult<Arc<Snapshot>> {
        let version = self.store.metadata_version().await?;
        let objects = self.store.load_metadata().await?;
        let snap = Arc::new(Snapshot::build(version, objects));
        if let Ok(mut guard) = self.current.write() {
            // Another reload may have won with a newer version meanwhile.
            if guard.version <= version {
                *guard = snap.clone();
            }
        }
        Ok(snap)
    }

    /// The snapshot as last loaded, without asking the database.
    pub fn snapshot_now(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The current snapshot; reloaded when another instance changed metadata.
    pub async fn snapshot(&self) -> ServerResult<Arc<Snapshot>> {
        let snap = self.snapshot_now();
        let version = self.store.metadata_version().await?;
        if version != snap.version {
            return self.reload().await;
        }
        Ok(snap)
    }

    /// Import a DHIS2 metadata payload as `caller`.
    pub async fn import_as(
        &self,
        caller: &Caller,
        payload: Value,
        params: ImportParams,
    ) -> ServerResult<ImportReport> {
        // Users and roles alone are a user manager's business (`POST /api/users`);
        // anything else is a metadata import.
        let only_users = payload.as_object().is_some_and(|m| {
            m.iter()
                .filter(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
                .all(|(k, _)| k == "users" || k == "userRoles")
        });
        if !only_users {
            caller.require_any(&[hisa_shared::authority::METADATA_IMPORT])?;
        }
        if payload.get("users").is_some() || payload.get("userRoles").is_some() {
            caller.require_any(&[hisa_shared::authority::USER_ADD])?;
            if !caller.is_superuser() {
                self.check_no_escalation(caller, &payload).await?;
            }
        }
        self.import(payload, params).await
    }

    /// A user manager may not hand out more than they hold: no role with an
    /// authority they lack, no user outside their own subtrees.
    async fn check_no_escalation(&self, caller: &Caller, payload: &Value) -> ServerResult<()> {
        let snap = self.snapshot().await?;
        let authorities_of = |role: &Value| -> Vec<String> {
            role.get("authorities")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let beyond = |auths: Vec<String>| auths.into_iter().find(|a| !caller.has(a));
        let payload_roles: Vec<&Value> = payload
            .get("userRoles")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for role in &payload_roles {
            if let Some(a) = beyond(authorities_of(role)) {
                return Err(ServerError::Forbidden(format!(
                    "You cannot create a role with the authority {a}, which you do not hold"
                )));
            }
        }
        let users = payload
            .get("users")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for user in &users {
            let refs = |key: &str| -> Vec<String> {
                user.get(key)
                    .or_else(|| user.get("userCredentials").and_then(|c| c.get(key)))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(hisa_shared::schema::reference_id)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for role_id in refs("userRoles") {
                let role = payload_roles
                    .iter()
                    .find(|r| r.get("id").and_then(Value::as_str) == Some(role_id.as_str()))
                    .copied()
                    .or_else(|| snap.get_of("userRoles", &role_id));
                if let Some(a) = role.and_then(|r| beyond(authorities_of(r))) {
                    return Err(ServerError::Forbidden(format!(
                        "You cannot assign a role with the authority {a}, which you do not hold"
                    )));
                }
            }
            for key in [
                "organisationUnits",
                "dataViewOrganisationUnits",
                "teiSearchOrganisationUnits",
            ] {
                for ou in refs(key) {
                    if !snap.within_any(&ou, &caller.view_roots) {
                        return Err(ServerError::Forbidden(format!(
                            "You cannot assign org unit {ou}, which is outside your own"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Import without an authority check: for the CLI, the demo seed and
    /// bootstrap, which run with the operator's rights.
    pub async fn import(&self, payload: Value, params: ImportParams) -> ServerResult<ImportReport> {
        let _guard = self.import_lock.lock().await;
        let snap = self.snapshot().await?;
        // Planning hashes passwords (Argon2 is deliberately slow): off the runtime.
        let plan = tokio::task::spawn_blocking(move || {
            plan(
                &snap,
                payload,
                params,
                OffsetDateTime::now_utc(),
                &hash_password,
            )
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
        let change = &plan.change;
        if !change.upserts.is_empty() || !change.deletes.is_empty() {
            self.store.apply_metadata(change).await?;
            self.reload().await?;
        }
        Ok(plan.report)
    }
}
