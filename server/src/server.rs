//! Starting the server: bind, answer `/api/health` at once, migrate, load
//! metadata, then serve everything; stop gracefully on a signal.

use std::future::Future;
use std::sync::Arc;

use axum::ServiceExt;
use tokio::net::TcpListener;
use tower::Layer;

use crate::api::{router, strip_api_version};
use crate::auth::{CredentialCache, LoginThrottle};
use crate::error::ServerResult;
use crate::metadata::MetadataService;
use crate::state::{AppState, Config, Services, ServicesInner};
use crate::store::Store;

/// Migrate the store and load metadata: what must be true before serving.
pub async fn prepare(store: Arc<dyn Store>, config: Config) -> ServerResult<Services> {
    store.migrate().await?;
    let metadata = MetadataService::start(store.clone()).await?;
    let directory = Arc::new(crate::sms::Directory::new(config.sms.country_code.clone()));
    let sms = Arc::new(hisa_sms_gateway::SmsService::new(
        store.sms(),
        directory.clone(),
        config.sms.clone(),
    ));
    let analytics = crate::analytics::cube::Cube::new(store.clone(), config.analytics_max_cells);
    if store.backend() == crate::store::Backend::Postgres {
        // Other instances may write to the same database: read what they did.
        let weak = Arc::downgrade(&analytics);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tick.tick().await;
                let Some(cube) = weak.upgrade() else { break };
                if let Err(e) = cube.poll().await {
                    tracing::warn!("analytics poll failed: {e}");
                }
            }
        });
    }
    let upload_writer = crate::sync::UploadWriter::new(store.clone());
    let services = Services(Arc::new(ServicesInner {
        analytics,
        store,
        metadata,
        throttle: LoginThrottle::default(),
        credential_cache: CredentialCache::default(),
        jobs: Default::default(),
        config,
        sms,
        sync_versions: Default::default(),
        upload_writer,
    }));
    directory.attach(&services);
    if services.config.analytics_warm_up {
        let snap = services.metadata.snapshot().await?;
        // Elements in data sets first (what dashboards show), then the rest.
        let mut elements: Vec<(bool, i64)> = snap
            .data_index()
            .elements
            .values()
            .filter(|e| e.value_type.is_numeric() || e.value_type.is_boolean())
            .map(|e| (e.data_sets.is_empty(), e.id))
            .collect();
        elements.sort();
        let cube = services.analytics.clone();
        tokio::spawn(cube.warm_up(elements.into_iter().map(|(_, id)| id).collect()));
    }
    Ok(services)
}

/// A database without any user gets DHIS2's first superuser, `admin` /
/// `district`, so that a new installation can be signed into; the password
/// must be changed at once. Returns whether one was made.
pub async fn ensure_first_admin(services: &Services) -> ServerResult<bool> {
    let snap = services.metadata.snapshot().await?;
    if snap.count_of("users") > 0 {
        return Ok(false);
    }
    let roots: Vec<serde_json::Value> = snap
        .org_units()
        .filter(|(_, n)| n.parent.is_none())
        .map(|(uid, _)| serde_json::json!({"id": uid}))
        .collect();
    let role = hisa_shared::Uid::generate().to_string();
    let payload = serde_json::json!({
        "userRoles": [{"id": role, "name": "Superuser", "authorities": ["ALL"]}],
        "users": [{"username": "admin", "password": "district", "firstName": "System",
                   "surname": "Administrator", "userRoles": [{"id": role}],
                   "organisationUnits": roots, "dataViewOrganisationUnits": roots}]
    });
    let report = services
        .metadata
        .import(payload, Default::default())
        .await?;
    if report.has_errors() {
        return Err(crate::error::ServerError::Internal(
            "could not create the first superuser".into(),
        ));
    }
    tracing::warn!("no users existed: created `admin` with password `district`; change it now");
    Ok(true)
}

/// Serve on `listener` until `shutdown` resolves. `prepare` runs after the
/// listener accepts connections, so health checks see "starting" first.
pub async fn serve<F, P>(
    listener: TcpListener,
    config: Config,
    prepare_services: P,
    shutdown: F,
) -> ServerResult<()>
where
    F: Future<Output = ()> + Send + 'static,
    P: Future<Output = ServerResult<Services>> + Send + 'static,
{
    serve_notifying(listener, config, prepare_services, shutdown, None).await
}

/// As [`serve`], and `ready` is told the moment every route is served
/// (what `/api/health` turning 200 means), so a caller can wait on it
/// instead of polling.
pub async fn serve_notifying<F, P>(
    listener: TcpListener,
    config: Config,
    prepare_services: P,
    shutdown: F,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> ServerResult<()>
where
    F: Future<Output = ()> + Send + 'static,
    P: Future<Output = ServerResult<Services>> + Send + 'static,
{
    let state = AppState::new(config);
    let app = router(state.clone());
    let app = tower::util::MapRequestLayer::new(strip_api_version).layer(app);
    let server = axum::serve(
        listener,
        ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
            std::net::SocketAddr,
        >(app),
    )
    .with_graceful_shutdown(shutdown);
    let server = tokio::spawn(async move { server.await });
    let (stop_sms, sms_stopped) = tokio::sync::watch::channel(false);
    match prepare_services.await {
        Ok(services) => {
            // Outbound SMS are pushed and stale inbound ones swept in the
            // background, by every instance (claims keep them apart).
            let instance = hisa_shared::Uid::generate().to_string();
            tokio::spawn(services.sms.clone().run(instance, sms_stopped));
            state.ready(services);
            if let Some(ready) = ready {
                let _ = ready.send(());
            }
        }
        Err(e) => {
            server.abort();
            return Err(e);
        }
    }
    let served = server.await;
    let _ = stop_sms.send(true);
    served
        .map_err(|e| crate::error::ServerError::Internal(e.to_string()))?
        .map_err(|e| crate::error::ServerError::Internal(e.to_string()))?;
    Ok(())
}
