//! DHIS2 Web API query conventions for metadata list and detail endpoints.
//!
//! Metadata is held in memory as `serde_json::Value` objects in DHIS2's JSON
//! shape, so every operation here works on JSON rather than typed structs:
//! that keeps one implementation valid for every metadata type and lets the
//! output match what DHIS2 clients (the Android SDK, the web apps) expect.
//!
//! * `fields=` — [`parse_fields`] / [`select`]
//! * `filter=` — [`parse_filter`] / [`matches`]
//! * `order=` — [`parse_order`] / [`sort`]
//! * `paging=`, `page=`, `pageSize=` — [`parse_paging`] / [`pager_json`]
//! * everything at once for list endpoints — [`ListQuery`]

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::str::FromStr;

use serde_json::{Map, Value};

/// Field selection DHIS2 applies to list endpoints when `fields` is absent.
pub const DEFAULT_LIST_FIELDS: &str = "id,displayName";
/// Field selection DHIS2 applies to detail endpoints when `fields` is absent.
pub const DEFAULT_DETAIL_FIELDS: &str = "*";
/// DHIS2's default `pageSize`.
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// Bounds recursion so hostile `fields` input cannot exhaust the stack.
const MAX_FIELD_DEPTH: usize = 32;

const IDENTIFIABLE_FIELDS: [&str; 5] = ["id", "name", "code", "created", "lastUpdated"];
const NAMEABLE_EXTRA_FIELDS: [&str; 2] = ["shortName", "description"];

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A malformed query parameter. Every variant names the offending input so
/// the message can be returned to the client verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `position` is a zero-based character offset into `input`.
    #[error("invalid fields `{input}` at position {position}: {message}")]
    InvalidFields {
        input: String,
        position: usize,
        message: String,
    },
    #[error("invalid filter `{filter}`: {message}")]
    InvalidFilter { filter: String, message: String },
    #[error("invalid filter `{filter}`: unknown operator `{operator}`")]
    UnknownOperator { filter: String, operator: String },
    #[error("invalid order `{order}`: {message}")]
    InvalidOrder { order: String, message: String },
    #[error("invalid value `{value}` for parameter `{param}`: {message}")]
    InvalidParameter {
        param: String,
        value: String,
        message: String,
    },
}

impl QueryError {
    /// Status code DHIS2 uses for the equivalent failure: query-parser
    /// problems (bad filter or order) come back as 409 Conflict, malformed
    /// request parameters as 400 Bad Request.
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::InvalidFilter { .. }
            | QueryError::UnknownOperator { .. }
            | QueryError::InvalidOrder { .. } => 409,
            QueryError::InvalidFields { .. } | QueryError::InvalidParameter { .. } => 400,
        }
    }
}

// ---------------------------------------------------------------------------
// Reference resolution
// ---------------------------------------------------------------------------

/// Looks up a referenced metadata object by UID, whatever its type. DHIS2
/// UIDs are globally unique, so the type is never needed.
pub trait Resolver {
    fn resolve(&self, uid: &str) -> Option<Cow<'_, Value>>;
}

/// For callers (and tests) that have nothing to resolve against.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(&self, _uid: &str) -> Option<Cow<'_, Value>> {
        None
    }
}

impl<S: BuildHasher> Resolver for HashMap<String, Value, S> {
    fn resolve(&self, uid: &str) -> Option<Cow<'_, Value>> {
        self.get(uid).map(Cow::Borrowed)
    }
}

impl<F> Resolver for F
where
    F: Fn(&str) -> Option<Value>,
{
    fn resolve(&self, uid: &str) -> Option<Cow<'_, Value>> {
        self(uid).map(Cow::Owned)
    }
}

/// A value is a bare reference when it carries nothing beyond what DHIS2
/// writes for an association (`{"id"}` or `{"id","code"}`); anything richer
/// is an embedded object and is selected from directly.
fn bare_ref_id(map: &Map<String, Value>) -> Option<&str> {
    let id = map.get("id")?.as_str()?;
    map.keys().all(|k| k == "id" || k == "code").then_some(id)
}

/// DHIS2 computes the `display*` properties from the stored ones (after
/// translation, which we do not model), so they are never persisted here.
fn field_value<'v>(map: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    match name {
        "displayName" => map.get("name"),
        "displayShortName" => map.get("shortName"),
        "displayDescription" => map.get("description"),
        "displayFormName" => map.get("formName").or_else(|| map.get("name")),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Fields
// ---------------------------------------------------------------------------

/// A parsed `fields` expression. Items are kept in request order because the
/// output key order follows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fields {
    pub items: Vec<FieldSelection>,
}

/// One comma-separated item of a `fields` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSelection {
    /// `*` or `:all`.
    All,
    /// `:identifiable`, `:nameable`, `:owner`, `:persisted`, `:simple`.
    Preset(Preset),
    /// `!name`.
    Exclude(String),
    /// `name`, `name[...]`, `name(...)`, `name~transformer...`.
    Field(FieldSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// id, name, code, created, lastUpdated.
    Identifiable,
    /// Identifiable plus shortName and description.
    Nameable,
    /// Every stored field; in-memory objects hold exactly the owned fields.
    Owner,
    /// Same as `Owner` here; DHIS2 distinguishes non-owning collections,
    /// which this store never materialises.
    Persisted,
    /// Fields whose value is neither an object nor an array.
    Simple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    pub children: Option<Fields>,
    pub transformers: Vec<Transformer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformer {
    /// `~rename(newName)`.
    Rename(String),
    /// `~size`: length of a collection or string.
    Size,
    /// `~isEmpty`.
    IsEmpty,
    /// `~isNotEmpty`.
    IsNotEmpty,
    /// `~pluck` (ids) or `~pluck(property)`.
    Pluck(Option<String>),
}

impl FieldSpec {
    /// A plain `name` selection.
    pub fn plain(name: impl Into<String>) -> Self {
        FieldSpec {
            name: name.into(),
            children: None,
            transformers: Vec::new(),
        }
    }

    /// The key the value is emitted under; the last rename wins, as a later
    /// transformer sees the output of earlier ones.
    pub fn output_name(&self) -> &str {
        self.transformers
            .iter()
            .rev()
            .find_map(|t| match t {
                Transformer::Rename(n) => Some(n.as_str()),
                _ => None,
            })
            .unwrap_or(&self.name)
    }
}

impl Fields {
    pub fn new(items: Vec<FieldSelection>) -> Self {
        Fields { items }
    }

    /// `*`.
    pub fn all() -> Self {
        Fields::new(vec![FieldSelection::All])
    }

    /// Equivalent to parsing [`DEFAULT_LIST_FIELDS`], without a fallible parse.
    pub fn default_list() -> Self {
        Fields::new(vec![
            FieldSelection::Field(FieldSpec::plain("id")),
            FieldSelection::Field(FieldSpec::plain("displayName")),
        ])
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Combines repeated `fields` parameters. Duplicates are reconciled at
    /// selection time (nested selections of the same field are unioned), so
    /// concatenation is enough here.
    pub fn merge(&mut self, other: Fields) {
        self.items.extend(other.items);
    }
}

impl FromStr for Fields {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_fields(s)
    }
}

/// Parses DHIS2's `fields` syntax, e.g.
/// `id,name,categoryCombo[id,name],dataSetElements[dataSet[id]],:all,!sharing,name~rename(label)`.
pub fn parse_fields(s: &str) -> Result<Fields, QueryError> {
    let mut parser = FieldParser {
        input: s,
        chars: s.chars().collect(),
        pos: 0,
    };
    let items = parser.list(None, 0)?;
    Ok(Fields { items })
}

/// Builds a [`Fields`] from every `fields` parameter of a request, falling
/// back to `default` (e.g. [`DEFAULT_DETAIL_FIELDS`]) when none is given or
/// all are blank, as DHIS2 does.
pub fn fields_from_params(
    params: &[(String, String)],
    default: &str,
) -> Result<Fields, QueryError> {
    let mut fields = Fields::default();
    for (key, value) in params {
        if key == "fields" {
            fields.merge(parse_fields(value)?);
        }
    }
    if fields.is_empty() {
        parse_fields(default)
    } else {
        Ok(fields)
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

struct FieldParser<'s> {
    input: &'s str,
    chars: Vec<char>,
    pos: usize,
}

impl FieldParser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn err(&self, position: usize, message: impl Into<String>) -> QueryError {
        QueryError::InvalidFields {
            input: self.input.to_string(),
            position,
            message: message.into(),
        }
    }

    /// `open` is the bracket that started this list and where, so an
    /// unclosed bracket can be reported at its opening rather than at the end.
    fn list(
        &mut self,
        open: Option<(char, usize)>,
        depth: usize,
    ) -> Result<Vec<FieldSelection>, QueryError> {
        if depth > MAX_FIELD_DEPTH {
            return Err(self.err(
                self.pos,
                format!("fields are nested more than {MAX_FIELD_DEPTH} levels deep"),
            ));
        }
        let closer = open.map(|(c, _)| if c == '[' { ']' } else { ')' });
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => {
                    return match open {
                        Some((c, at)) => Err(self.err(at, format!("unclosed '{c}'"))),
                        None => Ok(items),
                    }
                }
                Some(c) if Some(c) == closer => {
                    self.bump();
                    return Ok(items);
                }
                Some(c @ (']' | ')')) => {
                    let message = match closer {
                        Some(expected) => format!("unexpected '{c}', expected '{expected}'"),
                        None => format!("unexpected '{c}' without a matching opening bracket"),
                    };
                    return Err(self.err(self.pos, message));
                }
                // Empty items (`a,,b`, trailing commas) are tolerated: clients
                // build these strings by concatenation.
                Some(',') => {
                    self.bump();
                    continue;
                }
                Some(_) => {}
            }
            items.push(self.item(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.bump(),
                None => {}
                Some(c) if Some(c) == closer => {}
                Some(c) => {
                    let also = closer.map(|e| format!(" or '{e}'")).unwrap_or_default();
                    return Err(self.err(self.pos, format!("unexpected '{c}', expected ','{also}")));
                }
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<FieldSelection, QueryError> {
        let start = self.pos;
        match self.peek() {
            Some('*') => {
                self.bump();
                Ok(FieldSelection::All)
            }
            Some(':') => {
                self.bump();
                let name = self.ident();
                let preset = match name.as_str() {
                    "all" => return Ok(FieldSelection::All),
                    "identifiable" => Preset::Identifiable,
                    "nameable" => Preset::Nameable,
                    "owner" => Preset::Owner,
                    "persisted" => Preset::Persisted,
                    "simple" => Preset::Simple,
                    "" => return Err(self.err(start, "expected a preset name after ':'")),
                    other => {
                        return Err(self.err(
                            start,
                            format!(
                                "unknown preset ':{other}' (expected :all, :identifiable, \
                                 :nameable, :owner, :persisted or :simple)"
                            ),
                        ))
                    }
                };
                Ok(FieldSelection::Preset(preset))
            }
            Some('!') => {
                self.bump();
                self.skip_ws();
                let name = self.ident();
                if name.is_empty() {
                    Err(self.err(self.pos, "expected a field name after '!'"))
                } else {
                    Ok(FieldSelection::Exclude(name))
                }
            }
            Some(c) if is_ident_char(c) => self.field(depth),
            Some(c) => Err(self.err(start, format!("unexpected '{c}', expected a field name"))),
            None => Err(self.err(start, "expected a field name")),
        }
    }

    fn field(&mut self, depth: usize) -> Result<FieldSelection, QueryError> {
        let name = self.ident();
        self.skip_ws();
        let mut children = None;
        if let Some(open @ ('[' | '(')) = self.peek() {
            let at = self.pos;
            self.bump();
            children = Some(Fields::new(self.list(Some((open, at)), depth + 1)?));
        }
        let mut transformers = self.transformers()?;
        // DHIS2 also accepts the nested block after the transformers
        // (`children~size[...]` is meaningless, but `a~rename(b)[id]` is not).
        // Parentheses are not accepted here: they would be ambiguous with a
        // transformer argument.
        if children.is_none() && self.peek() == Some('[') {
            let at = self.pos;
            self.bump();
            children = Some(Fields::new(self.list(Some(('[', at)), depth + 1)?));
            transformers.extend(self.transformers()?);
        }
        Ok(FieldSelection::Field(FieldSpec {
            name,
            children,
            transformers,
        }))
    }

    fn transformers(&mut self) -> Result<Vec<Transformer>, QueryError> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            let start = self.pos;
            // `::` is the transformer prefix of older DHIS2 versions.
            match (self.peek(), self.peek_at(1)) {
                (Some('~'), _) => self.pos += 1,
                (Some(':'), Some(':')) => self.pos += 2,
                _ => return Ok(out),
            }
            self.skip_ws();
            let name = self.ident();
            if name.is_empty() {
                return Err(self.err(self.pos, "expected a transformer name after '~'"));
            }
            self.skip_ws();
            let mut arg = None;
            if self.peek() == Some('(') {
                let open = self.pos;
                self.bump();
                self.skip_ws();
                let value = self.ident();
                self.skip_ws();
                match self.peek() {
                    Some(')') => self.bump(),
                    None => return Err(self.err(open, "unclosed '('")),
                    Some(c) => {
                        return Err(self.err(
                            self.pos,
                            format!("unexpected '{c}' in transformer argument, expected ')'"),
                        ))
                    }
                }
                arg = Some(value).filter(|v| !v.is_empty());
            }
            let transformer = match (name.as_str(), arg) {
                ("rename", Some(new_name)) => Transformer::Rename(new_name),
                ("rename", None) => {
                    return Err(self.err(start, "~rename needs a new name, e.g. name~rename(label)"))
                }
                ("size", None) => Transformer::Size,
                ("isEmpty", None) => Transformer::IsEmpty,
                ("isNotEmpty", None) => Transformer::IsNotEmpty,
                ("size" | "isEmpty" | "isNotEmpty", Some(_)) => {
                    return Err(self.err(start, format!("~{name} takes no argument")))
                }
                ("pluck", property) => Transformer::Pluck(property),
                (other, _) => {
                    return Err(self.err(
                        start,
                        format!(
                            "unknown transformer '~{other}' (expected rename, size, isEmpty, \
                             isNotEmpty or pluck)"
                        ),
                    ))
                }
            };
            out.push(transformer);
        }
    }
}

/// One output key and how to compute it.
struct PlanEntry<'f> {
    key: String,
    source: String,
    children: Option<Cow<'f, Fields>>,
    transformers: &'f [Transformer],
}

