//! Aggregate data: importing data value sets (JSON, CSV, ADX) with DHIS2's
//! rules, exporting them, completions, and the audit trail.
//!
//! Module map:
//! - [`index`]: data entry rules derived from metadata (data sets, combos, locks).
//! - [`input`]: streaming parsers for the three formats.
//! - [`import`]: checking and writing values, counting as DHIS2 counts.
//! - [`export`]: reading values back out in the three formats.

pub mod export;
pub mod import;
pub mod index;
pub mod input;

use std::io::Read;

use hisa_shared::authority;
use hisa_shared::datavalue::ImportSummary;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;
use import::{DataImportOptions, DataImporter};
use input::{Event, Format};

/// Where a change came from, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Api,
    App,
    Sms,
    Console,
    /// `hisa-server import-data`, run by an operator on the server.
    Cli,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::App => "app",
            Channel::Sms => "sms",
            Channel::Console => "console",
            Channel::Cli => "cli",
        }
    }
}

/// What the reader of a body should do: parse this format, with these options.
pub struct ImportRequest {
    pub format: Format,
    pub options: DataImportOptions,
    /// CSV: the first row holds column names (DHIS2's default).
    pub csv_header_row: bool,
    /// CSV has no set-level members: `?dataSet=` supplies one.
    pub data_set: Option<String>,
}

/// Import a data value set read from `reader` (read on a blocking thread).
pub async fn import_data<R: Read + Send + 'static>(
    svc: &Services,
    caller: Caller,
    request: ImportRequest,
    reader: R,
) -> ServerResult<ImportSummary> {
    caller.require_any(&[authority::DATAVALUE_ADD])?;
    let snap = svc.metadata.snapshot().await?;
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let ImportRequest {
        format,
        options,
        csv_header_row,
        data_set,
    } = request;
    let parser = tokio::task::spawn_blocking(move || {
        input::parse(format, reader, csv_header_row, data_set, tx)
    });
    let mut importer = DataImporter::new(snap, svc.store.clone(), caller, options);
    while let Some(event) = rx.recv().await {
        match event {
            Event::Header(h) => importer.set_header(h),
            Event::Value(v) => importer.push(v).await?,
            Event::Malformed(m) => {
                importer.fail_input(m);
                break;
            }
        }
    }
    drop(rx);
    parser
        .await
        .map_err(|e| ServerError::Internal(format!("parser thread: {e}")))?;
    importer.finish().await
}
