//! The DHIS2-shaped Web API. Handlers are thin: parse, take the caller,
//! call a service, map the result.

mod analytics;
mod approval;
mod body;
mod completeness;
mod data;
mod events;
mod expressions;
mod me;
mod metadata;
mod sms;
mod sync;
mod system;
mod validation;

use axum::extract::Request;
use axum::http::Uri;
use axum::routing::{get, post};
use axum::Router;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::error::ServerError;
use crate::state::AppState;

pub use body::JsonBody;

/// Query parameters as DHIS2 sends them: repeated keys kept in order.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ServerError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Params, ServerError> {
        Ok(Params::parse(parts.uri.query()))
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    Router::new()
        .route("/api/health", get(system::health))
        .route("/api/system/info", get(system::info))
        .route("/api/system/ping", get(system::ping))
        .route("/api/system/id", get(system::ids))
        .route("/api/system/tasks/{job_type}/{id}", get(system::task))
        .route(
            "/api/system/taskSummaries/{job_type}/{id}",
            get(system::task_summary),
        )
        .route("/api/me", get(me::me))
        .route("/api/me/authorization", get(me::authorizations))
        .route(
            "/api/me/authorization/{authority}",
            get(me::has_authorization),
        )
        .route("/api/auth/login", post(me::login))
        .route("/api/auth/logout", post(me::logout))
        .route("/api/apiToken", post(me::create_api_token))
        .route("/api/dataValueSets", get(data::export).post(data::import))
        .route("/api/dataValueSets.json", get(data::export_json))
        .route("/api/dataValueSets.csv", get(data::export_csv))
        .route("/api/dataValueSets.adx", get(data::export_adx))
        .route("/api/dataValueSets.adx+xml", get(data::export_adx))
        .route(
            "/api/dataValues",
            get(data::get_value)
                .post(data::post_value)
                .delete(data::delete_value),
        )
        .route(
            "/api/completeDataSetRegistrations",
            get(data::get_completions)
                .post(data::post_completions)
                .delete(data::delete_completion),
        )
        .route("/api/audits/dataValue", get(data::audits))
        .route(
            "/api/expressions/description",
            get(expressions::description),
        )
        .route(
            "/api/indicators/expression/description",
            post(expressions::indicator_description),
        )
        .route(
            "/api/validationRules/expression/description",
            post(expressions::validation_rule_description),
        )
        .route(
            "/api/sms/inbound",
            get(sms::list_inbound).post(sms::post_inbound),
        )
        .route("/api/sms/inbound/{uid}", get(sms::one_inbound))
        .route(
            "/api/sms/inbound/{uid}/reprocess",
            post(sms::reprocess_inbound),
        )
        .route(
            "/api/sms/outbound",
            get(sms::list_outbound).post(sms::post_outbound),
        )
        .route("/api/sms/stats", get(sms::stats))
        .route(
            "/api/sms/gateway/{uid}",
            get(sms::gateway_get).post(sms::gateway_post),
        )
        .route(
            "/api/gateways",
            get(sms::list_gateways).post(sms::create_gateway),
        )
        .route(
            "/api/gateways/{uid}",
            get(sms::one_gateway)
                .put(sms::replace_gateway)
                .delete(sms::delete_gateway),
        )
        .route(
            "/api/gateways/default/{uid}",
            axum::routing::put(sms::default_gateway),
        )
        .route(
            "/api/devices",
            get(sync::list_devices).post(sync::enrol_signed_in),
        )
        .route("/api/devices/enrolmentCodes", post(sync::enrolment_code))
        .route("/api/devices/{uid}", get(sync::one_device))
        .route("/api/devices/{uid}/revoke", post(sync::revoke_device))
        .route("/api/devices/{uid}/wipe", post(sync::wipe_device))
        .route("/api/devices/{uid}/policy", get(sync::device_policy))
        .route(
            "/api/devicePolicies",
            get(sync::list_policies).post(sync::create_policy),
        )
        .route(
            "/api/devicePolicies/{uid}",
            axum::routing::put(sync::replace_policy).delete(sync::delete_policy),
        )
        .route("/api/sync/v1/enrol", post(sync::enrol))
        // Phones pay for every byte: packages and forms go out gzipped
        // when the phone accepts it (the app always does).
        .route(
            "/api/sync/v1/metadata",
            get(sync::metadata).layer(tower_http::compression::CompressionLayer::new()),
        )
        .route(
            "/api/sync/v1/data",
            get(sync::download)
                .post(sync::upload)
                .layer(tower_http::compression::CompressionLayer::new()),
        )
        .route("/api/sync/v1/status", post(sync::status))
        .route("/api/sync/v1/wiped", post(sync::wiped))
        .route(
            "/api/dataApprovals",
            get(approval::status)
                .post(approval::approve)
                .delete(approval::unapprove),
        )
        .route(
            "/api/dataApprovals/approvals",
            get(approval::statuses).post(approval::approve_many),
        )
        .route(
            "/api/dataApprovals/unapprovals",
            post(approval::unapprove_many),
        )
        .route("/api/dataApprovals/returns", post(approval::return_form))
        .route("/api/dataApprovals/audits", get(approval::audits))
        .route(
            "/api/dataAcceptances",
            post(approval::accept).delete(approval::unaccept),
        )
        .route(
            "/api/dataAcceptances/acceptances",
            post(approval::accept_many),
        )
        .route(
            "/api/dataAcceptances/unacceptances",
            post(approval::unaccept_many),
        )
        .route("/api/me/messages", get(approval::my_messages))
        .route("/api/completeness", get(completeness::completeness))
        .route("/api/analytics", get(analytics::json))
        .route("/api/analytics.json", get(analytics::json))
        .route("/api/analytics.csv", get(analytics::csv))
        .route(
            "/api/analytics/dataValueSet.json",
            get(analytics::data_value_set),
        )
        .route(
            "/api/analytics/dataValueSet",
            get(analytics::data_value_set),
        )
        .route("/api/validation/dataSet/{ds}", get(validation::form))
        .route(
            "/api/dataAnalysis/validationRules",
            post(validation::analysis),
        )
        .route("/api/validationResults", get(validation::results))
        .route(
            "/api/validationResults/{uid}/followUp",
            axum::routing::put(validation::follow_up),
        )
        .route("/api/tracker", post(events::import))
        .route("/api/tracker/events", get(events::list))
        .route("/api/tracker/events/{uid}", get(events::one))
        .route(
            "/api/metadata",
            get(metadata::export).post(metadata::import),
        )
        .route(
            "/api/{resource}",
            get(metadata::list).post(metadata::create),
        )
        .route(
            "/api/{resource}/{id}",
            get(metadata::detail)
                .put(metadata::replace)
                .delete(metadata::delete),
        )
        .fallback(|| async { ServerError::NotFound("No such resource".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(RequestDecompressionLayer::new())
        // Failures are logged where they happen (internal errors in `error.rs`);
        // a 503 while starting or a 4xx is not an incident.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// DHIS2 clients pin an API version (`/api/40/me`); every path answers with
/// and without it. Runs before routing.
pub fn strip_api_version(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/api/") {
        let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if !first.is_empty() && first.len() <= 3 && first.bytes().all(|b| b.is_ascii_digit()) {
            let mut new_path = format!("/api/{tail}");
            if tail.is_empty() {
                new_path.truncate(4);
            }
            let pq = match req.uri().query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            let mut parts = req.uri().clone().into_parts();
            if let Ok(pq) = pq.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}