fn plan_plain(entries: &mut Vec<PlanEntry<'_>>, name: &str) {
    if !entries.iter().any(|e| e.key == name) {
        entries.push(PlanEntry {
            key: name.to_string(),
            source: name.to_string(),
            children: None,
            transformers: &[],
        });
    }
}

fn plan_spec<'f>(entries: &mut Vec<PlanEntry<'f>>, spec: &'f FieldSpec) {
    let key = spec.output_name();
    let new = PlanEntry {
        key: key.to_string(),
        source: spec.name.clone(),
        children: spec.children.as_ref().map(Cow::Borrowed),
        transformers: &spec.transformers,
    };
    let Some(existing) = entries.iter_mut().find(|e| e.key == key) else {
        entries.push(new);
        return;
    };
    let same_shape = existing.source == new.source && existing.transformers == new.transformers;
    match (&mut existing.children, new.children) {
        // `fields=a[b]&fields=a[c]` must yield `a` with both `b` and `c`.
        (Some(old), Some(extra)) if same_shape => old.to_mut().merge(extra.into_owned()),
        // A bare repeat of a field (e.g. from `*` or a preset) must not undo
        // a richer selection of it.
        (_, None) if same_shape && new.transformers.is_empty() => {}
        (_, children) => {
            // Keep the original position: clients see a stable key order.
            *existing = PlanEntry { children, ..new };
        }
    }
}

fn plan<'f>(map: &Map<String, Value>, fields: &'f Fields) -> Vec<PlanEntry<'f>> {
    let mut entries: Vec<PlanEntry<'f>> = Vec::new();
    let mut excluded: Vec<&str> = Vec::new();
    for item in &fields.items {
        match item {
            FieldSelection::All
            | FieldSelection::Preset(Preset::Owner)
            | FieldSelection::Preset(Preset::Persisted) => {
                for key in map.keys() {
                    plan_plain(&mut entries, key);
                }
            }
            FieldSelection::Preset(Preset::Simple) => {
                for (key, value) in map {
                    if !value.is_object() && !value.is_array() {
                        plan_plain(&mut entries, key);
                    }
                }
            }
            FieldSelection::Preset(Preset::Identifiable) => {
                for key in IDENTIFIABLE_FIELDS {
                    plan_plain(&mut entries, key);
                }
            }
            FieldSelection::Preset(Preset::Nameable) => {
                for key in IDENTIFIABLE_FIELDS.iter().chain(&NAMEABLE_EXTRA_FIELDS) {
                    plan_plain(&mut entries, key);
                }
            }
            FieldSelection::Exclude(name) => excluded.push(name),
            FieldSelection::Field(spec) => plan_spec(&mut entries, spec),
        }
    }
    // Exclusions win regardless of position, so `!sharing,:all` works too.
    entries.retain(|e| !excluded.iter().any(|x| *x == e.source || *x == e.key));
    entries
}

/// Applies a field selection to one metadata object.
///
/// Plain names copy the stored value (references stay `{"id"}`); nested
/// selections resolve bare references through `resolver` and descend into
/// embedded objects directly; arrays are mapped element-wise. Names the
/// object does not have are omitted, as DHIS2 does.
pub fn select(obj: &Value, fields: &Fields, resolver: &dyn Resolver) -> Value {
    let Value::Object(map) = obj else {
        return obj.clone();
    };
    let mut out = Map::new();
    for entry in plan(map, fields) {
        let Some(raw) = field_value(map, &entry.source) else {
            continue;
        };
        let mut value = match &entry.children {
            Some(children) => select_nested(raw, children, resolver),
            None => raw.clone(),
        };
        for transformer in entry.transformers {
            value = transform(value, transformer, resolver);
        }
        out.insert(entry.key, value);
    }
    Value::Object(out)
}

fn select_nested(value: &Value, children: &Fields, resolver: &dyn Resolver) -> Value {
    match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| select_nested(item, children, resolver))
                .collect(),
        ),
        Value::Object(map) => {
            let resolved = bare_ref_id(map).and_then(|id| resolver.resolve(id));
            match resolved {
                Some(target) if target.is_object() => select(&target, children, resolver),
                // Unresolvable references degrade to what we know: the
                // reference itself, so at least `id` survives.
                _ => select(value, children, resolver),
            }
        }
        other => other.clone(),
    }
}

fn is_emptyish(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn transform(value: Value, transformer: &Transformer, resolver: &dyn Resolver) -> Value {
    match transformer {
        Transformer::Rename(_) => value,
        Transformer::Size => match &value {
            Value::Array(a) => Value::from(a.len()),
            Value::String(s) => Value::from(s.chars().count()),
            Value::Object(o) => Value::from(o.len()),
            Value::Null => Value::from(0),
            Value::Bool(_) | Value::Number(_) => value,
        },
        Transformer::IsEmpty => Value::Bool(is_emptyish(&value)),
        Transformer::IsNotEmpty => Value::Bool(!is_emptyish(&value)),
        Transformer::Pluck(property) => {
            let property = property.as_deref().unwrap_or("id");
            match value {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .filter_map(|item| pluck_one(item, property, resolver))
                        .collect(),
                ),
                Value::Object(_) => pluck_one(&value, property, resolver).unwrap_or(Value::Null),
                other => other,
            }
        }
    }
}

