//! Expression descriptions, as DHIS2's maintenance app asks for them while
//! an indicator or validation rule is being written.

use axum::body::Bytes;
use axum::Json;
use hisa_shared::expression::{parse, ComboRef, ElementRef, ExprContext, Item};
use hisa_shared::webmessage::{Status, WebMessage};
use serde_json::Value;

use super::Params;
use crate::auth::Caller;
use crate::error::ServerResult;
use crate::metadata::Snapshot;
use crate::state::Services;

fn name_of(snap: &Snapshot, uid: &str) -> Option<String> {
    let body = &snap.get(uid)?.body;
    body.get("displayName")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The words for an item: "ANC 1st visit Fixed" for `#{de.coc}`.
fn describe_item(snap: &Snapshot, item: &Item) -> Option<String> {
    match item {
        Item::DataElement { element, combo, .. } => {
            let de = match element {
                ElementRef::Element(uid) | ElementRef::Group(uid) => name_of(snap, uid)?,
            };
            match combo {
                Some(ComboRef::Combo(coc)) | Some(ComboRef::Option(coc)) => {
                    Some(format!("{de} {}", name_of(snap, coc)?))
                }
                _ => Some(de),
            }
        }
        Item::Constant(uid)
        | Item::OrgUnitGroupCount(uid)
        | Item::Indicator(uid)
        | Item::ProgramIndicator(uid) => name_of(snap, uid),
        Item::ReportingRate { data_set, metric } => {
            Some(format!("{} {metric:?}", name_of(snap, data_set)?))
        }
        Item::ProgramDataElement {
            program,
            data_element,
        } => Some(format!(
            "{} {}",
            name_of(snap, program)?,
            name_of(snap, data_element)?
        )),
        Item::ProgramAttribute { program, attribute } => Some(format!(
            "{} {}",
            name_of(snap, program)?,
            name_of(snap, attribute)?
        )),
    }
}

async fn describe(svc: &Services, text: &str, ctx: ExprContext) -> ServerResult<Json<WebMessage>> {
    let snap = svc.metadata.snapshot().await?;
    let message = match parse(text, ctx) {
        Ok(expr) => {
            let unknown: Vec<String> = expr
                .items()
                .iter()
                .filter(|i| describe_item(&snap, i).is_none())
                .map(|i| format!("{i:?}"))
                .collect();
            let description = expr.describe(&|i: &Item| describe_item(&snap, i));
            if unknown.is_empty() {
                WebMessage::new(200, Status::Ok, "Valid").with_description(description)
            } else {
                WebMessage::new(
                    200,
                    Status::Error,
                    format!(
                        "Expression refers to objects that do not exist: {}",
                        unknown.join(", ")
                    ),
                )
                .with_description(description)
            }
        }
        Err(e) => WebMessage::new(200, Status::Error, format!("Expression is not valid: {e}")),
    };
    Ok(Json(message))
}

/// `GET /api/expressions/description?expression=…` (indicator context).
pub async fn description(
    svc: Services,
    _caller: Caller,
    params: Params,
) -> ServerResult<Json<WebMessage>> {
    let text = params.get("expression").unwrap_or_default().to_string();
    describe(&svc, &text, ExprContext::Indicator).await
}

/// `POST /api/indicators/expression/description` with the expression as the body.
pub async fn indicator_description(
    svc: Services,
    _caller: Caller,
    body: Bytes,
) -> ServerResult<Json<WebMessage>> {
    describe(
        &svc,
        &String::from_utf8_lossy(&body),
        ExprContext::Indicator,
    )
    .await
}

/// `POST /api/validationRules/expression/description` with the expression as the body.
pub async fn validation_rule_description(
    svc: Services,
    _caller: Caller,
    body: Bytes,
) -> ServerResult<Json<WebMessage>> {
    describe(
        &svc,
        &String::from_utf8_lossy(&body),
        ExprContext::ValidationRule,
    )
    .await
}
