//! `hisa-server`: the DHIS2-compatible Web API, storage, and (later) the web
//! console, as a library so that end-to-end tests start the real server.
//!
//! Module map:
//! - [`store`]: the storage trait and its SQLite and PostgreSQL implementations.
//! - [`metadata`]: the in-memory metadata snapshot and the metadata import.
//! - [`auth`]: who is calling ([`auth::Caller`]), passwords, tokens, sessions.
//! - [`data`]: aggregate data values in and out, completions, the audit trail.
//! - [`events`]: single events of programs without registration (`/api/tracker`).
//! - [`jobs`]: background jobs (`async=true`) and their progress.
//! - [`query`]: DHIS2's `fields`, `filter`, `order` and paging conventions.
//! - [`api`]: HTTP handlers and the router.
//! - [`analytics`]: live aggregates along dx/pe/ou/category dimensions, DHIS2's analytics grid.
//! - [`approval`]: approval levels and workflows; approve, accept, return; the lock on approved data.
//! - [`completeness`]: expected, actual and on-time reports of a data set over a subtree.
//! - [`sms`]: the SMS gateway's directory (users by phone, catalog, storing forms and events).
//! - [`sync`]: device enrolment, policies, metadata packages, submissions once, wipe and revoke.
//! - [`validation`]: validation rules on one form or over a subtree and date range.
//! - [`demo`], [`seed`]: the generated demo country and loading it.
//! - [`server`]: startup, readiness and graceful shutdown.
//! - [`state`], [`error`]: shared state and the one error type.

pub mod analytics;
pub mod api;
pub mod approval;
pub mod auth;
pub mod completeness;
pub mod data;
pub mod demo;
pub mod error;
pub mod events;
pub mod jobs;
pub mod metadata;
pub mod query;
pub mod seed;
pub mod server;
pub mod sms;
pub mod state;
pub mod store;
pub mod sync;
pub mod validation;