fn pluck_one(item: &Value, property: &str, resolver: &dyn Resolver) -> Option<Value> {
    let Value::Object(map) = item else {
        return Some(item.clone());
    };
    if let Some(v) = field_value(map, property) {
        return Some(v.clone());
    }
    // A stored reference only knows its id; anything else needs the target.
    let id = map.get("id")?.as_str()?;
    let target = resolver.resolve(id)?;
    field_value(target.as_object()?, property).cloned()
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

/// How multiple filters combine (`rootJunction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Junction {
    #[default]
    And,
    Or,
}

impl FromStr for Junction {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "AND" => Ok(Junction::And),
            "OR" => Ok(Junction::Or),
            _ => Err(QueryError::InvalidParameter {
                param: "rootJunction".into(),
                value: s.into(),
                message: "expected AND or OR".into(),
            }),
        }
    }
}

/// The positive form of a filter operator; negation is [`Filter::negated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    /// `like`: case-sensitive substring.
    Like,
    /// `$like`.
    StartsWith,
    /// `like$`.
    EndsWith,
    /// `ilike`: case-insensitive substring.
    ILike,
    /// `$ilike`.
    IStartsWith,
    /// `ilike$`.
    IEndsWith,
    In,
    Null,
    Empty,
    Gt,
    Ge,
    Lt,
    Le,
    /// Every whitespace-separated token occurs, case-insensitively.
    Token,
}

impl Operator {
    fn parse(s: &str) -> Option<(Operator, bool)> {
        let (negated, base) = match s.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let op = match base {
            "eq" => Operator::Eq,
            "ne" | "neq" if !negated => return Some((Operator::Eq, true)),
            "like" => Operator::Like,
            "$like" => Operator::StartsWith,
            "like$" => Operator::EndsWith,
            "ilike" => Operator::ILike,
            "$ilike" => Operator::IStartsWith,
            "ilike$" => Operator::IEndsWith,
            "in" => Operator::In,
            "null" => Operator::Null,
            "empty" => Operator::Empty,
            "token" => Operator::Token,
            // DHIS2 has no negated ordering operators; `!gt` is an error.
            "gt" if !negated => Operator::Gt,
            "ge" if !negated => Operator::Ge,
            "lt" if !negated => Operator::Lt,
            "le" if !negated => Operator::Le,
            _ => return None,
        };
        Some((op, negated))
    }

    fn takes_value(self) -> bool {
        !matches!(self, Operator::Null | Operator::Empty)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// `null`, `empty` and their negations.
    None,
    Value(String),
    /// The `[a,b,c]` list of `in` / `!in`.
    List(Vec<String>),
}

/// A parsed `filter=property:operator:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The property as written, e.g. `dataSetElements.dataSet.id`.
    pub property: String,
    /// `property` split on dots.
    pub path: Vec<String>,
    pub operator: Operator,
    /// Negated operators match exactly the objects the positive form does
    /// not, so `!eq` on a missing property matches.
    pub negated: bool,
    pub operand: Operand,
}

impl FromStr for Filter {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_filter(s)
    }
}

/// Parses `property:operator[:value]`. Only the first two colons separate,
/// so values such as timestamps (`lastUpdated:gt:2024-01-01T10:00:00`) keep
/// theirs.
pub fn parse_filter(s: &str) -> Result<Filter, QueryError> {
    let invalid = |message: String| QueryError::InvalidFilter {
        filter: s.to_string(),
        message,
    };
    let mut parts = s.splitn(3, ':');
    let property = parts.next().unwrap_or_default().trim();
    let Some(operator) = parts.next().map(str::trim) else {
        return Err(invalid(
            "expected `property:operator:value` (missing ':' after the property)".into(),
        ));
    };
    let value = parts.next();
    if property.is_empty() {
        return Err(invalid("missing property name before ':'".into()));
    }
    let path: Vec<String> = property.split('.').map(|p| p.trim().to_string()).collect();
    if path.iter().any(String::is_empty) {
        return Err(invalid(format!(
            "empty segment in property path `{property}`"
        )));
    }
    if operator.is_empty() {
        return Err(invalid("missing operator after the property".into()));
    }
    let Some((op, negated)) = Operator::parse(operator) else {
        return Err(QueryError::UnknownOperator {
            filter: s.to_string(),
            operator: operator.to_string(),
        });
    };
    let operand = if !op.takes_value() {
        Operand::None
    } else {
        let Some(value) = value else {
            return Err(invalid(format!("operator `{operator}` needs a value")));
        };
        if op == Operator::In {
            Operand::List(parse_in_list(value).map_err(invalid)?)
        } else {
            Operand::Value(value.to_string())
        }
    };
    Ok(Filter {
        property: property.to_string(),
        path,
        operator: op,
        negated,
        operand,
    })
}

fn parse_in_list(value: &str) -> Result<Vec<String>, String> {
    let trimmed = value.trim();
    // The brackets are DHIS2's syntax, but a bare `a,b` is unambiguous.
    let inner = match (trimmed.strip_prefix('['), trimmed.ends_with(']')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (Some(_), false) => return Err(format!("unterminated list `{trimmed}` (missing ']')")),
        (None, _) => trimmed,
    };
    Ok(inner
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect())
}

impl Filter {
    /// Whether `obj` satisfies this filter on its own.
    pub fn matches(&self, obj: &Value, resolver: &dyn Resolver) -> bool {
        let positive = if self.is_identifiable_pseudo_property(obj) {
            self.matches_identifiable(obj)
        } else {
            let raw = collect_path(obj, &self.path, resolver);
            self.matches_values(raw)
        };
        positive != self.negated
    }

    /// `identifiable` is DHIS2's shorthand for "id, code or name"; a real
    /// property of that name (none exists in DHIS2) would take precedence.
    fn is_identifiable_pseudo_property(&self, obj: &Value) -> bool {
        self.path.len() == 1 && self.path[0] == "identifiable" && obj.get("identifiable").is_none()
    }

    fn matches_identifiable(&self, obj: &Value) -> bool {
        let candidates: Vec<&Value> = ["id", "code", "name"]
            .iter()
            .filter_map(|k| obj.get(k))
            .collect();
        match (&self.operator, &self.operand) {
            // Tokens may be spread over the three properties: "ANC DE_ANC"
            // should find a data element by name and code together.
            (Operator::Token, Operand::Value(v)) => v.split_whitespace().all(|token| {
                let token = token.to_lowercase();
                candidates
                    .iter()
                    .filter_map(|c| text_of(c))
                    .any(|t| t.to_lowercase().contains(&token))
            }),
            _ => self.matches_values(candidates.into_iter().map(Cow::Borrowed).collect()),
        }
    }

    fn matches_values(&self, raw: Vec<Cow<'_, Value>>) -> bool {
        match self.operator {
            Operator::Null => raw.iter().all(|v| v.is_null()),
            Operator::Empty => raw.iter().all(|v| is_emptyish(v)),
            _ => {
                let mut leaves = Vec::new();
                flatten_into(raw, &mut leaves);
                leaves.iter().any(|leaf| self.test_leaf(leaf))
            }
        }
    }

    fn test_leaf(&self, leaf: &Value) -> bool {
        let value = match &self.operand {
            Operand::Value(v) => v.as_str(),
            Operand::List(list) => {
                return self.operator == Operator::In && list.iter().any(|v| values_equal(leaf, v))
            }
            Operand::None => return false,
        };
        let text = || text_of(leaf);
        let lower = || text_of(leaf).map(|t| t.to_lowercase());
        match self.operator {
            Operator::Eq => values_equal(leaf, value),
            Operator::Like => text().is_some_and(|t| t.contains(value)),
            Operator::StartsWith => text().is_some_and(|t| t.starts_with(value)),
            Operator::EndsWith => text().is_some_and(|t| t.ends_with(value)),
            Operator::ILike => lower().is_some_and(|t| t.contains(&value.to_lowercase())),
            Operator::IStartsWith => lower().is_some_and(|t| t.starts_with(&value.to_lowercase())),
            Operator::IEndsWith => lower().is_some_and(|t| t.ends_with(&value.to_lowercase())),
            Operator::Token => lower().is_some_and(|t| {
                value
                    .split_whitespace()
                    .all(|token| t.contains(&token.to_lowercase()))
            }),
            Operator::Gt => compare_leaf(leaf, value) == Some(Ordering::Greater),
            Operator::Ge => matches!(
                compare_leaf(leaf, value),
                Some(Ordering::Greater | Ordering::Equal)
            ),
            Operator::Lt => compare_leaf(leaf, value) == Some(Ordering::Less),
            Operator::Le => matches!(
                compare_leaf(leaf, value),
                Some(Ordering::Less | Ordering::Equal)
            ),
            Operator::In | Operator::Null | Operator::Empty => false,
        }
    }
}

/// Whether `obj` passes `filters` combined with `root_junction`. No filters
/// means everything matches, under either junction.
pub fn matches(
    obj: &Value,
    filters: &[Filter],
    root_junction: Junction,
    resolver: &dyn Resolver,
) -> bool {
    if filters.is_empty() {
        return true;
    }
    match root_junction {
        Junction::And => filters.iter().all(|f| f.matches(obj, resolver)),
        Junction::Or => filters.iter().any(|f| f.matches(obj, resolver)),
    }
}

/// The values reached by following `path` from `root`. Arrays along the way
/// fan out (so `dataSetElements.dataSet.id` yields every data set id); an
/// array at the end is kept whole so `null`/`empty` can see the collection.
/// Missing properties of a reference are looked up on the referenced object.
fn collect_path<'a>(
    root: &'a Value,
    path: &[String],
    resolver: &'a dyn Resolver,
) -> Vec<Cow<'a, Value>> {
    let mut current = vec![Cow::Borrowed(root)];
    for (depth, key) in path.iter().enumerate() {
        let mut next = Vec::new();
        for value in current {
            // The root is never a reference to something else; resolving it
            // would only re-fetch the same object.
            step(value, key, depth > 0, resolver, &mut next);
        }
        current = next;
    }
    current
}

fn step<'a>(
    value: Cow<'a, Value>,
    key: &str,
    may_resolve: bool,
    resolver: &'a dyn Resolver,
    out: &mut Vec<Cow<'a, Value>>,
) {
    match value {
        Cow::Borrowed(Value::Array(items)) => {
            for item in items {
                step(Cow::Borrowed(item), key, may_resolve, resolver, out);
            }
        }
        Cow::Owned(Value::Array(items)) => {
            for item in items {
                step(Cow::Owned(item), key, may_resolve, resolver, out);
            }
        }
        Cow::Borrowed(Value::Object(map)) => match field_value(map, key) {
            Some(v) => out.push(Cow::Borrowed(v)),
            None if may_resolve => step_resolved(map, key, resolver, out),
            None => {}
        },
        Cow::Owned(Value::Object(map)) => match field_value(&map, key) {
            Some(v) => out.push(Cow::Owned(v.clone())),
            None if may_resolve => step_resolved(&map, key, resolver, out),
            None => {}
        },
        _ => {}
    }
}

/// Deliberately one level only: a resolved object lacking the key is a
/// dead end, which also rules out cycles between references.
fn step_resolved<'a>(
    map: &Map<String, Value>,
    key: &str,
    resolver: &'a dyn Resolver,
    out: &mut Vec<Cow<'a, Value>>,
) {
    let Some(id) = map.get("id").and_then(Value::as_str) else {
        return;
    };
    match resolver.resolve(id) {
        Some(Cow::Borrowed(Value::Object(target))) => {
            if let Some(v) = field_value(target, key) {
                out.push(Cow::Borrowed(v));
            }
        }
        Some(Cow::Owned(Value::Object(target))) => {
            if let Some(v) = field_value(&target, key) {
                out.push(Cow::Owned(v.clone()));
            }
        }
        _ => {}
    }
}

fn flatten_into<'a>(values: Vec<Cow<'a, Value>>, out: &mut Vec<Cow<'a, Value>>) {
    for value in values {
        match value {
            Cow::Borrowed(Value::Array(items)) => {
                flatten_into(items.iter().map(Cow::Borrowed).collect(), out)
            }
            Cow::Owned(Value::Array(items)) => {
                flatten_into(items.into_iter().map(Cow::Owned).collect(), out)
            }
            other => out.push(other),
        }
    }
}

/// Text a string operator sees. A reference compares by its id so that
/// `categoryCombo:eq:<uid>` works like `categoryCombo.id:eq:<uid>`.
fn text_of(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Object(map) => map.get("id").and_then(Value::as_str).map(Cow::Borrowed),
        Value::Null | Value::Array(_) => None,
    }
}

/// Rejects `inf`/`NaN`, which `f64::from_str` accepts but nobody means.
fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Equality for `eq`/`in`. Stored strings compare as strings even when they
/// look numeric, so `code:eq:007` does not match a code of `7`.
fn values_equal(leaf: &Value, operand: &str) -> bool {
    match leaf {
        Value::Number(n) => match (n.as_f64(), parse_number(operand)) {
            (Some(a), Some(b)) => a == b,
            _ => n.to_string() == operand,
        },
        Value::Bool(b) => parse_bool(operand) == Some(*b),
        Value::String(_) | Value::Object(_) => text_of(leaf).is_some_and(|t| t == operand),
        Value::Null | Value::Array(_) => false,
    }
}

/// Ordering for `gt`/`ge`/`lt`/`le`: numeric when both sides are numbers,
/// otherwise lexicographic, which is also chronological for ISO timestamps.
fn compare_leaf(leaf: &Value, operand: &str) -> Option<Ordering> {
    match leaf {
        Value::Number(n) => n.as_f64()?.partial_cmp(&parse_number(operand)?),
        Value::Bool(b) => Some(b.cmp(&parse_bool(operand)?)),
        Value::String(s) => match (parse_number(s), parse_number(operand)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(s.as_str().cmp(operand)),
        },
        Value::Object(_) => text_of(leaf).map(|t| t.as_ref().cmp(operand)),
        Value::Null | Value::Array(_) => None,
    }
}

// ---------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// One `property:direction` of an `order` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSpec {
    /// May be dotted to reach into embedded objects (`leftSide.expression`).
    pub property: String,
    pub direction: Direction,
    /// `iasc` / `idesc`.
    pub ignore_case: bool,
}

/// Parses `name:asc,code:desc,shortName:iasc,created` (direction defaults
/// to ascending).
pub fn parse_order(s: &str) -> Result<Vec<OrderSpec>, QueryError> {
    let invalid = |message: String| QueryError::InvalidOrder {
        order: s.to_string(),
        message,
    };
    let mut specs = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (property, direction) = match part.split_once(':') {
            Some((p, d)) => (p.trim(), Some(d.trim())),
            None => (part, None),
        };
        if property.is_empty() || property.split('.').any(|seg| seg.trim().is_empty()) {
            return Err(invalid(format!(
                "missing or malformed property in `{part}`"
            )));
        }
        let (direction, ignore_case) = match direction.map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => (Direction::Asc, false),
            Some("desc") => (Direction::Desc, false),
            Some("iasc") => (Direction::Asc, true),
            Some("idesc") => (Direction::Desc, true),
            Some(other) => {
                return Err(invalid(format!(
                "unknown direction `{other}` for `{property}` (expected asc, desc, iasc or idesc)"
            )))
            }
        };
        specs.push(OrderSpec {
            property: property.to_string(),
            direction,
            ignore_case,
        });
    }
    Ok(specs)
}

/// Stable sort by `order`; objects lacking a property sort after those
/// having it, in either direction.
pub fn sort(objs: &mut [Value], order: &[OrderSpec]) {
    if order.is_empty() || objs.len() < 2 {
        return;
    }
    let permutation = {
        let refs: Vec<&Value> = objs.iter().collect();
        order_permutation(&refs, order)
    };
    let mut taken: Vec<Value> = objs.iter_mut().map(std::mem::take).collect();
    for (slot, index) in objs.iter_mut().zip(permutation) {
        *slot = std::mem::take(&mut taken[index]);
    }
}

/// Keys are extracted once up front: path walking per comparison would make
/// sorting O(n log n) walks instead of O(n).
fn order_permutation(objs: &[&Value], order: &[OrderSpec]) -> Vec<usize> {
    let paths: Vec<Vec<String>> = order
        .iter()
        .map(|o| {
            o.property
                .split('.')
                .map(|s| s.trim().to_string())
                .collect()
        })
        .collect();
    let keys: Vec<Vec<Option<Value>>> = objs
        .iter()
        .map(|obj| paths.iter().map(|path| sort_key(obj, path)).collect())
        .collect();
    let mut indices: Vec<usize> = (0..objs.len()).collect();
    indices.sort_by(|&a, &b| compare_keys(&keys[a], &keys[b], order));
    indices
}

fn sort_key(obj: &Value, path: &[String]) -> Option<Value> {
    let mut leaves = Vec::new();
    flatten_into(collect_path(obj, path, &NoResolver), &mut leaves);
    leaves
        .into_iter()
        .find(|v| !v.is_null())
        .map(Cow::into_owned)
}

fn compare_keys(a: &[Option<Value>], b: &[Option<Value>], order: &[OrderSpec]) -> Ordering {
    for ((ka, kb), spec) in a.iter().zip(b).zip(order) {
        let ordering = match (ka, kb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = compare_values(x, y, spec.ignore_case);
                match spec.direction {
                    Direction::Asc => o,
                    Direction::Desc => o.reverse(),
                }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

fn compare_values(a: &Value, b: &Value, ignore_case: bool) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => Ordering::Equal,
        },
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => {
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let (x, y) = (text(a), text(b));
            if ignore_case {
                x.to_lowercase().cmp(&y.to_lowercase())
            } else {
                x.cmp(&y)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// 1-based.
    pub page: u64,
    pub page_size: u64,
    /// `paging=false` returns everything and no pager.
    pub enabled: bool,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            enabled: true,
        }
    }
}

impl Paging {
    /// Index of the first object on the page.
    pub fn offset(&self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.page_size)
    }

    /// DHIS2 reports at least one page even for an empty result.
    pub fn page_count(&self, total: u64) -> u64 {
        total.div_ceil(self.page_size.max(1)).max(1)
    }
}

/// Parses the `paging`, `page` and `pageSize` parameters.
pub fn parse_paging(
    paging: Option<&str>,
    page: Option<&str>,
    page_size: Option<&str>,
) -> Result<Paging, QueryError> {
    let enabled = match paging {
        None => true,
        Some(v) => parse_bool(v).ok_or_else(|| QueryError::InvalidParameter {
            param: "paging".into(),
            value: v.into(),
            message: "expected true or false".into(),
        })?,
    };
    Ok(Paging {
        page: parse_positive("page", page)?.unwrap_or(1),
        page_size: parse_positive("pageSize", page_size)?.unwrap_or(DEFAULT_PAGE_SIZE),
        enabled,
    })
}

fn parse_positive(param: &str, value: Option<&str>) -> Result<Option<u64>, QueryError> {
    let Some(raw) = value else {
        return Ok(None);
    };
    let invalid = |message: &str| QueryError::InvalidParameter {
        param: param.into(),
        value: raw.into(),
        message: message.into(),
    };
    match raw.trim().parse::<u64>() {
        Ok(0) => Err(invalid("must be at least 1")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(invalid("expected a positive integer")),
    }
}

/// DHIS2's `pager` object. `base_url` is the collection URL without paging
/// parameters; links are only emitted when it is given and the target page
/// exists.
pub fn pager_json(total: u64, paging: &Paging, base_url: Option<&str>) -> Value {
    let page_count = paging.page_count(total);
    let mut pager = Map::new();
    pager.insert("page".into(), Value::from(paging.page));
    pager.insert("pageCount".into(), Value::from(page_count));
    pager.insert("total".into(), Value::from(total));
    pager.insert("pageSize".into(), Value::from(paging.page_size));
    if let Some(base) = base_url {
        if paging.page < page_count {
            pager.insert(
                "nextPage".into(),
                Value::from(page_url(base, paging.page + 1, paging.page_size)),
            );
        }
        if paging.page > 1 && paging.page - 1 <= page_count {
            pager.insert(
                "prevPage".into(),
                Value::from(page_url(base, paging.page - 1, paging.page_size)),
            );
        }
    }
    Value::Object(pager)
}

fn page_url(base: &str, page: u64, page_size: u64) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    // Without it a client following the link would silently fall back to
    // 50 per page and see overlapping or skipped objects.
    if page_size == DEFAULT_PAGE_SIZE {
        format!("{base}{separator}page={page}")
    } else {
        format!("{base}{separator}page={page}&pageSize={page_size}")
    }
}

// ---------------------------------------------------------------------------
// List endpoint
// ---------------------------------------------------------------------------

/// Everything a metadata list endpoint takes from its query string.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub fields: Fields,
    pub filters: Vec<Filter>,
    pub junction: Junction,
    /// Empty keeps the input order.
    pub order: Vec<OrderSpec>,
    pub paging: Paging,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            fields: Fields::default_list(),
            filters: Vec::new(),
            junction: Junction::And,
            order: Vec::new(),
            paging: Paging::default(),
        }
    }
}

impl ListQuery {
    /// Reads `fields` (repeats merge; absent or blank means
    /// [`DEFAULT_LIST_FIELDS`]), `filter` (repeats combine under
    /// `rootJunction`), `order` (repeats append), `paging`, `page` and
    /// `pageSize` (last one wins). Other parameters are ignored, since
    /// DHIS2 clients send many this module does not interpret.
    pub fn from_params(params: &[(String, String)]) -> Result<ListQuery, QueryError> {
        let mut fields = Fields::default();
        let mut filters = Vec::new();
        let mut junction = Junction::And;
        let mut order = Vec::new();
        let (mut paging, mut page, mut page_size) = (None, None, None);
        for (key, value) in params {
            match key.as_str() {
                "fields" => fields.merge(parse_fields(value)?),
                "filter" => filters.push(parse_filter(value)?),
                "rootJunction" => junction = value.parse()?,
                "order" => order.extend(parse_order(value)?),
                "paging" => paging = Some(value.as_str()),
                "page" => page = Some(value.as_str()),
                "pageSize" => page_size = Some(value.as_str()),
                _ => {}
            }
        }
        if fields.is_empty() {
            fields = Fields::default_list();
        }
        Ok(ListQuery {
            fields,
            filters,
            junction,
            order,
            paging: parse_paging(paging, page, page_size)?,
        })
    }

    /// Produces the DHIS2 list body `{"pager": {...}, "<collection_name>": [...]}`
    /// (no `pager` with `paging=false`). Filtering and ordering happen before
    /// paging so `total` counts matches, and selection happens last so only
    /// the returned page pays for reference resolution.
    pub fn apply<'a>(
        &self,
        collection_name: &str,
        objects: impl Iterator<Item = &'a Value>,
        resolver: &dyn Resolver,
        base_url: Option<&str>,
    ) -> Value {
        let mut hits: Vec<&Value> = objects
            .filter(|obj| matches(obj, &self.filters, self.junction, resolver))
            .collect();
        if !self.order.is_empty() {
            hits = order_permutation(&hits, &self.order)
                .into_iter()
                .map(|i| hits[i])
                .collect();
        }
        let total = hits.len() as u64;
        let page: &[&Value] = if self.paging.enabled {
            let start = usize::try_from(self.paging.offset())
                .unwrap_or(usize::MAX)
                .min(hits.len());
            let size = usize::try_from(self.paging.page_size).unwrap_or(usize::MAX);
            let end = start.saturating_add(size).min(hits.len());
            &hits[start..end]
        } else {
            &hits
        };
        let selected: Vec<Value> = page
            .iter()
            .map(|obj| select(obj, &self.fields, resolver))
            .collect();
        let mut body = Map::new();
        if self.paging.enabled {
            body.insert("pager".into(), pager_json(total, &self.paging, base_url));
        }
        body.insert(collection_name.to_string(), Value::Array(selected));
        Value::Object(body)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn store() -> HashMap<String, Value> {
        let objects = [
            json!({"id": "bjDvmb4bfuf", "name": "default", "code": "default",
                   "categories": [{"id": "GLevLNI9wkl"}]}),
            json!({"id": "GLevLNI9wkl", "name": "default category"}),
            json!({"id": "QX4ZTUbOt3a", "name": "Reproductive Health", "shortName": "RH",
                   "periodType": "Monthly"}),
            json!({"id": "BfMAe6Itzgt", "name": "Child Health", "periodType": "Monthly"}),
            json!({"id": "ImspTQPwCqd", "name": "Sierra Leone", "level": 1}),
        ];
        objects
            .into_iter()
            .filter_map(|o| Some((o.get("id")?.as_str()?.to_string(), o)))
            .collect()
    }

    fn anc1() -> Value {
        json!({
            "id": "fbfJHSPpUQD",
            "name": "ANC 1st visit",
            "shortName": "ANC1",
            "code": "DE_ANC1",
            "valueType": "NUMBER",
            "zeroIsSignificant": false,
            "sortOrder": 3,
            "categoryCombo": {"id": "bjDvmb4bfuf"},
            "dataSetElements": [
                {"dataSet": {"id": "QX4ZTUbOt3a"}, "dataElement": {"id": "fbfJHSPpUQD"}},
                {"dataSet": {"id": "BfMAe6Itzgt"}, "dataElement": {"id": "fbfJHSPpUQD"}}
            ],
            "aggregationLevels": [1, 3],
            "legendSets": [],
            "sharing": {"public": "rw------"},
            "created": "2024-03-05T10:15:30.123",
            "lastUpdated": "2024-06-01T08:00:00.000"
        })
    }

    fn anc2() -> Value {
        json!({
            "id": "cYeuwXTCPkU",
            "name": "ANC 2nd visit",
            "shortName": "ANC2",
            "code": "DE_ANC2",
            "valueType": "NUMBER",
            "zeroIsSignificant": true,
            "sortOrder": 10,
            "categoryCombo": {"id": "bjDvmb4bfuf"},
            "dataSetElements": [
                {"dataSet": {"id": "BfMAe6Itzgt"}, "dataElement": {"id": "cYeuwXTCPkU"}}
            ],
            "legendSets": [{"id": "fqs276KXCXi"}],
            "created": "2023-01-01T00:00:00.000",
            "lastUpdated": "2023-02-01T00:00:00.000"
        })
    }

    fn weight() -> Value {
        json!({
            "id": "qrur9Dvnyt5",
            "name": "Weight in kg",
            "valueType": "TEXT",
            "description": "",
            "categoryCombo": {"id": "missingCC01"},
            "created": "2022-05-05T00:00:00.000",
            "lastUpdated": "2022-05-05T00:00:00.000"
        })
    }

    fn sel(obj: &Value, fields: &str) -> Value {
        let fields = parse_fields(fields).expect("valid fields");
        select(obj, &fields, &store())
    }

    fn filt(obj: &Value, filter: &str) -> bool {
        parse_filter(filter)
            .expect("valid filter")
            .matches(obj, &store())
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fields_error(input: &str) -> (usize, String) {
        match parse_fields(input) {
            Err(QueryError::InvalidFields {
                position, message, ..
            }) => (position, message),
            other => panic!("expected a fields error for {input:?}, got {other:?}"),
        }
    }

    // --- fields: parsing -------------------------------------------------

    #[test]
    fn default_constants_parse_to_their_builders() {
        assert_eq!(
            parse_fields(DEFAULT_LIST_FIELDS),
            Ok(Fields::default_list())
        );
        assert_eq!(parse_fields(DEFAULT_DETAIL_FIELDS), Ok(Fields::all()));
    }

    #[test]
    fn parses_nesting_presets_exclusions_and_transformers() {
        let fields = parse_fields(
            " id , categoryCombo[ id, categories(id,name) ], :nameable, !sharing, name~rename(label), \
             dataSetElements~size, legendSets::isEmpty, organisationUnits~pluck(name) ",
        )
        .expect("valid");
        let expected = Fields::new(vec![
            FieldSelection::Field(FieldSpec::plain("id")),
            FieldSelection::Field(FieldSpec {
                name: "categoryCombo".into(),
                children: Some(Fields::new(vec![
                    FieldSelection::Field(FieldSpec::plain("id")),
                    FieldSelection::Field(FieldSpec {
                        name: "categories".into(),
                        children: Some(Fields::new(vec![
                            FieldSelection::Field(FieldSpec::plain("id")),
                            FieldSelection::Field(FieldSpec::plain("name")),
                        ])),
                        transformers: vec![],
                    }),
                ])),
                transformers: vec![],
            }),
            FieldSelection::Preset(Preset::Nameable),
            FieldSelection::Exclude("sharing".into()),
            FieldSelection::Field(FieldSpec {
                name: "name".into(),
                children: None,
                transformers: vec![Transformer::Rename("label".into())],
            }),
            FieldSelection::Field(FieldSpec {
                name: "dataSetElements".into(),
                children: None,
                transformers: vec![Transformer::Size],
            }),
            FieldSelection::Field(FieldSpec {
                name: "legendSets".into(),
                children: None,
                transformers: vec![Transformer::IsEmpty],
            }),
            FieldSelection::Field(FieldSpec {
                name: "organisationUnits".into(),
                children: None,
                transformers: vec![Transformer::Pluck(Some("name".into()))],
            }),
        ]);
        assert_eq!(fields, expected);
    }

    #[test]
    fn parses_presets_and_tolerates_empty_items() {
        let fields = parse_fields(":all,,:identifiable,:owner,:simple,:persisted,").expect("valid");
        assert_eq!(
            fields.items,
            vec![
                FieldSelection::All,
                FieldSelection::Preset(Preset::Identifiable),
                FieldSelection::Preset(Preset::Owner),
                FieldSelection::Preset(Preset::Simple),
                FieldSelection::Preset(Preset::Persisted),
            ]
        );
        assert_eq!(parse_fields("").map(|f| f.is_empty()), Ok(true));
        assert_eq!(parse_fields("   ").map(|f| f.is_empty()), Ok(true));
    }

    #[test]
    fn transformers_may_follow_the_nested_block_or_precede_it() {
        let a = parse_fields("dataSets[id]~rename(sets)").expect("valid");
        let b = parse_fields("dataSets~rename(sets)[id]").expect("valid");
        assert_eq!(a, b);
    }

    #[test]
    fn malformed_fields_report_position_and_reason() {
        let (pos, msg) = fields_error("a[b");
        assert_eq!((pos, msg.as_str()), (1, "unclosed '['"));

        let (pos, msg) = fields_error("id,name]");
        assert_eq!(pos, 7);
        assert!(msg.contains("unexpected ']'"), "{msg}");

        let (pos, msg) = fields_error("a[b)");
        assert_eq!(pos, 3);
        assert_eq!(msg, "unexpected ')', expected ',' or ']'");

        let (pos, msg) = fields_error("id,:bogus");
        assert_eq!(pos, 3);
        assert!(msg.contains("unknown preset ':bogus'"), "{msg}");

        let (_, msg) = fields_error("name~frobnicate");
        assert!(msg.contains("unknown transformer '~frobnicate'"), "{msg}");

        let (_, msg) = fields_error("name~rename");
        assert!(msg.contains("needs a new name"), "{msg}");

        let (_, msg) = fields_error("name~rename(x");
        assert!(msg.contains("unclosed '('"), "{msg}");

        let (_, msg) = fields_error("a b");
        assert!(msg.contains("expected ','"), "{msg}");

        let (_, msg) = fields_error("!");
        assert!(msg.contains("after '!'"), "{msg}");

        let (_, msg) = fields_error("name~size(3)");
        assert!(msg.contains("takes no argument"), "{msg}");

        let deep = format!("{}x{}", "a[".repeat(40), "]".repeat(40));
        let (_, msg) = fields_error(&deep);
        assert!(msg.contains("nested more than"), "{msg}");

        let full = parse_fields("a[b").expect_err("unclosed").to_string();
        assert_eq!(full, "invalid fields `a[b` at position 1: unclosed '['");
    }

    // --- fields: selection -----------------------------------------------

    #[test]
    fn plain_reference_stays_a_reference() {
        assert_eq!(
            sel(&anc1(), "id,categoryCombo,legendSets"),
            json!({"id": "fbfJHSPpUQD", "categoryCombo": {"id": "bjDvmb4bfuf"}, "legendSets": []})
        );
    }

    #[test]
    fn nested_selection_resolves_references() {
        let out = sel(&anc1(), "id,categoryCombo[id,name,categories[id,name]]");
        assert_eq!(
            out,
            json!({
                "id": "fbfJHSPpUQD",
                "categoryCombo": {
                    "id": "bjDvmb4bfuf",
                    "name": "default",
                    "categories": [{"id": "GLevLNI9wkl", "name": "default category"}]
                }
            })
        );
    }

    #[test]
    fn nested_selection_descends_into_embedded_objects() {
        let out = sel(&anc1(), "dataSetElements[dataSet[id,name,periodType]]");
        assert_eq!(
            out,
            json!({"dataSetElements": [
                {"dataSet": {"id": "QX4ZTUbOt3a", "name": "Reproductive Health", "periodType": "Monthly"}},
                {"dataSet": {"id": "BfMAe6Itzgt", "name": "Child Health", "periodType": "Monthly"}}
            ]})
        );
    }

    #[test]
    fn unresolvable_reference_falls_back_to_itself() {
        assert_eq!(
            sel(&weight(), "categoryCombo[id,name]"),
            json!({"categoryCombo": {"id": "missingCC01"}})
        );
    }

    #[test]
    fn nested_star_returns_resolved_object_one_level_deep() {
        assert_eq!(
            sel(&anc1(), "categoryCombo[*]"),
            json!({"categoryCombo": {
                "id": "bjDvmb4bfuf", "name": "default", "code": "default",
                "categories": [{"id": "GLevLNI9wkl"}]
            }})
        );
        assert_eq!(
            sel(&anc1(), "categoryCombo[:all,!categories]"),
            json!({"categoryCombo": {"id": "bjDvmb4bfuf", "name": "default", "code": "default"}})
        );
    }

    #[test]
    fn all_minus_exclusion_keeps_object_order() {
        let out = sel(&anc1(), ":all,!sharing");
        let mut expected = anc1();
        if let Some(map) = expected.as_object_mut() {
            map.shift_remove("sharing");
        }
        assert_eq!(
            serde_json::to_string(&out).ok(),
            serde_json::to_string(&expected).ok()
        );
        // Exclusion is position independent.
        assert_eq!(sel(&anc1(), "!sharing,*"), out);
    }

    #[test]
    fn output_follows_field_list_order_and_omits_unknown_fields() {
        let out = sel(&anc1(), "code,nonsense,id,name");
        assert_eq!(
            serde_json::to_string(&out).ok().as_deref(),
            Some(r#"{"code":"DE_ANC1","id":"fbfJHSPpUQD","name":"ANC 1st visit"}"#)
        );
    }

    #[test]
    fn star_plus_nested_upgrades_the_field() {
        let out = sel(&anc1(), "*,categoryCombo[name]");
        assert_eq!(out["categoryCombo"], json!({"name": "default"}));
        assert_eq!(out["id"], json!("fbfJHSPpUQD"));
        let out = sel(&anc1(), "categoryCombo[name],*");
        assert_eq!(out["categoryCombo"], json!({"name": "default"}));
    }

    #[test]
    fn repeated_nested_selections_merge() {
        let mut fields = parse_fields("id,categoryCombo[id]").expect("valid");
        fields.merge(parse_fields("categoryCombo[name]").expect("valid"));
        assert_eq!(
            select(&anc1(), &fields, &store()),
            json!({"id": "fbfJHSPpUQD", "categoryCombo": {"id": "bjDvmb4bfuf", "name": "default"}})
        );
    }

    #[test]
    fn presets_select_expected_fields() {
        assert_eq!(
            sel(&anc1(), ":identifiable"),
            json!({"id": "fbfJHSPpUQD", "name": "ANC 1st visit", "code": "DE_ANC1",
                   "created": "2024-03-05T10:15:30.123", "lastUpdated": "2024-06-01T08:00:00.000"})
        );
        let nameable = sel(&weight(), ":nameable");
        assert_eq!(nameable["description"], json!(""));
        assert!(nameable.get("shortName").is_none());
        let simple = sel(&anc1(), ":simple");
        assert!(simple.get("categoryCombo").is_none());
        assert!(simple.get("aggregationLevels").is_none());
        assert_eq!(simple["sortOrder"], json!(3));
        assert_eq!(sel(&anc1(), ":owner"), anc1());
    }

    #[test]
    fn display_properties_fall_back_to_stored_ones() {
        assert_eq!(
            sel(&anc1(), "displayName,displayShortName,displayFormName"),
            json!({"displayName": "ANC 1st visit", "displayShortName": "ANC1",
                   "displayFormName": "ANC 1st visit"})
        );
        let with_form = json!({"name": "N", "formName": "F", "displayName": "Translated"});
        assert_eq!(
            sel(&with_form, "displayName,displayFormName"),
            json!({"displayName": "Translated", "displayFormName": "F"})
        );
        // `*` reports stored fields only.
        assert!(sel(&anc1(), "*").get("displayName").is_none());
    }

    #[test]
    fn rename_transformer() {
        assert_eq!(
            sel(
                &anc1(),
                "id~rename(uid),name::rename(label),categoryCombo[name]~rename(cc)"
            ),
            json!({"uid": "fbfJHSPpUQD", "label": "ANC 1st visit", "cc": {"name": "default"}})
        );
        // The same source may appear under two output names.
        assert_eq!(
            sel(&anc1(), "name,name~rename(title)"),
            json!({"name": "ANC 1st visit", "title": "ANC 1st visit"})
        );
    }

    #[test]
    fn size_and_emptiness_transformers() {
        assert_eq!(
            sel(
                &anc1(),
                "dataSetElements~size,name~size,legendSets~isEmpty,legendSets~isNotEmpty~rename(hasLegends)"
            ),
            json!({"dataSetElements": 2, "name": 13, "legendSets": true, "hasLegends": false})
        );
    }

    #[test]
    fn pluck_transformer() {
        assert_eq!(
            sel(&anc2(), "legendSets~pluck"),
            json!({"legendSets": ["fqs276KXCXi"]})
        );
        assert_eq!(
            sel(&store()["bjDvmb4bfuf"], "categories~pluck(name)"),
            json!({"categories": ["default category"]})
        );
        assert_eq!(
            sel(&anc1(), "dataSetElements[dataSet]~pluck(dataSet)"),
            json!({"dataSetElements": [{"id": "QX4ZTUbOt3a"}, {"id": "BfMAe6Itzgt"}]})
        );
        assert_eq!(
            sel(&anc1(), "categoryCombo~pluck"),
            json!({"categoryCombo": "bjDvmb4bfuf"})
        );
    }

    #[test]
    fn closure_resolver_works() {
        let resolver = |uid: &str| (uid == "bjDvmb4bfuf").then(|| json!({"id": uid, "name": "cc"}));
        let fields = parse_fields("categoryCombo[name]").expect("valid");
        assert_eq!(
            select(&anc1(), &fields, &resolver),
            json!({"categoryCombo": {"name": "cc"}})
        );
    }

    // --- filters ---------------------------------------------------------

    #[test]
    fn equality_operators() {
        let de = anc1();
        assert!(filt(&de, "id:eq:fbfJHSPpUQD"));
        assert!(!filt(&de, "id:eq:fbfjhsppuqd"));
        assert!(filt(&de, "id:!eq:other"));
        assert!(filt(&de, "id:ne:other"));
        assert!(!filt(&de, "id:ne:fbfJHSPpUQD"));
        assert!(filt(&de, "sortOrder:eq:3"));
        assert!(filt(&de, "sortOrder:eq:3.0"));
        assert!(filt(&de, "zeroIsSignificant:eq:false"));
        assert!(!filt(&de, "zeroIsSignificant:eq:true"));
        assert!(filt(&de, "categoryCombo:eq:bjDvmb4bfuf"));
        // Missing property: positive fails, negation succeeds.
        assert!(!filt(&de, "formName:eq:x"));
        assert!(filt(&de, "formName:!eq:x"));
    }

    #[test]
    fn value_may_contain_colons() {
        let de = anc1();
        assert!(filt(&de, "created:eq:2024-03-05T10:15:30.123"));
        assert!(filt(&de, "lastUpdated:gt:2024-05-31T23:59:59"));
        let f = parse_filter("name:like:a:b:c").expect("valid");
        assert_eq!(f.operand, Operand::Value("a:b:c".into()));
    }

    #[test]
    fn like_operators() {
        let de = anc1();
        assert!(filt(&de, "name:like:1st"));
        assert!(!filt(&de, "name:like:anc"));
        assert!(filt(&de, "name:!like:anc"));
        assert!(filt(&de, "name:$like:ANC"));
        assert!(!filt(&de, "name:$like:visit"));
        assert!(filt(&de, "name:!$like:visit"));
        assert!(filt(&de, "name:like$:visit"));
        assert!(!filt(&de, "name:like$:VISIT"));
        assert!(filt(&de, "name:!like$:ANC"));
        assert!(filt(&de, "name:ilike:anc 1ST"));
        assert!(!filt(&de, "name:!ilike:anc"));
        assert!(filt(&de, "name:!ilike:2nd"));
        assert!(filt(&de, "name:$ilike:anc"));
        assert!(filt(&de, "name:!$ilike:visit"));
        assert!(filt(&de, "name:ilike$:VISIT"));
        assert!(filt(&de, "name:!ilike$:anc"));
        assert!(filt(&de, "sortOrder:like:3"));
    }

    #[test]
    fn in_operators() {
        let de = anc1();
        assert!(filt(&de, "valueType:in:[TEXT,NUMBER]"));
        assert!(filt(&de, "valueType:in:[ TEXT , NUMBER ]"));
        assert!(!filt(&de, "valueType:in:[TEXT]"));
        assert!(filt(&de, "valueType:!in:[TEXT,BOOLEAN]"));
        assert!(!filt(&de, "valueType:!in:[NUMBER]"));
        assert!(filt(&de, "aggregationLevels:in:[3,4]"));
        assert!(!filt(&de, "valueType:in:[]"));
        assert!(filt(&de, "id:in:fbfJHSPpUQD,other"));
    }

    #[test]
    fn null_and_empty_operators() {
        let de = anc1();
        assert!(filt(&de, "formName:null"));
        assert!(!filt(&de, "name:null"));
        assert!(filt(&de, "name:!null"));
        assert!(!filt(&de, "formName:!null"));
        assert!(filt(&de, "legendSets:empty"));
        assert!(!filt(&de, "dataSetElements:empty"));
        assert!(filt(&de, "dataSetElements:!empty"));
        assert!(filt(&de, "organisationUnits:empty"));
        assert!(filt(&weight(), "description:empty"));
        // An empty collection is not null.
        assert!(!filt(&de, "legendSets:null"));
        assert!(filt(&json!({"x": null}), "x:null"));
    }

    #[test]
    fn ordering_operators() {
        let de = anc1();
        assert!(filt(&de, "sortOrder:gt:2"));
        assert!(!filt(&de, "sortOrder:gt:3"));
        assert!(filt(&de, "sortOrder:ge:3"));
        assert!(filt(&de, "sortOrder:lt:10"));
        assert!(!filt(&de, "sortOrder:lt:3"));
        assert!(filt(&de, "sortOrder:le:3"));
        // Numeric, not lexicographic: "3" < "10".
        assert!(filt(&de, "sortOrder:lt:10"));
        assert!(filt(&json!({"v": "3"}), "v:lt:10"));
        assert!(filt(&de, "created:ge:2024-01-01"));
        assert!(filt(&de, "created:lt:2025"));
        assert!(!filt(&de, "created:lt:2023-12-31T23:59:59.999"));
        assert!(filt(&de, "name:gt:ANC 0"));
        assert!(!filt(&de, "sortOrder:gt:abc"));
    }

    #[test]
    fn token_operators() {
        let de = anc1();
        assert!(filt(&de, "name:token:visit anc"));
        assert!(filt(&de, "name:token:1ST"));
        assert!(!filt(&de, "name:token:anc 2nd"));
        assert!(filt(&de, "name:!token:anc 2nd"));
        assert!(!filt(&de, "name:!token:visit"));
    }

    #[test]
    fn identifiable_pseudo_property() {
        let de = anc1();
        assert!(filt(&de, "identifiable:token:fbfJHSPpUQD"));
        assert!(filt(&de, "identifiable:token:de_anc1"));
        assert!(filt(&de, "identifiable:token:anc de_anc1"));
        assert!(!filt(&de, "identifiable:token:malaria"));
        assert!(filt(&de, "identifiable:eq:DE_ANC1"));
        assert!(filt(&de, "identifiable:ilike:1st"));
        assert!(filt(&de, "identifiable:!ilike:malaria"));
    }

    #[test]
    fn dotted_paths_through_references_and_arrays() {
        let de = anc1();
        assert!(filt(&de, "categoryCombo.id:eq:bjDvmb4bfuf"));
        assert!(filt(&de, "categoryCombo.name:eq:default"));
        assert!(filt(&de, "dataSetElements.dataSet.id:eq:BfMAe6Itzgt"));
        assert!(filt(&de, "dataSetElements.dataSet.id:eq:QX4ZTUbOt3a"));
        assert!(!filt(&de, "dataSetElements.dataSet.id:eq:nope"));
        assert!(filt(&de, "dataSetElements.dataSet.id:!eq:nope"));
        assert!(!filt(&de, "dataSetElements.dataSet.id:!eq:BfMAe6Itzgt"));
        assert!(filt(&de, "dataSetElements.dataSet.name:ilike:child"));
        assert!(filt(&de, "dataSetElements.dataSet.periodType:eq:Monthly"));
        assert!(filt(&de, "dataSetElements.dataSet.id:in:[x,QX4ZTUbOt3a]"));
        assert!(filt(
            &de,
            "categoryCombo.categories.name:eq:default category"
        ));
        assert!(filt(&de, "sharing.public:$like:rw"));
        assert!(!filt(&weight(), "categoryCombo.name:!null"));
        let ou = json!({"id": "u1", "organisationUnits": [{"id": "ImspTQPwCqd"}]});
        assert!(filt(&ou, "organisationUnits.id:eq:ImspTQPwCqd"));
        assert!(filt(&ou, "organisationUnits.level:eq:1"));
    }

    #[test]
    fn junctions() {
        let de = anc1();
        let filters = vec![
            parse_filter("name:ilike:anc").expect("valid"),
            parse_filter("valueType:eq:TEXT").expect("valid"),
        ];
        assert!(!matches(&de, &filters, Junction::And, &store()));
        assert!(matches(&de, &filters, Junction::Or, &store()));
        assert!(matches(&de, &[], Junction::And, &store()));
        assert!(matches(&de, &[], Junction::Or, &store()));
        assert_eq!("or".parse::<Junction>(), Ok(Junction::Or));
        assert!("xor".parse::<Junction>().is_err());
    }

    #[test]
    fn malformed_filters_are_rejected_clearly() {
        let err = parse_filter("name").expect_err("no colon");
        assert!(matches!(err, QueryError::InvalidFilter { .. }));
        assert!(err.to_string().contains("missing ':'"), "{err}");

        let err = parse_filter("name:contains:x").expect_err("bad operator");
        assert_eq!(
            err,
            QueryError::UnknownOperator {
                filter: "name:contains:x".into(),
                operator: "contains".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid filter `name:contains:x`: unknown operator `contains`"
        );
        assert_eq!(err.http_status(), 409);

        assert!(parse_filter("name:!gt:3").is_err());
        assert!(parse_filter(":eq:x").is_err());
        assert!(parse_filter("a..b:eq:x").is_err());
        assert!(parse_filter("name:").is_err());
        let err = parse_filter("name:eq").expect_err("no value");
        assert!(err.to_string().contains("needs a value"), "{err}");
        let err = parse_filter("id:in:[a,b").expect_err("unterminated");
        assert!(err.to_string().contains("missing ']'"), "{err}");
        assert!(parse_filter("name:null").is_ok());
        assert!(parse_filter(" name : eq :x").is_ok());
    }

    // --- order -----------------------------------------------------------

    fn names(objs: &[Value]) -> Vec<String> {
        objs.iter()
            .map(|o| {
                o.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn parses_order() {
        assert_eq!(
            parse_order("name:asc, code:DESC,shortName:iasc,created,x:idesc"),
            Ok(vec![
                OrderSpec {
                    property: "name".into(),
                    direction: Direction::Asc,
                    ignore_case: false
                },
                OrderSpec {
                    property: "code".into(),
                    direction: Direction::Desc,
                    ignore_case: false
                },
                OrderSpec {
                    property: "shortName".into(),
                    direction: Direction::Asc,
                    ignore_case: true
                },
                OrderSpec {
                    property: "created".into(),
                    direction: Direction::Asc,
                    ignore_case: false
                },
                OrderSpec {
                    property: "x".into(),
                    direction: Direction::Desc,
                    ignore_case: true
                },
            ])
        );
        assert_eq!(parse_order(""), Ok(vec![]));
        let err = parse_order("name:up").expect_err("bad direction");
        assert!(err.to_string().contains("unknown direction `up`"), "{err}");
        assert!(parse_order(":asc").is_err());
    }

    #[test]
    fn sorts_stably_with_missing_last() {
        let mut objs = vec![
            json!({"name": "b", "rank": 2}),
            json!({"name": "A", "rank": 1}),
            json!({"name": "none"}),
            json!({"name": "a", "rank": 2}),
            json!({"name": "c", "rank": 10}),
        ];
        let order = parse_order("rank:asc").expect("valid");
        sort(&mut objs, &order);
        assert_eq!(names(&objs), ["A", "b", "a", "c", "none"]);

        let order = parse_order("rank:desc").expect("valid");
        sort(&mut objs, &order);
        assert_eq!(names(&objs), ["c", "b", "a", "A", "none"]);

        let order = parse_order("name").expect("valid");
        sort(&mut objs, &order);
        assert_eq!(names(&objs), ["A", "a", "b", "c", "none"]);

        let order = parse_order("name:idesc").expect("valid");
        sort(&mut objs, &order);
        assert_eq!(names(&objs), ["none", "c", "b", "A", "a"]);

        let order = parse_order("rank:desc,name:asc").expect("valid");
        sort(&mut objs, &order);
        assert_eq!(names(&objs), ["c", "a", "b", "A", "none"]);
    }

    #[test]
    fn sorts_by_display_name_and_dotted_path() {
        let mut objs = vec![
            json!({"name": "z", "leftSide": {"expression": "#{b}"}}),
            json!({"name": "y", "leftSide": {"expression": "#{a}"}}),
        ];
        sort(
            &mut objs,
            &parse_order("leftSide.expression").expect("valid"),
        );
        assert_eq!(names(&objs), ["y", "z"]);
        sort(&mut objs, &parse_order("displayName:desc").expect("valid"));
        assert_eq!(names(&objs), ["z", "y"]);
    }

    // --- paging ----------------------------------------------------------

    #[test]
    fn parses_paging() {
        assert_eq!(parse_paging(None, None, None), Ok(Paging::default()));
        assert_eq!(
            parse_paging(Some("FALSE"), Some("3"), Some("20")),
            Ok(Paging {
                page: 3,
                page_size: 20,
                enabled: false
            })
        );
        for (paging, page, size) in [
            (Some("maybe"), None, None),
            (None, Some("0"), None),
            (None, Some("-1"), None),
            (None, Some("x"), None),
            (None, None, Some("0")),
            (None, None, Some("ten")),
        ] {
            let err = parse_paging(paging, page, size).expect_err("invalid paging");
            assert_eq!(err.http_status(), 400);
        }
        let err = parse_paging(None, Some("0"), None).expect_err("page 0");
        assert_eq!(
            err.to_string(),
            "invalid value `0` for parameter `page`: must be at least 1"
        );
    }

    #[test]
    fn pager_links_and_counts() {
        let base = Some("https://hisa.example/api/dataElements");
        let p = |page, page_size| Paging {
            page,
            page_size,
            enabled: true,
        };
        assert_eq!(
            pager_json(120, &p(1, 50), base),
            json!({"page": 1, "pageCount": 3, "total": 120, "pageSize": 50,
                   "nextPage": "https://hisa.example/api/dataElements?page=2"})
        );
        assert_eq!(
            pager_json(120, &p(3, 50), base),
            json!({"page": 3, "pageCount": 3, "total": 120, "pageSize": 50,
                   "prevPage": "https://hisa.example/api/dataElements?page=2"})
        );
        assert_eq!(
            pager_json(120, &p(2, 50), None),
            json!({"page": 2, "pageCount": 3, "total": 120, "pageSize": 50})
        );
        assert_eq!(
            pager_json(0, &p(1, 50), base),
            json!({"page": 1, "pageCount": 1, "total": 0, "pageSize": 50})
        );
        assert_eq!(
            pager_json(100, &p(2, 50), Some("/api/x?fields=id")),
            json!({"page": 2, "pageCount": 2, "total": 100, "pageSize": 50,
                   "prevPage": "/api/x?fields=id&page=1"})
        );
        assert_eq!(
            pager_json(30, &p(2, 10), Some("/api/x"))["nextPage"],
            json!("/api/x?page=3&pageSize=10")
        );
        // Far past the end: neither neighbour exists.
        let past = pager_json(120, &p(9, 50), base);
        assert!(past.get("nextPage").is_none() && past.get("prevPage").is_none());
        // Just past the end: the previous page is the last real one.
        assert_eq!(
            pager_json(120, &p(4, 50), base)["prevPage"],
            json!("https://hisa.example/api/dataElements?page=3")
        );
    }

    // --- list queries ----------------------------------------------------

    fn many(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("id{i:03}"), "name": format!("Element {i:03}"), "n": i}))
            .collect()
    }

    #[test]
    fn list_query_defaults() {
        let q = ListQuery::from_params(&[]).expect("valid");
        assert_eq!(q, ListQuery::default());
        let out = q.apply("dataElements", [anc1(), anc2()].iter(), &store(), None);
        assert_eq!(
            out,
            json!({
                "pager": {"page": 1, "pageCount": 1, "total": 2, "pageSize": 50},
                "dataElements": [
                    {"id": "fbfJHSPpUQD", "displayName": "ANC 1st visit"},
                    {"id": "cYeuwXTCPkU", "displayName": "ANC 2nd visit"}
                ]
            })
        );
        assert_eq!(
            serde_json::to_string(&out)
                .ok()
                .map(|s| s.starts_with(r#"{"pager""#)),
            Some(true)
        );
    }

    #[test]
    fn list_query_filters_orders_pages_and_selects() {
        let objs = [anc1(), anc2(), weight()];
        let q = ListQuery::from_params(&params(&[
            ("filter", "valueType:eq:NUMBER"),
            ("filter", "dataSetElements.dataSet.id:eq:BfMAe6Itzgt"),
            ("order", "sortOrder:desc"),
            ("fields", "id"),
            ("fields", "categoryCombo[name]"),
            ("unrelated", "ignored"),
        ]))
        .expect("valid");
        let out = q.apply(
            "dataElements",
            objs.iter(),
            &store(),
            Some("/api/dataElements"),
        );
        assert_eq!(
            out,
            json!({
                "pager": {"page": 1, "pageCount": 1, "total": 2, "pageSize": 50},
                "dataElements": [
                    {"id": "cYeuwXTCPkU", "categoryCombo": {"name": "default"}},
                    {"id": "fbfJHSPpUQD", "categoryCombo": {"name": "default"}}
                ]
            })
        );

        let q = ListQuery::from_params(&params(&[
            ("filter", "valueType:eq:TEXT"),
            ("filter", "code:eq:DE_ANC2"),
            ("rootJunction", "OR"),
            ("paging", "false"),
        ]))
        .expect("valid");
        let out = q.apply("dataElements", objs.iter(), &store(), None);
        assert_eq!(
            out,
            json!({"dataElements": [
                {"id": "cYeuwXTCPkU", "displayName": "ANC 2nd visit"},
                {"id": "qrur9Dvnyt5", "displayName": "Weight in kg"}
            ]})
        );
    }

    #[test]
    fn list_query_paging_edges() {
        let objs = many(120);
        let run = |page: &str, size: &str| {
            ListQuery::from_params(&params(&[
                ("page", page),
                ("pageSize", size),
                ("fields", "n"),
            ]))
            .expect("valid")
            .apply("items", objs.iter(), &NoResolver, Some("/api/items"))
        };
        let last = run("3", "50");
        assert_eq!(last["items"].as_array().map(Vec::len), Some(20));
        assert_eq!(last["items"][0], json!({"n": 100}));
        assert_eq!(last["pager"]["pageCount"], json!(3));
        assert!(last["pager"].get("nextPage").is_none());

        let past = run("7", "50");
        assert_eq!(past["items"], json!([]));
        assert_eq!(past["pager"]["total"], json!(120));

        let exact = run("2", "60");
        assert_eq!(exact["items"].as_array().map(Vec::len), Some(60));
        assert!(exact["pager"].get("nextPage").is_none());

        let huge = run("18446744073709551615", "18446744073709551615");
        assert_eq!(huge["items"], json!([]));

        let all = ListQuery::from_params(&params(&[("paging", "false"), ("fields", "n")]))
            .expect("valid")
            .apply("items", objs.iter(), &NoResolver, None);
        assert_eq!(all["items"].as_array().map(Vec::len), Some(120));
        assert!(all.get("pager").is_none());
    }

    #[test]
    fn list_query_rejects_bad_params() {
        for (k, v) in [
            ("fields", "a[b"),
            ("filter", "name"),
            ("order", "name:sideways"),
            ("rootJunction", "NOR"),
            ("pageSize", "0"),
        ] {
            assert!(
                ListQuery::from_params(&params(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn detail_fields_from_params() {
        let f = fields_from_params(&[], DEFAULT_DETAIL_FIELDS).expect("valid");
        assert_eq!(f, Fields::all());
        let f = fields_from_params(&params(&[("fields", "id"), ("fields", "name")]), "*")
            .expect("valid");
        assert_eq!(
            select(&anc1(), &f, &NoResolver),
            json!({"id": "fbfJHSPpUQD", "name": "ANC 1st visit"})
        );
    }

    // --- properties ------------------------------------------------------

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-zA-Z]{1,6}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        prop::collection::vec(("[a-zA-Z]{1,8}", arb_json()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn parse_fields_never_panics(s in "\\PC{0,64}") {
            let _ = parse_fields(&s);
        }

        #[test]
        fn parse_fields_never_panics_on_syntax_soup(s in "[a-c\\[\\]\\(\\)~:!*, ]{0,48}|[a-z~:()\\[\\],!*]{0,24}") {
            match parse_fields(&s) {
                Ok(fields) => { let _ = select(&json!({"a": {"id": "x"}, "b": [1]}), &fields, &store()); }
                Err(QueryError::InvalidFields { position, .. }) => {
                    prop_assert!(position <= s.chars().count());
                }
                Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
            }
        }

        #[test]
        fn select_all_returns_object_unchanged(obj in arb_object()) {
            let out = select(&obj, &Fields::all(), &store());
            prop_assert_eq!(serde_json::to_string(&out).ok(), serde_json::to_string(&obj).ok());
        }

        #[test]
        fn filter_parsing_never_panics(s in "\\PC{0,40}") {
            if let Ok(f) = parse_filter(&s) {
                let _ = f.matches(&anc1(), &store());
            }
        }
    }
}
