//! DHIS2's expression language: one parser and one evaluator shared by the
//! server (indicators, validation rules, predictors, analytics), the phone
//! app (offline validation) and the SMS gateway.
//!
//! - [`parse`] turns text into an [`Expr`], checking that every item and
//!   function is allowed in the given [`ExprContext`].
//! - [`Expr::items`] / [`Expr::item_requests`] list what must be fetched;
//!   [`Expr::evaluate`] computes the value from a caller-supplied
//!   [`ValueSource`] under a [`MissingValueStrategy`].
//! - [`Expr::to_string_canonical`] prints text that parses back to the same
//!   tree; [`Expr::describe`] prints it with items replaced by their names.
//! - [`Operator`] and [`compare`] decide whether a validation rule holds.
//!
//! Positions in a [`ParseError`] are 0-based character (not byte) offsets
//! into the text, so they are right for non-ASCII input too.
//!
//! No I/O happens here: anything needing server data (item values, the
//! evaluated org unit, sampled predictor periods) is asked of the
//! [`ValueSource`].

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Deepest tree the parser builds. Cloning, comparing and dropping the tree
/// recurse, so an unbounded input (`1+1+1…`) could otherwise overflow the
/// stack; 500 levels stay well inside a 1 MiB stack even in debug builds.
pub const MAX_DEPTH: usize = 500;
/// Deepest nesting of parentheses, function calls, unary operators and
/// modifiers (what evaluation recurses on; chains such as `a + b + c` are
/// walked iteratively and do not count).
pub const MAX_NESTING: usize = 100;

// ---------------------------------------------------------------------------
// Contexts
// ---------------------------------------------------------------------------

/// The kind of expression being parsed; it decides which items and
/// functions are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExprContext {
    /// Indicator numerator/denominator.
    Indicator,
    /// Validation rule left or right side.
    ValidationRule,
    /// Predictor generator or sample skip test.
    Predictor,
    /// Anything else (e.g. a stand-alone formula): only what DHIS2 allows in
    /// every expression kind.
    Generic,
}

impl fmt::Display for ExprContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExprContext::Indicator => "an indicator",
            ExprContext::ValidationRule => "a validation rule",
            ExprContext::Predictor => "a predictor",
            ExprContext::Generic => "a generic expression",
        })
    }
}

/// Where a restricted feature may be used: a predicate plus the words used in
/// the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Everywhere,
    IndicatorOnly,
    ValidationRuleAndPredictor,
    IndicatorAndPredictor,
    PredictorOnly,
}

impl Allowed {
    fn permits(self, ctx: ExprContext) -> bool {
        use ExprContext::*;
        match self {
            Allowed::Everywhere => true,
            Allowed::IndicatorOnly => ctx == Indicator,
            Allowed::ValidationRuleAndPredictor => matches!(ctx, ValidationRule | Predictor),
            Allowed::IndicatorAndPredictor => matches!(ctx, Indicator | Predictor),
            Allowed::PredictorOnly => ctx == Predictor,
        }
    }

    fn where_allowed(self) -> &'static str {
        match self {
            Allowed::Everywhere => "every expression",
            Allowed::IndicatorOnly => "indicators",
            Allowed::ValidationRuleAndPredictor => "validation rules and predictors",
            Allowed::IndicatorAndPredictor => "indicators and predictors",
            Allowed::PredictorOnly => "predictors",
        }
    }
}

// ---------------------------------------------------------------------------
// Items
// ---------------------------------------------------------------------------

/// The data element part of a `#{…}` item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementRef {
    /// `#{de…}`
    Element(String),
    /// `#{deGroup:grp…}`: every data element in the group.
    Group(String),
}

/// The category option combo part of a `#{…}` item (absent = all COCs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComboRef {
    /// `#{de.coc}`
    Combo(String),
    /// `#{de.co:opt}`: COCs containing the option.
    Option(String),
    /// `#{de.coGroup:g1&g2}`: COCs with an option in each listed group.
    OptionGroups(Vec<String>),
}

/// A reporting rate metric of an `R{dataSet.METRIC}` item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportingMetric {
    ReportingRate,
    ReportingRateOnTime,
    ActualReports,
    ActualReportsOnTime,
    ExpectedReports,
}

impl ReportingMetric {
    pub const ALL: [ReportingMetric; 5] = [
        ReportingMetric::ReportingRate,
        ReportingMetric::ReportingRateOnTime,
        ReportingMetric::ActualReports,
        ReportingMetric::ActualReportsOnTime,
        ReportingMetric::ExpectedReports,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportingMetric::ReportingRate => "REPORTING_RATE",
            ReportingMetric::ReportingRateOnTime => "REPORTING_RATE_ON_TIME",
            ReportingMetric::ActualReports => "ACTUAL_REPORTS",
            ReportingMetric::ActualReportsOnTime => "ACTUAL_REPORTS_ON_TIME",
            ReportingMetric::ExpectedReports => "EXPECTED_REPORTS",
        }
    }

    pub fn from_name(name: &str) -> Option<ReportingMetric> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// A data item referenced by an expression; its value comes from the
/// [`ValueSource`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// `#{de}`, `#{de.coc}`, `#{de.coc.aoc}`, `#{de.*.aoc}`, `#{deGroup:g}`,
    /// `#{de.co:opt}`, `#{de.coGroup:g1&g2}`. `None` means "all" (the
    /// wildcard `*` or an omitted part, which DHIS2 treats alike).
    DataElement {
        element: ElementRef,
        combo: Option<ComboRef>,
        attribute_combo: Option<String>,
    },
    /// `C{constant}`
    Constant(String),
    /// `OUG{group}`: org units of the group in the evaluated subtree.
    OrgUnitGroupCount(String),
    /// `R{dataSet.METRIC}`
    ReportingRate {
        data_set: String,
        metric: ReportingMetric,
    },
    /// `N{indicator}`: another indicator's value.
    Indicator(String),
    /// `D{program.dataElement}`
    ProgramDataElement {
        program: String,
        data_element: String,
    },
    /// `A{program.attribute}`
    ProgramAttribute { program: String, attribute: String },
    /// `I{programIndicator}`
    ProgramIndicator(String),
}

impl Item {
    /// Constants are not data: they never make an expression "missing".
    fn is_data(&self) -> bool {
        !matches!(self, Item::Constant(_))
    }

    fn kind_label(&self) -> &'static str {
        match self {
            Item::DataElement { .. } => "`#{…}`",
            Item::Constant(_) => "`C{…}`",
            Item::OrgUnitGroupCount(_) => "`OUG{…}`",
            Item::ReportingRate { .. } => "`R{…}`",
            Item::Indicator(_) => "`N{…}`",
            Item::ProgramDataElement { .. } => "`D{…}`",
            Item::ProgramAttribute { .. } => "`A{…}`",
            Item::ProgramIndicator(_) => "`I{…}`",
        }
    }

    fn allowed(&self) -> Allowed {
        match self {
            Item::Indicator(_) => Allowed::IndicatorOnly,
            _ => Allowed::Everywhere,
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::DataElement {
                element,
                combo,
                attribute_combo,
            } => {
                f.write_str("#{")?;
                match element {
                    ElementRef::Element(id) => f.write_str(id)?,
                    ElementRef::Group(id) => write!(f, "deGroup:{id}")?,
                }
                if combo.is_some() || attribute_combo.is_some() {
                    f.write_str(".")?;
                    match combo {
                        None => f.write_str("*")?,
                        Some(ComboRef::Combo(id)) => f.write_str(id)?,
                        Some(ComboRef::Option(id)) => write!(f, "co:{id}")?,
                        Some(ComboRef::OptionGroups(ids)) => {
                            write!(f, "coGroup:{}", ids.join("&"))?
                        }
                    }
                }
                if let Some(aoc) = attribute_combo {
                    write!(f, ".{aoc}")?;
                }
                f.write_str("}")
            }
            Item::Constant(id) => write!(f, "C{{{id}}}"),
            Item::OrgUnitGroupCount(id) => write!(f, "OUG{{{id}}}"),
            Item::ReportingRate { data_set, metric } => {
                write!(f, "R{{{data_set}.{}}}", metric.as_str())
            }
            Item::Indicator(id) => write!(f, "N{{{id}}}"),
            Item::ProgramDataElement {
                program,
                data_element,
            } => write!(f, "D{{{program}.{data_element}}}"),
            Item::ProgramAttribute { program, attribute } => {
                write!(f, "A{{{program}.{attribute}}}")
            }
            Item::ProgramIndicator(id) => write!(f, "I{{{id}}}"),
        }
    }
}

/// Period variables in square brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodVar {
    /// `[days]`: days in the evaluated period.
    Days,
    /// `[periodInYear]` (indicators only).
    PeriodInYear,
    /// `[yearlyPeriodCount]` (indicators only).
    YearlyPeriodCount,
}

impl PeriodVar {
    fn name(self) -> &'static str {
        match self {
            PeriodVar::Days => "days",
            PeriodVar::PeriodInYear => "periodInYear",
            PeriodVar::YearlyPeriodCount => "yearlyPeriodCount",
        }
    }

    fn allowed(self) -> Allowed {
        match self {
            PeriodVar::Days => Allowed::Everywhere,
            _ => Allowed::IndicatorOnly,
        }
    }
}

// ---------------------------------------------------------------------------
// Operators, functions, modifiers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `+x`
    Plus,
    /// `!x` / `not x`
    Not,
}

impl UnaryOp {
    fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Plus => "+",
            UnaryOp::Not => "!",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Pow,
    Mul,
    Div,
    Mod,
    Add,
    Sub,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

/// Binding power of the operand of a unary operator: above `*` so that
/// `-2*3` is `(-2)*3`, below `^` so that `-2^2` is `-(2^2)` as the reference
/// ranks `^` above unary operators.
const UNARY_BP: u8 = 14;
/// Binding power of atoms and postfix `.modifier(…)` calls.
const ATOM_BP: u8 = 100;

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Pow => "^",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Lt => "<",
            BinaryOp::Gt => ">",
            BinaryOp::Le => "<=",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        }
    }

    /// (left, right) binding powers. Left-associative operators bind their
    /// right operand one step tighter; `^` is right-associative, so both are
    /// equal.
    fn binding(self) -> (u8, u8) {
        match self {
            BinaryOp::Or => (2, 3),
            BinaryOp::And => (4, 5),
            BinaryOp::Eq | BinaryOp::Ne => (6, 7),
            BinaryOp::Lt | BinaryOp::Gt | BinaryOp::Le | BinaryOp::Ge => (8, 9),
            BinaryOp::Add | BinaryOp::Sub => (10, 11),
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => (12, 13),
            BinaryOp::Pow => (16, 16),
        }
    }

    fn right_assoc(self) -> bool {
        self == BinaryOp::Pow
    }
}

/// Functions called as `name(args…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    If,
    IsNull,
    IsNotNull,
    FirstNonNull,
    Greatest,
    Least,
    Log,
    Log10,
    RemoveZeros,
    Contains,
    ContainsItems,
    /// Indicators only: evaluated per underlying value before aggregation.
    SubExpression,
    // Predictors only: aggregate over the sampled past periods.
    Avg,
    Count,
    Max,
    Median,
    Min,
    PercentileCont,
    Stddev,
    StddevPop,
    StddevSamp,
    Sum,
    Variance,
    NormDistCum,
    NormDistDen,
}

impl Function {
    pub const ALL: [Function; 25] = [
        Function::If,
        Function::IsNull,
        Function::IsNotNull,
        Function::FirstNonNull,
        Function::Greatest,
        Function::Least,
        Function::Log,
        Function::Log10,
        Function::RemoveZeros,
        Function::Contains,
        Function::ContainsItems,
        Function::SubExpression,
        Function::Avg,
        Function::Count,
        Function::Max,
        Function::Median,
        Function::Min,
        Function::PercentileCont,
        Function::Stddev,
        Function::StddevPop,
        Function::StddevSamp,
        Function::Sum,
        Function::Variance,
        Function::NormDistCum,
        Function::NormDistDen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::If => "if",
            Function::IsNull => "isNull",
            Function::IsNotNull => "isNotNull",
            Function::FirstNonNull => "firstNonNull",
            Function::Greatest => "greatest",
            Function::Least => "least",
            Function::Log => "log",
            Function::Log10 => "log10",
            Function::RemoveZeros => "removeZeros",
            Function::Contains => "contains",
            Function::ContainsItems => "containsItems",
            Function::SubExpression => "subExpression",
            Function::Avg => "avg",
            Function::Count => "count",
            Function::Max => "max",
            Function::Median => "median",
            Function::Min => "min",
            Function::PercentileCont => "percentileCont",
            Function::Stddev => "stddev",
            Function::StddevPop => "stddevPop",
            Function::StddevSamp => "stddevSamp",
            Function::Sum => "sum",
            Function::Variance => "variance",
            Function::NormDistCum => "normDistCum",
            Function::NormDistDen => "normDistDen",
        }
    }

    pub fn from_name(name: &str) -> Option<Function> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Minimum and maximum (None = unbounded) argument counts.
    pub fn arity(self) -> (usize, Option<usize>) {
        use Function::*;
        match self {
            If => (3, Some(3)),
            FirstNonNull | Greatest | Least => (1, None),
            Log => (1, Some(2)),
            Contains | ContainsItems => (2, None),
            PercentileCont => (2, Some(2)),
            NormDistCum | NormDistDen => (1, Some(3)),
            IsNull | IsNotNull | Log10 | RemoveZeros | SubExpression | Avg | Count | Max
            | Median | Min | Stddev | StddevPop | StddevSamp | Sum | Variance => (1, Some(1)),
        }
    }

    fn allowed(self) -> Allowed {
        use Function::*;
        match self {
            SubExpression => Allowed::IndicatorOnly,
            Avg | Count | Max | Median | Min | PercentileCont | Stddev | StddevPop | StddevSamp
            | Sum | Variance | NormDistCum | NormDistDen => Allowed::PredictorOnly,
            _ => Allowed::Everywhere,
        }
    }

    /// Index of the argument evaluated once per sampled period, for the
    /// predictor aggregates.
    fn sampled_arg(self) -> Option<usize> {
        use Function::*;
        match self {
            Avg | Count | Max | Median | Min | Stddev | StddevPop | StddevSamp | Sum | Variance => {
                Some(0)
            }
            PercentileCont => Some(1),
            _ => None,
        }
    }
}

fn describe_arity(min: usize, max: Option<usize>) -> String {
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    match max {
        Some(max) if max == min => format!("{min} {}", plural(min)),
        Some(max) if max == min + 1 => format!("{min} or {max} arguments"),
        Some(max) => format!("{min} to {max} arguments"),
        None => format!("at least {min} {}", plural(min)),
    }
}

/// `orgUnit.*(uid, …)` tests about the evaluated org unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrgUnitTest {
    /// `orgUnit.ancestor(uid…)`: one of these is an ancestor.
    Ancestor,
    /// `orgUnit.group(uid…)`: member of one of these groups.
    Group,
    /// `orgUnit.dataSet(uid…)`: assigned one of these data sets.
    DataSet,
    /// `orgUnit.program(uid…)`: assigned one of these programs.
    Program,
}

impl OrgUnitTest {
    const ALL: [OrgUnitTest; 4] = [
        OrgUnitTest::Ancestor,
        OrgUnitTest::Group,
        OrgUnitTest::DataSet,
        OrgUnitTest::Program,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OrgUnitTest::Ancestor => "orgUnit.ancestor",
            OrgUnitTest::Group => "orgUnit.group",
            OrgUnitTest::DataSet => "orgUnit.dataSet",
            OrgUnitTest::Program => "orgUnit.program",
        }
    }

    fn from_name(name: &str) -> Option<OrgUnitTest> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A calendar date in `.maxDate(…)` / `.minDate(…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Checked constructor; `None` for impossible dates such as 2023-02-29.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        // A closure rather than `is_multiple_of`, which needs Rust 1.87 (the
        // workspace supports 1.85).
        let rem = |n: u16| year % n;
        let leap = rem(4) == 0 && (rem(100) != 0 || rem(400) == 0);
        let last = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=last)
            .contains(&day)
            .then_some(Date { year, month, day })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Aggregation type names accepted by `.aggregationType(…)`.
pub const AGGREGATION_TYPES: &[&str] = &[
    "SUM",
    "AVERAGE",
    "AVERAGE_SUM_ORG_UNIT",
    "COUNT",
    "MIN",
    "MAX",
    "MIN_SUM_ORG_UNIT",
    "MAX_SUM_ORG_UNIT",
    "FIRST",
    "LAST",
    "FIRST_AVERAGE_ORG_UNIT",
    "LAST_AVERAGE_ORG_UNIT",
    "FIRST_FIRST_ORG_UNIT",
    "LAST_LAST_ORG_UNIT",
    "LAST_IN_PERIOD",
    "LAST_IN_PERIOD_AVERAGE_ORG_UNIT",
    "STDDEV",
    "VARIANCE",
    "NONE",
    "DEFAULT",
    "CUSTOM",
];

/// Postfix `expr.modifier(…)` calls that change how the items inside `expr`
/// are fetched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Modifier {
    /// `.aggregationType(TYPE)` (indicators)
    AggregationType(String),
    /// `.periodOffset(n)` (indicators; nested offsets add up)
    PeriodOffset(i32),
    /// `.yearToDate()` (indicators)
    YearToDate,
    /// `.maxDate(yyyy-mm-dd)` (indicators and predictors)
    MaxDate(Date),
    /// `.minDate(yyyy-mm-dd)` (indicators and predictors)
    MinDate(Date),
}

impl Modifier {
    pub fn name(&self) -> &'static str {
        match self {
            Modifier::AggregationType(_) => "aggregationType",
            Modifier::PeriodOffset(_) => "periodOffset",
            Modifier::YearToDate => "yearToDate",
            Modifier::MaxDate(_) => "maxDate",
            Modifier::MinDate(_) => "minDate",
        }
    }

    fn allowed_by_name(name: &str) -> Option<Allowed> {
        match name {
            "aggregationType" | "periodOffset" | "yearToDate" => Some(Allowed::IndicatorOnly),
            "maxDate" | "minDate" => Some(Allowed::IndicatorAndPredictor),
            _ => None,
        }
    }
}

impl fmt::Display for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Modifier::AggregationType(t) => write!(f, "aggregationType({t})"),
            Modifier::PeriodOffset(n) => write!(f, "periodOffset({n})"),
            Modifier::YearToDate => f.write_str("yearToDate()"),
            Modifier::MaxDate(d) => write!(f, "maxDate({d})"),
            Modifier::MinDate(d) => write!(f, "minDate({d})"),
        }
    }
}

/// The combined effect of the modifiers around an item: what the caller must
/// apply when fetching it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct QueryMods {
    pub period_offset: i32,
    pub year_to_date: bool,
    pub aggregation_type: Option<String>,
    pub min_date: Option<Date>,
    pub max_date: Option<Date>,
}

impl QueryMods {
    pub fn is_default(&self) -> bool {
        *self == QueryMods::default()
    }

    /// Offsets add up; for the other modifiers the innermost wins, because it
    /// is applied last on the way down to the item.
    fn apply(&mut self, m: &Modifier) {
        match m {
            Modifier::AggregationType(t) => self.aggregation_type = Some(t.clone()),
            Modifier::PeriodOffset(n) => self.period_offset = self.period_offset.saturating_add(*n),
            Modifier::YearToDate => self.year_to_date = true,
            Modifier::MaxDate(d) => self.max_date = Some(*d),
            Modifier::MinDate(d) => self.min_date = Some(*d),
        }
    }
}

// ---------------------------------------------------------------------------
// AST
// ---------------------------------------------------------------------------

/// A node of the expression tree. Parentheses are not kept; the printer adds
/// them where precedence needs them.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Non-negative literal (a leading `-` is a [`UnaryOp::Neg`]).
    Number(f64),
    Text(String),
    Bool(bool),
    /// The `null` keyword.
    Null,
    Item(Item),
    Period(PeriodVar),
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Call(Function, Vec<Node>),
    /// `is(value in option, …)`
    Is(Box<Node>, Vec<Node>),
    OrgUnit(OrgUnitTest, Vec<String>),
    Modified(Box<Node>, Modifier),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub root: Node,
}

impl From<Node> for Expr {
    fn from(root: Node) -> Self {
        Expr { root }
    }
}

/// One item to fetch, with the modifiers that apply to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemRequest {
    pub item: Item,
    pub modifiers: QueryMods,
    /// Needed for the sampled past periods of a predictor aggregate
    /// (fetched through [`ValueSource::sample_item`]) rather than for the
    /// evaluated period.
    pub sampled: bool,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What went wrong while parsing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    #[error("the expression is empty")]
    Empty,
    #[error("expected {expected} but found {found}")]
    Expected { expected: String, found: String },
    #[error("expected {expected} but the expression ended")]
    UnexpectedEnd { expected: String },
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    #[error("unknown word `{0}`")]
    UnknownWord(String),
    #[error("function `{0}` must be followed immediately by `(`")]
    MissingParen(String),
    #[error("function `{function}` takes {expected} but was given {found}")]
    Arity {
        function: String,
        expected: String,
        found: usize,
    },
    #[error("{what} is not allowed in {context}; it is only allowed in {allowed_in}")]
    NotAllowed {
        what: String,
        context: ExprContext,
        allowed_in: &'static str,
    },
    #[error("the expression is too long or nested too deeply")]
    TooDeep,
    /// Lexical problems (numbers, strings, malformed items), in plain words.
    #[error("{0}")]
    Invalid(String),
}

/// A parse failure at a 0-based character position.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} at position {position}")]
pub struct ParseError {
    pub position: usize,
    pub kind: ParseErrorKind,
}

/// An evaluation failure. Missing data is never an error (it gives
/// [`Value::Null`]); these are mistakes in the expression itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    #[error("`{operation}` needs {expected} but got {found}")]
    TypeMismatch {
        operation: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`{operation}` cannot compare {left} with {right}")]
    Incomparable {
        operation: &'static str,
        left: &'static str,
        right: &'static str,
    },
    #[error("constant `C{{{0}}}` has no value")]
    UnknownConstant(String),
    #[error("function `{function}` was given {found} arguments")]
    Arity {
        function: &'static str,
        found: usize,
    },
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sym {
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    Bang,
    Lt,
    Gt,
    Le,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Item(Box<Item>),
    Var(PeriodVar),
    /// A bare word: keyword or (an error) unknown word.
    Word(String),
    /// `name(` with the parenthesis consumed.
    Func(String),
    /// `.name(` with the parenthesis consumed.
    Dot(String),
    Op(Sym),
    LParen,
    RParen,
    Comma,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn err(position: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { position, kind }
}

fn invalid(position: usize, msg: impl Into<String>) -> ParseError {
    err(position, ParseErrorKind::Invalid(msg.into()))
}

/// Parses the text of one `…{…}` item. `base` is the position of the first
/// content character, so errors point into the item.
fn parse_item(prefix: &str, content: &[char], base: usize) -> Result<Item, ParseError> {
    // Split on '.', remembering where each part starts.
    let mut parts: Vec<(String, usize)> = Vec::new();
    let mut cur = String::new();
    let mut cur_start = base;
    for (i, &c) in content.iter().enumerate() {
        if c == '.' {
            parts.push((std::mem::take(&mut cur), cur_start));
            cur_start = base + i + 1;
        } else {
            cur.push(c);
        }
    }
    parts.push((cur, cur_start));

    let id = |(s, pos): &(String, usize), what: &str| -> Result<String, ParseError> {
        if s.is_empty() {
            return Err(invalid(*pos, format!("missing {what}")));
        }
        match s.chars().position(|c| !is_id_char(c)) {
            Some(i) => Err(invalid(
                pos + i,
                format!(
                    "`{}` is not allowed in {what} `{s}`",
                    s.chars().nth(i).unwrap_or(' ')
                ),
            )),
            None => Ok(s.clone()),
        }
    };
    let expect_parts = |n: usize, shape: &str| -> Result<(), ParseError> {
        if parts.len() == n {
            Ok(())
        } else {
            let pos = parts.get(n).map_or(base, |p| p.1.saturating_sub(1));
            Err(invalid(
                pos,
                format!("`{prefix}{{…}}` must have the form `{prefix}{{{shape}}}`"),
            ))
        }
    };

    match prefix {
        "#" => {
            if parts.len() > 3 {
                return Err(invalid(
                    parts[3].1.saturating_sub(1),
                    "a data item has at most three parts: `#{dataElement.categoryOptionCombo.attributeOptionCombo}`",
                ));
            }
            let (first, first_pos) = &parts[0];
            let element = match first.strip_prefix("deGroup:") {
                Some(rest) => ElementRef::Group(id(
                    &(rest.to_string(), first_pos + 8),
                    "a data element group id",
                )?),
                None => ElementRef::Element(id(&parts[0], "a data element id")?),
            };
            let combo = match parts.get(1) {
                None => None,
                Some((s, _)) if s == "*" => None,
                Some((s, pos)) => {
                    if let Some(rest) = s.strip_prefix("co:") {
                        Some(ComboRef::Option(id(
                            &(rest.to_string(), pos + 3),
                            "a category option id",
                        )?))
                    } else if let Some(rest) = s.strip_prefix("coGroup:") {
                        let mut groups = Vec::new();
                        let mut at = pos + 8;
                        for g in rest.split('&') {
                            groups.push(id(&(g.to_string(), at), "a category option group id")?);
                            at += g.chars().count() + 1;
                        }
                        Some(ComboRef::OptionGroups(groups))
                    } else {
                        Some(ComboRef::Combo(id(
                            &(s.clone(), *pos),
                            "a category option combo id",
                        )?))
                    }
                }
            };
            let attribute_combo = match parts.get(2) {
                None => None,
                Some((s, _)) if s == "*" => None,
                Some(p) => Some(id(p, "an attribute option combo id")?),
            };
            Ok(Item::DataElement {
                element,
                combo,
                attribute_combo,
            })
        }
        "C" | "OUG" | "N" | "I" => {
            let what = match prefix {
                "C" => "a constant id",
                "OUG" => "an org unit group id",
                "N" => "an indicator id",
                _ => "a program indicator id",
            };
            expect_parts(1, "id")?;
            let v = id(&parts[0], what)?;
            Ok(match prefix {
                "C" => Item::Constant(v),
                "OUG" => Item::OrgUnitGroupCount(v),
                "N" => Item::Indicator(v),
                _ => Item::ProgramIndicator(v),
            })
        }
        "R" => {
            expect_parts(2, "dataSet.METRIC")?;
            let data_set = id(&parts[0], "a data set id")?;
            let (m, pos) = &parts[1];
            let metric = ReportingMetric::from_name(m).ok_or_else(|| {
                invalid(
                    *pos,
                    format!(
                        "unknown reporting rate metric `{m}` (expected one of {})",
                        ReportingMetric::ALL.map(|m| m.as_str()).join(", ")
                    ),
                )
            })?;
            Ok(Item::ReportingRate { data_set, metric })
        }
        "D" => {
            expect_parts(2, "program.dataElement")?;
            Ok(Item::ProgramDataElement {
                program: id(&parts[0], "a program id")?,
                data_element: id(&parts[1], "a data element id")?,
            })
        }
        "A" => {
            expect_parts(2, "program.attribute")?;
            Ok(Item::ProgramAttribute {
                program: id(&parts[0], "a program id")?,
                attribute: id(&parts[1], "an attribute id")?,
            })
        }
        _ => Err(invalid(
            base.saturating_sub(prefix.chars().count() + 1),
            format!("unknown item type `{prefix}{{…}}`"),
        )),
    }
}

/// Depth of a parsed subtree: `plain` counts every level, `eval` only the
/// levels evaluation and printing recurse on (the left operand of a binary
/// operator is walked iteratively).
#[derive(Debug, Clone, Copy)]
struct Depth {
    plain: usize,
    eval: usize,
}

impl Depth {
    const ZERO: Depth = Depth { plain: 0, eval: 0 };
    const LEAF: Depth = Depth { plain: 1, eval: 1 };

    fn wrap(self) -> Depth {
        Depth {
            plain: self.plain + 1,
            eval: self.eval + 1,
        }
    }

    fn max(self, other: Depth) -> Depth {
        Depth {
            plain: self.plain.max(other.plain),
            eval: self.eval.max(other.eval),
        }
    }

    fn binary(left: Depth, right: Depth) -> Depth {
        Depth {
            plain: left.plain.max(right.plain) + 1,
            eval: left.eval.max(right.eval + 1),
        }
    }
}

enum Infix {
    Binary(BinaryOp, usize),
    Postfix(usize),
}

const ITEM_PREFIXES: &[&str] = &["C", "OUG", "R", "N", "D", "A", "I"];

struct Parser {
    chars: Vec<char>,
    /// Start of the next unconsumed token (or raw text).
    pos: usize,
    peeked: Option<Token>,
    ctx: ExprContext,
    nesting: usize,
}

impl Parser {
    fn char_at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn skip_ws_from(&self, mut i: usize) -> usize {
        while self.char_at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        i
    }

    /// Source text of a span, shortened, for messages.
    fn snippet(&self, start: usize, end: usize) -> String {
        let end = end.min(self.chars.len()).min(start + 24);
        let s: String = self.chars.get(start..end).unwrap_or(&[]).iter().collect();
        format!("`{s}`")
    }

    fn found(&self, t: &Token) -> String {
        match t.tok {
            Tok::Eof => "the end of the expression".to_string(),
            _ => self.snippet(t.start, t.end),
        }
    }

    fn lex(&self, from: usize) -> Result<Token, ParseError> {
        let start = self.skip_ws_from(from);
        let Some(c) = self.char_at(start) else {
            return Ok(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
        };
        let next = self.char_at(start + 1);
        let one = |tok| {
            Ok(Token {
                tok,
                start,
                end: start + 1,
            })
        };
        let two = |tok| {
            Ok(Token {
                tok,
                start,
                end: start + 2,
            })
        };
        match c {
            '(' => one(Tok::LParen),
            ')' => one(Tok::RParen),
            ',' => one(Tok::Comma),
            '+' => one(Tok::Op(Sym::Plus)),
            '-' => one(Tok::Op(Sym::Minus)),
            '*' => one(Tok::Op(Sym::Star)),
            '/' => one(Tok::Op(Sym::Slash)),
            '%' => one(Tok::Op(Sym::Percent)),
            '^' => one(Tok::Op(Sym::Caret)),
            '!' if next == Some('=') => two(Tok::Op(Sym::Ne)),
            '!' => one(Tok::Op(Sym::Bang)),
            '<' if next == Some('=') => two(Tok::Op(Sym::Le)),
            '<' => one(Tok::Op(Sym::Lt)),
            '>' if next == Some('=') => two(Tok::Op(Sym::Ge)),
            '>' => one(Tok::Op(Sym::Gt)),
            '=' if next == Some('=') => two(Tok::Op(Sym::EqEq)),
            '=' => Err(invalid(
                start,
                "a single `=` is not an operator; use `==` to compare",
            )),
            '&' if next == Some('&') => two(Tok::Op(Sym::AndAnd)),
            '&' => Err(invalid(
                start,
                "a single `&` is not an operator; use `&&` or `and`",
            )),
            '|' if next == Some('|') => two(Tok::Op(Sym::OrOr)),
            '|' => Err(invalid(
                start,
                "a single `|` is not an operator; use `||` or `or`",
            )),
            '\'' | '"' => self.lex_string(start, c),
            '#' if next == Some('{') => self.lex_item(start, "#", start + 2),
            '#' => Err(invalid(start, "`#` must start a data item `#{…}`")),
            '[' => self.lex_var(start),
            '.' if next.is_some_and(|n| n.is_ascii_digit()) => self.lex_number(start),
            '.' if next.is_some_and(|n| n.is_ascii_alphabetic()) => self.lex_dot(start),
            '0'..='9' => self.lex_number(start),
            c if c.is_ascii_alphabetic() || c == '_' => self.lex_word(start),
            c => Err(invalid(start, format!("unexpected character `{c}`"))),
        }
    }

    fn lex_number(&self, start: usize) -> Result<Token, ParseError> {
        let digit_at = |i: usize| self.char_at(i).is_some_and(|c| c.is_ascii_digit());
        let mut i = start;
        if self.char_at(i) == Some('0') && digit_at(i + 1) {
            return Err(invalid(start, "numbers may not have leading zeros"));
        }
        while digit_at(i) {
            i += 1;
        }
        let has_int = i > start;
        if self.char_at(i) == Some('.') {
            if digit_at(i + 1) {
                i += 1;
                while digit_at(i) {
                    i += 1;
                }
            } else if has_int {
                // "1." and "1.e3" are numbers; "1.periodOffset(" is a number
                // then a modifier.
                let exponent = matches!(self.char_at(i + 1), Some('e' | 'E'))
                    && (digit_at(i + 2)
                        || (matches!(self.char_at(i + 2), Some('+' | '-')) && digit_at(i + 3)));
                let word = self
                    .char_at(i + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '.');
                if exponent || !word {
                    i += 1;
                }
            }
        }
        if matches!(self.char_at(i), Some('e' | 'E')) {
            let mut j = i + 1;
            if matches!(self.char_at(j), Some('+' | '-')) {
                j += 1;
            }
            if !digit_at(j) {
                return Err(invalid(
                    i,
                    "malformed number: the exponent after `e` needs digits",
                ));
            }
            while digit_at(j) {
                j += 1;
            }
            i = j;
        }
        let text: String = self.chars[start..i].iter().collect();
        let value: f64 = text
            .parse()
            .map_err(|_| invalid(start, format!("malformed number `{text}`")))?;
        if !value.is_finite() {
            return Err(invalid(start, format!("number `{text}` is too large")));
        }
        Ok(Token {
            tok: Tok::Num(value),
            start,
            end: i,
        })
    }

    fn lex_string(&self, start: usize, quote: char) -> Result<Token, ParseError> {
        let mut out = String::new();
        let mut i = start + 1;
        let unterminated = || {
            invalid(
                start,
                format!("text starting here is not closed with {quote}"),
            )
        };
        loop {
            let c = self.char_at(i).ok_or_else(unterminated)?;
            match c {
                c if c == quote => break,
                '\n' | '\r' => return Err(unterminated()),
                '\\' => {
                    let e = self.char_at(i + 1).ok_or_else(unterminated)?;
                    i += 2;
                    match e {
                        'b' => out.push('\u{8}'),
                        't' => out.push('\t'),
                        'n' => out.push('\n'),
                        'f' => out.push('\u{c}'),
                        'r' => out.push('\r'),
                        '"' | '\'' | '\\' => out.push(e),
                        'u' => {
                            let hex: String =
                                self.chars.get(i..i + 4).unwrap_or(&[]).iter().collect();
                            let ch = (hex.len() == 4)
                                .then(|| u32::from_str_radix(&hex, 16).ok())
                                .flatten()
                                .and_then(char::from_u32)
                                .ok_or_else(|| {
                                    invalid(
                                        i - 2,
                                        "`\\u` must be followed by four hex digits of a valid character",
                                    )
                                })?;
                            out.push(ch);
                            i += 4;
                        }
                        other => {
                            return Err(invalid(
                                i - 2,
                                format!("unknown escape `\\{other}` in text"),
                            ))
                        }
                    }
                    continue;
                }
                c => out.push(c),
            }
            i += 1;
        }
        Ok(Token {
            tok: Tok::Str(out),
            start,
            end: i + 1,
        })
    }

    fn lex_item(
        &self,
        start: usize,
        prefix: &str,
        content_start: usize,
    ) -> Result<Token, ParseError> {
        let close = (content_start..self.chars.len())
            .find(|&i| self.chars[i] == '}')
            .ok_or_else(|| invalid(start, format!("`{prefix}{{` is not closed with `}}`")))?;
        let item = parse_item(prefix, &self.chars[content_start..close], content_start)?;
        Ok(Token {
            tok: Tok::Item(Box::new(item)),
            start,
            end: close + 1,
        })
    }

    fn lex_var(&self, start: usize) -> Result<Token, ParseError> {
        let close = (start + 1..self.chars.len())
            .find(|&i| self.chars[i] == ']')
            .ok_or_else(|| invalid(start, "`[` is not closed with `]`"))?;
        let name: String = self.chars[start + 1..close].iter().collect();
        let var = match name.as_str() {
            "days" => PeriodVar::Days,
            "periodInYear" => PeriodVar::PeriodInYear,
            "yearlyPeriodCount" => PeriodVar::YearlyPeriodCount,
            _ => {
                return Err(invalid(
                    start,
                    format!("unknown variable `[{name}]` (expected `[days]`, `[periodInYear]` or `[yearlyPeriodCount]`)"),
                ))
            }
        };
        Ok(Token {
            tok: Tok::Var(var),
            start,
            end: close + 1,
        })
    }

    fn read_word(&self, from: usize) -> (String, usize) {
        let mut i = from;
        while self.char_at(i).is_some_and(is_word_char) {
            i += 1;
        }
        (self.chars[from..i].iter().collect(), i)
    }

    fn lex_word(&self, start: usize) -> Result<Token, ParseError> {
        let (mut word, mut i) = self.read_word(start);
        if word == "orgUnit"
            && self.char_at(i) == Some('.')
            && self.char_at(i + 1).is_some_and(|c| c.is_ascii_alphabetic())
        {
            let (rest, j) = self.read_word(i + 1);
            word = format!("orgUnit.{rest}");
            i = j;
        }
        match self.char_at(i) {
            Some('{') => {
                if ITEM_PREFIXES.contains(&word.as_str()) {
                    self.lex_item(start, &word, i + 1)
                } else {
                    Err(invalid(start, format!("unknown item type `{word}{{…}}`")))
                }
            }
            Some('(') => Ok(Token {
                tok: Tok::Func(word),
                start,
                end: i + 1,
            }),
            _ => Ok(Token {
                tok: Tok::Word(word),
                start,
                end: i,
            }),
        }
    }

    fn lex_dot(&self, start: usize) -> Result<Token, ParseError> {
        let (name, i) = self.read_word(start + 1);
        if self.char_at(i) != Some('(') {
            return Err(invalid(
                start,
                format!("`.{name}` must be followed immediately by `(`"),
            ));
        }
        Ok(Token {
            tok: Tok::Dot(name),
            start,
            end: i + 1,
        })
    }

    // -- token stream -------------------------------------------------------

    fn peek(&mut self) -> Result<&Token, ParseError> {
        let tok = match self.peeked.take() {
            Some(t) => t,
            None => self.lex(self.pos)?,
        };
        Ok(self.peeked.insert(tok))
    }

    fn bump(&mut self) -> Result<Token, ParseError> {
        let tok = match self.peeked.take() {
            Some(t) => t,
            None => self.lex(self.pos)?,
        };
        self.pos = tok.end;
        Ok(tok)
    }

    fn expect_rparen(&mut self, open: usize) -> Result<(), ParseError> {
        let t = self.bump()?;
        match t.tok {
            Tok::RParen => Ok(()),
            _ => Err(self.separator_error(&t, &format!("`)` to close the `(` at position {open}"))),
        }
    }

    fn check_allowed(&self, allowed: Allowed, what: String, pos: usize) -> Result<(), ParseError> {
        if allowed.permits(self.ctx) {
            Ok(())
        } else {
            Err(err(
                pos,
                ParseErrorKind::NotAllowed {
                    what,
                    context: self.ctx,
                    allowed_in: allowed.where_allowed(),
                },
            ))
        }
    }

    // -- raw scanning for the arguments that are not expressions ------------
    // (uids, aggregation type names, dates: `2024-01-05` is not a number)

    fn raw_skip_ws(&mut self) {
        self.peeked = None;
        self.pos = self.skip_ws_from(self.pos);
    }

    fn raw_found(&self) -> String {
        match self.char_at(self.pos) {
            None => "the end of the expression".to_string(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn raw_expected(&self, expected: &str) -> ParseError {
        if self.pos >= self.chars.len() {
            err(
                self.pos,
                ParseErrorKind::UnexpectedEnd {
                    expected: expected.to_string(),
                },
            )
        } else {
            err(
                self.pos,
                ParseErrorKind::Expected {
                    expected: expected.to_string(),
                    found: self.raw_found(),
                },
            )
        }
    }

    fn raw_take(&mut self, pred: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.char_at(self.pos).is_some_and(&pred) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn raw_close(&mut self) -> Result<(), ParseError> {
        self.raw_skip_ws();
        if self.char_at(self.pos) == Some(')') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.raw_expected("`)`"))
        }
    }

    fn raw_ids(&mut self) -> Result<Vec<String>, ParseError> {
        let mut ids = Vec::new();
        loop {
            self.raw_skip_ws();
            let id = self.raw_take(is_id_char);
            if id.is_empty() {
                return Err(self.raw_expected("an id"));
            }
            ids.push(id);
            self.raw_skip_ws();
            match self.char_at(self.pos) {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(ids);
                }
                _ => return Err(self.raw_expected("`,` or `)`")),
            }
        }
    }

    fn raw_date(&mut self) -> Result<Date, ParseError> {
        self.raw_skip_ws();
        let start = self.pos;
        let bad = || invalid(start, "expected a date as yyyy-mm-dd");
        let year = self.raw_take(|c| c.is_ascii_digit());
        if year.len() != 4 || self.char_at(self.pos) != Some('-') {
            return Err(bad());
        }
        self.pos += 1;
        let month = self.raw_take(|c| c.is_ascii_digit());
        if !(1..=2).contains(&month.len()) || self.char_at(self.pos) != Some('-') {
            return Err(bad());
        }
        self.pos += 1;
        let day = self.raw_take(|c| c.is_ascii_digit());
        if !(1..=2).contains(&day.len()) {
            return Err(bad());
        }
        let (Ok(y), Ok(m), Ok(d)) = (year.parse(), month.parse(), day.parse()) else {
            return Err(bad());
        };
        let date = Date::new(y, m, d)
            .ok_or_else(|| invalid(start, format!("{year}-{month}-{day} is not a valid date")))?;
        self.raw_close()?;
        Ok(date)
    }

    // -- grammar ------------------------------------------------------------
    // The recursive path (expr → expr_inner → prefix → …) is kept to small
    // functions: debug builds give every temporary of a function its own stack
    // slot, and these frames multiply by the nesting depth.

    fn check_depth(&self, depth: Depth, pos: usize) -> Result<Depth, ParseError> {
        if depth.plain > MAX_DEPTH || depth.eval > MAX_NESTING {
            Err(err(pos, ParseErrorKind::TooDeep))
        } else {
            Ok(depth)
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<(Node, Depth), ParseError> {
        if self.nesting >= MAX_NESTING {
            return Err(err(self.skip_ws_from(self.pos), ParseErrorKind::TooDeep));
        }
        self.nesting += 1;
        let result = self.expr_inner(min_bp);
        self.nesting -= 1;
        result
    }

    /// The infix operator (or postfix modifier) at the next token, if any.
    fn peek_infix(&mut self) -> Result<Option<Infix>, ParseError> {
        let t = self.peek()?;
        let start = t.start;
        let op = match &t.tok {
            Tok::Dot(_) => return Ok(Some(Infix::Postfix(start))),
            Tok::Op(sym) => match sym {
                Sym::Plus => BinaryOp::Add,
                Sym::Minus => BinaryOp::Sub,
                Sym::Star => BinaryOp::Mul,
                Sym::Slash => BinaryOp::Div,
                Sym::Percent => BinaryOp::Mod,
                Sym::Caret => BinaryOp::Pow,
                Sym::Lt => BinaryOp::Lt,
                Sym::Gt => BinaryOp::Gt,
                Sym::Le => BinaryOp::Le,
                Sym::Ge => BinaryOp::Ge,
                Sym::EqEq => BinaryOp::Eq,
                Sym::Ne => BinaryOp::Ne,
                Sym::AndAnd => BinaryOp::And,
                Sym::OrOr => BinaryOp::Or,
                Sym::Bang => return Ok(None),
            },
            Tok::Word(w) if w == "and" => BinaryOp::And,
            Tok::Word(w) if w == "or" => BinaryOp::Or,
            _ => return Ok(None),
        };
        Ok(Some(Infix::Binary(op, start)))
    }

    fn expr_inner(&mut self, min_bp: u8) -> Result<(Node, Depth), ParseError> {
        let (mut lhs, mut depth) = self.prefix()?;
        loop {
            match self.peek_infix()? {
                None => break,
                Some(Infix::Postfix(start)) => {
                    let m = self.postfix(start)?;
                    lhs = Node::Modified(Box::new(lhs), m);
                    depth = self.check_depth(depth.wrap(), start)?;
                }
                Some(Infix::Binary(op, start)) => {
                    let (lbp, rbp) = op.binding();
                    if lbp < min_bp {
                        break;
                    }
                    self.bump()?;
                    let (rhs, rdepth) = self.expr(rbp)?;
                    lhs = Node::Binary(op, Box::new(lhs), Box::new(rhs));
                    depth = self.check_depth(Depth::binary(depth, rdepth), start)?;
                }
            }
        }
        Ok((lhs, depth))
    }

    fn postfix(&mut self, start: usize) -> Result<Modifier, ParseError> {
        match self.bump()?.tok {
            Tok::Dot(name) => self.modifier(&name, start),
            _ => Err(invalid(start, "expected `.name(`")),
        }
    }

    fn unary(&mut self, op: UnaryOp, pos: usize) -> Result<(Node, Depth), ParseError> {
        let (operand, depth) = self.expr(UNARY_BP)?;
        let depth = self.check_depth(depth.wrap(), pos)?;
        Ok((Node::Unary(op, Box::new(operand)), depth))
    }

    fn paren(&mut self, start: usize) -> Result<(Node, Depth), ParseError> {
        let (inner, depth) = self.expr(0)?;
        self.expect_rparen(start)?;
        Ok((inner, depth))
    }

    fn prefix(&mut self) -> Result<(Node, Depth), ParseError> {
        let t = self.bump()?;
        let start = t.start;
        match t.tok {
            Tok::Num(x) => Ok((Node::Number(x), Depth::LEAF)),
            Tok::Str(s) => Ok((Node::Text(s), Depth::LEAF)),
            Tok::Item(item) => self.item(*item, start),
            Tok::Var(v) => self.var(v, start),
            Tok::Word(w) => self.word(w, start),
            Tok::Func(name) => self.call(name, start),
            Tok::Op(Sym::Minus) => self.unary(UnaryOp::Neg, start),
            Tok::Op(Sym::Plus) => self.unary(UnaryOp::Plus, start),
            Tok::Op(Sym::Bang) => self.unary(UnaryOp::Not, start),
            Tok::LParen => self.paren(start),
            _ => Err(self.expected_value(start, t.end)),
        }
    }

    fn expected_value(&self, start: usize, end: usize) -> ParseError {
        if start >= self.chars.len() {
            err(
                start,
                ParseErrorKind::UnexpectedEnd {
                    expected: "a value".to_string(),
                },
            )
        } else {
            err(
                start,
                ParseErrorKind::Expected {
                    expected: "a value".to_string(),
                    found: self.snippet(start, end),
                },
            )
        }
    }

    fn item(&self, item: Item, start: usize) -> Result<(Node, Depth), ParseError> {
        self.check_allowed(item.allowed(), item.kind_label().to_string(), start)?;
        Ok((Node::Item(item), Depth::LEAF))
    }

    fn var(&self, v: PeriodVar, start: usize) -> Result<(Node, Depth), ParseError> {
        self.check_allowed(v.allowed(), format!("`[{}]`", v.name()), start)?;
        Ok((Node::Period(v), Depth::LEAF))
    }

    fn word(&mut self, w: String, start: usize) -> Result<(Node, Depth), ParseError> {
        match w.as_str() {
            "true" => Ok((Node::Bool(true), Depth::LEAF)),
            "false" => Ok((Node::Bool(false), Depth::LEAF)),
            "null" => Ok((Node::Null, Depth::LEAF)),
            "not" => self.unary(UnaryOp::Not, start),
            "and" | "or" | "in" => Err(err(
                start,
                ParseErrorKind::Expected {
                    expected: "a value".to_string(),
                    found: format!("`{w}`"),
                },
            )),
            _ if Function::from_name(&w).is_some()
                || OrgUnitTest::from_name(&w).is_some()
                || w == "is" =>
            {
                Err(err(start, ParseErrorKind::MissingParen(w)))
            }
            _ => Err(err(start, ParseErrorKind::UnknownWord(w))),
        }
    }

    fn separator_error(&self, t: &Token, expected: &str) -> ParseError {
        match t.tok {
            Tok::Eof => err(
                t.start,
                ParseErrorKind::UnexpectedEnd {
                    expected: expected.to_string(),
                },
            ),
            _ => err(
                t.start,
                ParseErrorKind::Expected {
                    expected: expected.to_string(),
                    found: self.found(t),
                },
            ),
        }
    }

    /// Comma-separated expressions up to `)`, with their combined depth.
    fn args(&mut self) -> Result<(Vec<Node>, Depth), ParseError> {
        let mut args = Vec::new();
        let mut depth = Depth::ZERO;
        if matches!(self.peek()?.tok, Tok::RParen) {
            self.bump()?;
            return Ok((args, depth));
        }
        loop {
            let (a, d) = self.expr(0)?;
            args.push(a);
            depth = depth.max(d);
            let t = self.bump()?;
            match t.tok {
                Tok::Comma => continue,
                Tok::RParen => return Ok((args, depth)),
                _ => return Err(self.separator_error(&t, "`,` or `)`")),
            }
        }
    }

    fn call(&mut self, name: String, start: usize) -> Result<(Node, Depth), ParseError> {
        if name == "is" {
            return self.is_call(start);
        }
        if let Some(test) = OrgUnitTest::from_name(&name) {
            self.check_allowed(
                Allowed::ValidationRuleAndPredictor,
                format!("function `{name}`"),
                start,
            )?;
            let ids = self.raw_ids()?;
            return Ok((Node::OrgUnit(test, ids), Depth::LEAF));
        }
        let Some(f) = Function::from_name(&name) else {
            return Err(err(start, ParseErrorKind::UnknownFunction(name)));
        };
        self.check_allowed(f.allowed(), format!("function `{name}`"), start)?;
        let (args, depth) = self.args()?;
        let (min, max) = f.arity();
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            return Err(err(
                start,
                ParseErrorKind::Arity {
                    function: name,
                    expected: describe_arity(min, max),
                    found: args.len(),
                },
            ));
        }
        let depth = self.check_depth(depth.wrap(), start)?;
        Ok((Node::Call(f, args), depth))
    }

    fn is_call(&mut self, start: usize) -> Result<(Node, Depth), ParseError> {
        let (value, depth) = self.expr(0)?;
        let t = self.bump()?;
        if !matches!(&t.tok, Tok::Word(w) if w == "in") {
            return Err(self.separator_error(&t, "`in`"));
        }
        let (options, d) = self.args()?;
        if options.is_empty() {
            return Err(err(
                start,
                ParseErrorKind::Arity {
                    function: "is".to_string(),
                    expected: "a value and at least 1 option after `in`".to_string(),
                    found: 1,
                },
            ));
        }
        let depth = self.check_depth(depth.max(d).wrap(), start)?;
        Ok((Node::Is(Box::new(value), options), depth))
    }

    fn modifier(&mut self, name: &str, start: usize) -> Result<Modifier, ParseError> {
        let allowed = Modifier::allowed_by_name(name)
            .ok_or_else(|| err(start, ParseErrorKind::UnknownFunction(format!(".{name}"))))?;
        self.check_allowed(allowed, format!("`.{name}(…)`"), start)?;
        match name {
            "aggregationType" => {
                self.raw_skip_ws();
                let at = self.pos;
                let t = self.raw_take(is_word_char);
                if t.is_empty() {
                    return Err(self.raw_expected("an aggregation type"));
                }
                if !AGGREGATION_TYPES.contains(&t.as_str()) {
                    return Err(invalid(at, format!("unknown aggregation type `{t}`")));
                }
                self.raw_close()?;
                Ok(Modifier::AggregationType(t))
            }
            "periodOffset" => {
                self.raw_skip_ws();
                let at = self.pos;
                let negative = match self.char_at(self.pos) {
                    Some('-') => {
                        self.pos += 1;
                        true
                    }
                    Some('+') => {
                        self.pos += 1;
                        false
                    }
                    _ => false,
                };
                self.raw_skip_ws();
                let digits = self.raw_take(|c| c.is_ascii_digit());
                if digits.is_empty() {
                    return Err(self.raw_expected("a whole number of periods"));
                }
                let n: i32 = format!("{}{digits}", if negative { "-" } else { "" })
                    .parse()
                    .map_err(|_| invalid(at, "the period offset is too large"))?;
                self.raw_close()?;
                Ok(Modifier::PeriodOffset(n))
            }
            "yearToDate" => {
                self.raw_close()?;
                Ok(Modifier::YearToDate)
            }
            "maxDate" => Ok(Modifier::MaxDate(self.raw_date()?)),
            _ => Ok(Modifier::MinDate(self.raw_date()?)),
        }
    }
}

/// Parses `text` as an expression of kind `ctx`.
pub fn parse(text: &str, ctx: ExprContext) -> Result<Expr, ParseError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        peeked: None,
        ctx,
        nesting: 0,
    };
    if matches!(p.peek()?.tok, Tok::Eof) {
        return Err(err(0, ParseErrorKind::Empty));
    }
    let (root, _) = p.expr(0)?;
    let t = p.bump()?;
    match t.tok {
        Tok::Eof => Ok(Expr { root }),
        Tok::RParen => Err(invalid(t.start, "this `)` has no matching `(`")),
        _ => Err(err(
            t.start,
            ParseErrorKind::Expected {
                expected: "an operator or the end of the expression".to_string(),
                found: p.found(&t),
            },
        )),
    }
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

type Names<'a> = Option<&'a dyn Fn(&Item) -> Option<String>>;

/// Shortest text that parses back to exactly `x`; the exponent form keeps
/// very large and very small values from printing hundreds of digits.
fn fmt_number(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_string();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-6..1e16).contains(&a) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Every control character is in the BMP, so four hex digits do.
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn print_list(nodes: &[Node], names: Names) -> String {
    nodes
        .iter()
        .map(|n| print(n, names).0)
        .collect::<Vec<_>>()
        .join(", ")
}

fn wrap(node: &Node, min_bp: u8, names: Names) -> String {
    let (s, bp) = print(node, names);
    if bp < min_bp {
        format!("({s})")
    } else {
        s
    }
}

/// Prints a left-associated chain iteratively, so a long sum does not
/// recurse once per term.
fn print_chain(node: &Node, names: Names) -> (String, u8) {
    let (spine, bottom) = left_spine(node);
    let (mut text, mut bp) = print(bottom, names);
    for (op, r) in spine.into_iter().rev() {
        let (lbp, rbp) = op.binding();
        let left_min = if op.right_assoc() { lbp + 1 } else { lbp };
        if bp < left_min {
            text = format!("({text})");
        }
        text.push(' ');
        text.push_str(op.symbol());
        text.push(' ');
        text.push_str(&wrap(r, rbp, names));
        bp = lbp;
    }
    (text, bp)
}

/// Text of `node` and the binding power of its outermost operator, so the
/// parent knows whether parentheses are needed.
fn print(node: &Node, names: Names) -> (String, u8) {
    match node {
        Node::Number(x) => (fmt_number(*x), ATOM_BP),
        Node::Text(s) => (quote(s), ATOM_BP),
        Node::Bool(b) => (b.to_string(), ATOM_BP),
        Node::Null => ("null".to_string(), ATOM_BP),
        Node::Item(item) => (
            names
                .and_then(|f| f(item))
                .unwrap_or_else(|| item.to_string()),
            ATOM_BP,
        ),
        Node::Period(v) => (format!("[{}]", v.name()), ATOM_BP),
        Node::Unary(op, x) => (
            format!("{}{}", op.symbol(), wrap(x, UNARY_BP, names)),
            UNARY_BP,
        ),
        Node::Binary(..) => print_chain(node, names),
        Node::Call(f, args) => (
            format!("{}({})", f.name(), print_list(args, names)),
            ATOM_BP,
        ),
        Node::Is(v, options) => (
            format!(
                "is({} in {})",
                print(v, names).0,
                print_list(options, names)
            ),
            ATOM_BP,
        ),
        Node::OrgUnit(t, ids) => (format!("{}({})", t.name(), ids.join(", ")), ATOM_BP),
        Node::Modified(x, m) => {
            // A bare number before `.name(` would read as a decimal point.
            let inner = match **x {
                Node::Number(_) => format!("({})", print(x, names).0),
                _ => wrap(x, ATOM_BP, names),
            };
            (format!("{inner}.{m}"), ATOM_BP)
        }
    }
}

// ---------------------------------------------------------------------------
// Values and sources
// ---------------------------------------------------------------------------

/// The result of an evaluation. `Null` means "no value": a validation rule
/// side to skip, an indicator with no value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
    Null,
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Numbers as they are, booleans as 1/0 (as DHIS2 stores them).
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(x) => Some(*x),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Number(x) => Some(*x != 0.0),
            _ => None,
        }
    }
}

/// DHIS2's `missingValueStrategy` of a validation rule side or predictor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MissingValueStrategy {
    /// No value if any referenced data item has no value.
    SkipIfAnyValueMissing,
    /// No value if the expression has data items and none has a value;
    /// otherwise missing items count as 0 / false / "". The server default.
    #[default]
    SkipIfAllValuesMissing,
    /// Always evaluated; missing items count as 0 / false / "".
    NeverSkip,
}

/// Where an evaluation gets its data. Only [`ValueSource::item`] is
/// required; the other hooks default to "not available".
pub trait ValueSource {
    /// Numeric value of an item for the evaluated org unit and period, or
    /// `None` when there is none. Constants must be answered here too.
    fn item(&self, item: &Item) -> Option<f64>;

    /// Override to supply text or boolean items (e.g. for `contains`).
    fn item_value(&self, item: &Item) -> Value {
        self.item(item).map_or(Value::Null, Value::Number)
    }

    /// Value of an item under `.periodOffset(…)`, `.yearToDate()`,
    /// `.aggregationType(…)`, `.minDate(…)` or `.maxDate(…)`. The default
    /// has no such data: guessing with the unmodified value would give
    /// silently wrong indicators.
    fn modified_item(&self, item: &Item, mods: &QueryMods) -> Value {
        let _ = (item, mods);
        Value::Null
    }

    /// `[days]`
    fn days(&self) -> Option<f64> {
        None
    }

    /// `[periodInYear]`
    fn period_in_year(&self) -> Option<f64> {
        None
    }

    /// `[yearlyPeriodCount]`
    fn yearly_period_count(&self) -> Option<f64> {
        None
    }

    /// `orgUnit.ancestor(uids…)`: is one of them an ancestor of the
    /// evaluated org unit?
    fn org_unit_ancestor(&self, uids: &[String]) -> bool {
        let _ = uids;
        false
    }

    /// `orgUnit.group(uids…)`: is the org unit in one of these groups?
    fn org_unit_group(&self, uids: &[String]) -> bool {
        let _ = uids;
        false
    }

    /// `orgUnit.dataSet(uids…)`: is one of these data sets assigned?
    fn org_unit_data_set(&self, uids: &[String]) -> bool {
        let _ = uids;
        false
    }

    /// `orgUnit.program(uids…)`: is one of these programs assigned?
    fn org_unit_program(&self, uids: &[String]) -> bool {
        let _ = uids;
        false
    }

    /// `subExpression(x)`: the caller evaluates `x` per underlying value
    /// before aggregating. `None` evaluates `x` inline, which is the same
    /// when each item has a single underlying value.
    fn sub_expression(&self, inner: &Node) -> Option<Value> {
        let _ = inner;
        None
    }

    /// Number of sampled past periods for predictor aggregates (`sum`,
    /// `avg`, …).
    fn sample_count(&self) -> usize {
        0
    }

    /// Value of an item in sampled period `sample` (0-based, below
    /// [`ValueSource::sample_count`]).
    fn sample_item(&self, sample: usize, item: &Item) -> Value {
        let _ = (sample, item);
        Value::Null
    }
}

/// Presents one sampled period as if it were the evaluated period.
struct SampleSource<'a> {
    inner: &'a dyn ValueSource,
    index: usize,
}

impl ValueSource for SampleSource<'_> {
    fn item(&self, item: &Item) -> Option<f64> {
        self.item_value(item).as_number()
    }
    fn item_value(&self, item: &Item) -> Value {
        if item.is_data() {
            self.inner.sample_item(self.index, item)
        } else {
            self.inner.item_value(item)
        }
    }
    fn modified_item(&self, item: &Item, _mods: &QueryMods) -> Value {
        self.item_value(item)
    }
    fn days(&self) -> Option<f64> {
        self.inner.days()
    }
    fn org_unit_ancestor(&self, uids: &[String]) -> bool {
        self.inner.org_unit_ancestor(uids)
    }
    fn org_unit_group(&self, uids: &[String]) -> bool {
        self.inner.org_unit_group(uids)
    }
    fn org_unit_data_set(&self, uids: &[String]) -> bool {
        self.inner.org_unit_data_set(uids)
    }
    fn org_unit_program(&self, uids: &[String]) -> bool {
        self.inner.org_unit_program(uids)
    }
    // A nested aggregate has no samples of its own: sample_count stays 0.
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// Internal value: `Missing` is a data item without a value that, by the
/// missing-value strategy, counts as 0 / false / "" depending on where it is
/// used.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Num(f64),
    Bool(bool),
    Text(String),
    Null,
    Missing,
}

impl V {
    fn from_value(v: Value) -> V {
        match v {
            Value::Number(x) => num_of(x),
            Value::Bool(b) => V::Bool(b),
            Value::Text(s) => V::Text(s),
            Value::Null => V::Null,
        }
    }

    fn into_value(self) -> Value {
        match self {
            V::Num(x) => Value::Number(x),
            V::Bool(b) => Value::Bool(b),
            V::Text(s) => Value::Text(s),
            V::Null => Value::Null,
            V::Missing => Value::Number(0.0),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            V::Num(_) | V::Missing => "a number",
            V::Bool(_) => "a boolean",
            V::Text(_) => "text",
            V::Null => "no value",
        }
    }

    /// What `Missing` stands for next to `other`.
    fn zero_like(other: &V) -> V {
        match other {
            V::Text(_) => V::Text(String::new()),
            V::Bool(_) => V::Bool(false),
            _ => V::Num(0.0),
        }
    }
}

/// Infinite and NaN results (overflow, `log(0)`, `0/0`) are "no value", as
/// DHIS2 yields none; -0 is folded into 0 so it prints as "0".
fn num_of(x: f64) -> V {
    if !x.is_finite() {
        V::Null
    } else if x == 0.0 {
        V::Num(0.0)
    } else {
        V::Num(x)
    }
}

fn opt_num(x: Option<f64>) -> V {
    x.map_or(V::Null, num_of)
}

fn to_num(v: V, operation: &'static str) -> Result<Option<f64>, EvalError> {
    match v {
        V::Num(x) => Ok(Some(x)),
        V::Bool(b) => Ok(Some(if b { 1.0 } else { 0.0 })),
        V::Missing => Ok(Some(0.0)),
        V::Null => Ok(None),
        V::Text(_) => Err(EvalError::TypeMismatch {
            operation,
            expected: "a number",
            found: "text",
        }),
    }
}

fn to_bool(v: V, operation: &'static str) -> Result<Option<bool>, EvalError> {
    match v {
        V::Bool(b) => Ok(Some(b)),
        V::Num(x) => Ok(Some(x != 0.0)),
        V::Missing => Ok(Some(false)),
        V::Null => Ok(None),
        V::Text(_) => Err(EvalError::TypeMismatch {
            operation,
            expected: "a boolean",
            found: "text",
        }),
    }
}

fn to_text(v: V) -> Option<String> {
    match v {
        V::Text(s) => Some(s),
        V::Missing => Some(String::new()),
        V::Num(x) => Some(fmt_number(x)),
        V::Bool(b) => Some(b.to_string()),
        V::Null => None,
    }
}

/// Java-style ordering: numbers with numbers (booleans as 1/0), text with
/// text, booleans with booleans (false < true). `None` when either side has
/// no value.
fn compare_values(a: V, b: V, operation: &'static str) -> Result<Option<Ordering>, EvalError> {
    let (a, b) = match (a, b) {
        (V::Null, _) | (_, V::Null) => return Ok(None),
        (V::Missing, b) => (V::zero_like(&b), b),
        (a, V::Missing) => {
            let b = V::zero_like(&a);
            (a, b)
        }
        pair => pair,
    };
    match (&a, &b) {
        (V::Text(x), V::Text(y)) => Ok(Some(x.cmp(y))),
        (V::Bool(x), V::Bool(y)) => Ok(Some(x.cmp(y))),
        (V::Text(_), _) | (_, V::Text(_)) => Err(EvalError::Incomparable {
            operation,
            left: a.kind(),
            right: b.kind(),
        }),
        _ => {
            let x = to_num(a, operation)?;
            let y = to_num(b, operation)?;
            Ok(match (x, y) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => None,
            })
        }
    }
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sum of squared deviations divided by `n - ddof`; needs more than `ddof`
/// values.
fn variance(xs: &[f64], ddof: usize) -> Option<f64> {
    if xs.len() <= ddof {
        return None;
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some(ss / (xs.len() - ddof) as f64)
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Continuous percentile (linear interpolation between closest ranks), as
/// SQL's `percentile_cont`.
fn percentile_cont(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let v = sorted(xs);
    let rank = p * (v.len() - 1) as f64;
    let lo = rank.floor();
    let frac = rank - lo;
    // rank lies in [0, len-1], so these casts are in range.
    let lo_v = *v.get(lo as usize)?;
    let hi_v = *v.get(rank.ceil() as usize)?;
    Some(lo_v + (hi_v - lo_v) * frac)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit;
/// fractional error below 1.2e-7 everywhere, ample for health data).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

fn norm_cdf(x: f64, mean: f64, sd: f64) -> f64 {
    0.5 * erfc(-(x - mean) / (sd * std::f64::consts::SQRT_2))
}

fn norm_pdf(x: f64, mean: f64, sd: f64) -> f64 {
    let z = (x - mean) / sd;
    (-0.5 * z * z).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt())
}

fn lookup(src: &dyn ValueSource, item: &Item, mods: &QueryMods) -> V {
    let v = if mods.is_default() || !item.is_data() {
        src.item_value(item)
    } else {
        src.modified_item(item, mods)
    };
    V::from_value(v)
}

fn walk_items(node: &Node, mods: &QueryMods, sampled: bool, out: &mut Vec<ItemRequest>) {
    match node {
        Node::Item(item) => {
            let req = ItemRequest {
                item: item.clone(),
                // Constants are the same in every period.
                modifiers: if item.is_data() {
                    mods.clone()
                } else {
                    QueryMods::default()
                },
                sampled,
            };
            if !out.contains(&req) {
                out.push(req);
            }
        }
        Node::Unary(_, x) => walk_items(x, mods, sampled, out),
        Node::Binary(..) => {
            let (spine, bottom) = left_spine(node);
            walk_items(bottom, mods, sampled, out);
            for (_, r) in spine.into_iter().rev() {
                walk_items(r, mods, sampled, out);
            }
        }
        Node::Call(f, args) => {
            for (i, a) in args.iter().enumerate() {
                walk_items(a, mods, sampled || f.sampled_arg() == Some(i), out);
                // Without an explicit mean and deviation they come from the
                // samples of x, so x is needed both ways.
                if matches!(f, Function::NormDistCum | Function::NormDistDen)
                    && i == 0
                    && args.len() < 3
                {
                    walk_items(a, mods, true, out);
                }
            }
        }
        Node::Is(v, options) => {
            walk_items(v, mods, sampled, out);
            for o in options {
                walk_items(o, mods, sampled, out);
            }
        }
        Node::Modified(x, m) => {
            let mut inner = mods.clone();
            inner.apply(m);
            walk_items(x, &inner, sampled, out);
        }
        Node::Number(_)
        | Node::Text(_)
        | Node::Bool(_)
        | Node::Null
        | Node::Period(_)
        | Node::OrgUnit(..) => {}
    }
}

/// Applies the missing-value strategy to the data items of the evaluated
/// period (constants and sampled items do not count).
fn should_skip(node: &Node, src: &dyn ValueSource, missing: MissingValueStrategy) -> bool {
    if missing == MissingValueStrategy::NeverSkip {
        return false;
    }
    let mut reqs = Vec::new();
    walk_items(node, &QueryMods::default(), false, &mut reqs);
    let (mut total, mut present) = (0usize, 0usize);
    for r in reqs.iter().filter(|r| !r.sampled && r.item.is_data()) {
        total += 1;
        if lookup(src, &r.item, &r.modifiers) != V::Null {
            present += 1;
        }
    }
    match missing {
        MissingValueStrategy::SkipIfAnyValueMissing => present < total,
        MissingValueStrategy::SkipIfAllValuesMissing => total > 0 && present == 0,
        MissingValueStrategy::NeverSkip => false,
    }
}

#[derive(Clone, Default)]
struct Env {
    /// Inside `isNull`, `isNotNull`, `firstNonNull`: missing items stay null.
    raw: bool,
    mods: QueryMods,
}

struct Evaluator<'a> {
    src: &'a dyn ValueSource,
}

/// The left spine of a binary chain, top-down, and the node at its bottom:
/// `((a + b) - c) * d` gives `[(*, d), (-, c), (+, b)]` and `a`.
fn left_spine(node: &Node) -> (Vec<(BinaryOp, &Node)>, &Node) {
    let mut spine = Vec::new();
    let mut cur = node;
    while let Node::Binary(op, l, r) = cur {
        spine.push((*op, &**r));
        cur = l;
    }
    (spine, cur)
}

// Each node kind is evaluated in its own small function: the recursion goes
// through `eval`, and debug builds size a frame by all of a function's arms.
impl Evaluator<'_> {
    fn eval(&self, node: &Node, env: &Env) -> Result<V, EvalError> {
        match node {
            Node::Number(x) => Ok(num_of(*x)),
            Node::Text(s) => Ok(V::Text(s.clone())),
            Node::Bool(b) => Ok(V::Bool(*b)),
            Node::Null => Ok(V::Null),
            Node::Item(item) => self.item(item, env),
            Node::Period(p) => Ok(opt_num(match p {
                PeriodVar::Days => self.src.days(),
                PeriodVar::PeriodInYear => self.src.period_in_year(),
                PeriodVar::YearlyPeriodCount => self.src.yearly_period_count(),
            })),
            Node::Unary(op, x) => self.unary(*op, x, env),
            Node::Binary(..) => self.chain(node, env),
            Node::Call(f, args) => self.call(*f, args, env),
            Node::Is(v, options) => self.is(v, options, env),
            Node::OrgUnit(test, ids) => Ok(V::Bool(match test {
                OrgUnitTest::Ancestor => self.src.org_unit_ancestor(ids),
                OrgUnitTest::Group => self.src.org_unit_group(ids),
                OrgUnitTest::DataSet => self.src.org_unit_data_set(ids),
                OrgUnitTest::Program => self.src.org_unit_program(ids),
            })),
            Node::Modified(x, m) => self.modified(x, m, env),
        }
    }

    fn item(&self, item: &Item, env: &Env) -> Result<V, EvalError> {
        Ok(match (lookup(self.src, item, &env.mods), item) {
            (V::Null, Item::Constant(id)) => return Err(EvalError::UnknownConstant(id.clone())),
            (V::Null, _) if !env.raw => V::Missing,
            (v, _) => v,
        })
    }

    fn unary(&self, op: UnaryOp, x: &Node, env: &Env) -> Result<V, EvalError> {
        let v = self.eval(x, env)?;
        Ok(match op {
            UnaryOp::Neg => opt_num(to_num(v, "-")?.map(|x| -x)),
            UnaryOp::Plus => opt_num(to_num(v, "+")?),
            UnaryOp::Not => to_bool(v, "!")?.map_or(V::Null, |b| V::Bool(!b)),
        })
    }

    fn modified(&self, x: &Node, m: &Modifier, env: &Env) -> Result<V, EvalError> {
        let mut inner = env.clone();
        inner.mods.apply(m);
        self.eval(x, &inner)
    }

    fn is(&self, v: &Node, options: &[Node], env: &Env) -> Result<V, EvalError> {
        let value = self.eval(v, env)?;
        for o in options {
            let candidate = self.eval(o, env)?;
            let equal = match (&value, &candidate) {
                (V::Null, V::Null) => true,
                _ => matches!(
                    compare_values(value.clone(), candidate, "is"),
                    Ok(Some(Ordering::Equal))
                ),
            };
            if equal {
                return Ok(V::Bool(true));
            }
        }
        Ok(V::Bool(false))
    }

    /// Walks a left-associated chain (`a + b - c …`) iteratively, so a long
    /// sum does not recurse once per term.
    fn chain(&self, node: &Node, env: &Env) -> Result<V, EvalError> {
        let (spine, bottom) = left_spine(node);
        let mut acc = self.eval(bottom, env)?;
        for (op, r) in spine.into_iter().rev() {
            acc = self.binary(op, acc, r, env)?;
        }
        Ok(acc)
    }

    fn binary(&self, op: BinaryOp, a: V, r: &Node, env: &Env) -> Result<V, EvalError> {
        let sym = op.symbol();
        match op {
            // Kleene logic: a known false (for &&) or true (for ||) decides
            // even when the other side has no value.
            BinaryOp::And | BinaryOp::Or => {
                let decisive = op == BinaryOp::Or;
                let a = to_bool(a, sym)?;
                if a == Some(decisive) {
                    return Ok(V::Bool(decisive));
                }
                let b = to_bool(self.eval(r, env)?, sym)?;
                Ok(match (a, b) {
                    (_, Some(x)) if x == decisive => V::Bool(decisive),
                    (Some(_), Some(_)) => V::Bool(!decisive),
                    _ => V::Null,
                })
            }
            BinaryOp::Lt
            | BinaryOp::Gt
            | BinaryOp::Le
            | BinaryOp::Ge
            | BinaryOp::Eq
            | BinaryOp::Ne => {
                let b = self.eval(r, env)?;
                Ok(match compare_values(a, b, sym)? {
                    None => V::Null,
                    Some(ord) => V::Bool(match op {
                        BinaryOp::Lt => ord == Ordering::Less,
                        BinaryOp::Gt => ord == Ordering::Greater,
                        BinaryOp::Le => ord != Ordering::Greater,
                        BinaryOp::Ge => ord != Ordering::Less,
                        BinaryOp::Eq => ord == Ordering::Equal,
                        _ => ord != Ordering::Equal,
                    }),
                })
            }
            BinaryOp::Pow
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Mod
            | BinaryOp::Add
            | BinaryOp::Sub => {
                let a = to_num(a, sym)?;
                let b = to_num(self.eval(r, env)?, sym)?;
                let (Some(a), Some(b)) = (a, b) else {
                    return Ok(V::Null);
                };
                Ok(match op {
                    BinaryOp::Add => num_of(a + b),
                    BinaryOp::Sub => num_of(a - b),
                    BinaryOp::Mul => num_of(a * b),
                    // DHIS2 gives no value rather than infinity.
                    BinaryOp::Div | BinaryOp::Mod if b == 0.0 => V::Null,
                    BinaryOp::Div => num_of(a / b),
                    BinaryOp::Mod => num_of(a % b),
                    _ => num_of(a.powf(b)),
                })
            }
        }
    }

    fn num_arg(
        &self,
        args: &[Node],
        i: usize,
        env: &Env,
        name: &'static str,
    ) -> Result<Option<f64>, EvalError> {
        match args.get(i) {
            Some(a) => to_num(self.eval(a, env)?, name),
            None => Ok(None),
        }
    }

    /// The argument `i`, which the arity check guarantees.
    fn arg(args: &[Node], i: usize, f: Function) -> Result<&Node, EvalError> {
        args.get(i).ok_or(EvalError::Arity {
            function: f.name(),
            found: args.len(),
        })
    }

    fn call(&self, f: Function, args: &[Node], env: &Env) -> Result<V, EvalError> {
        use Function::*;
        let (min, max) = f.arity();
        // The parser checks arity; a hand-built tree might not.
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            return Err(EvalError::Arity {
                function: f.name(),
                found: args.len(),
            });
        }
        match f {
            If => self.fn_if(args, env),
            IsNull | IsNotNull | FirstNonNull => self.fn_nulls(f, args, env),
            Greatest | Least | Log | Log10 | RemoveZeros => self.fn_math(f, args, env),
            Contains | ContainsItems => self.fn_text(f, args, env),
            SubExpression => {
                let x = Self::arg(args, 0, f)?;
                match self.src.sub_expression(x) {
                    Some(v) => Ok(V::from_value(v)),
                    None => self.eval(x, env),
                }
            }
            Avg | Count | Max | Median | Min | PercentileCont | Stddev | StddevPop | StddevSamp
            | Sum | Variance => self.fn_aggregate(f, args, env),
            NormDistCum | NormDistDen => self.fn_norm_dist(f, args, env),
        }
    }

    fn fn_if(&self, args: &[Node], env: &Env) -> Result<V, EvalError> {
        let f = Function::If;
        match to_bool(self.eval(Self::arg(args, 0, f)?, env)?, f.name())? {
            None => Ok(V::Null),
            Some(true) => self.eval(Self::arg(args, 1, f)?, env),
            Some(false) => self.eval(Self::arg(args, 2, f)?, env),
        }
    }

    /// `isNull`, `isNotNull` and `firstNonNull` see missing items as null,
    /// not as the 0 the strategy would substitute.
    fn fn_nulls(&self, f: Function, args: &[Node], env: &Env) -> Result<V, EvalError> {
        let raw = Env {
            raw: true,
            mods: env.mods.clone(),
        };
        match f {
            Function::IsNull => Ok(V::Bool(self.eval(Self::arg(args, 0, f)?, &raw)? == V::Null)),
            Function::IsNotNull => Ok(V::Bool(self.eval(Self::arg(args, 0, f)?, &raw)? != V::Null)),
            _ => {
                for a in args {
                    let v = self.eval(a, &raw)?;
                    if v != V::Null {
                        return Ok(v);
                    }
                }
                Ok(V::Null)
            }
        }
    }

    fn fn_math(&self, f: Function, args: &[Node], env: &Env) -> Result<V, EvalError> {
        let name = f.name();
        Ok(match f {
            Function::Greatest | Function::Least => {
                let mut best: Option<f64> = None;
                for i in 0..args.len() {
                    if let Some(x) = self.num_arg(args, i, env, name)? {
                        best = Some(match best {
                            None => x,
                            Some(b) if f == Function::Greatest => b.max(x),
                            Some(b) => b.min(x),
                        });
                    }
                }
                opt_num(best)
            }
            Function::Log => match (self.num_arg(args, 0, env, name)?, args.len()) {
                (Some(x), 1) => num_of(x.ln()),
                (Some(x), _) => opt_num(self.num_arg(args, 1, env, name)?.map(|b| x.ln() / b.ln())),
                (None, _) => V::Null,
            },
            Function::Log10 => opt_num(self.num_arg(args, 0, env, name)?.map(f64::log10)),
            _ => match self.eval(Self::arg(args, 0, f)?, env)? {
                V::Missing => V::Null,
                V::Num(0.0) => V::Null,
                v => v,
            },
        })
    }

    fn fn_text(&self, f: Function, args: &[Node], env: &Env) -> Result<V, EvalError> {
        let Some(haystack) = to_text(self.eval(Self::arg(args, 0, f)?, env)?) else {
            return Ok(V::Null);
        };
        let list: Vec<&str> = haystack.split(',').map(str::trim).collect();
        let mut all = true;
        for a in args.iter().skip(1) {
            let Some(needle) = to_text(self.eval(a, env)?) else {
                return Ok(V::Null);
            };
            all &= if f == Function::Contains {
                haystack.contains(needle.as_str())
            } else {
                list.contains(&needle.trim())
            };
        }
        Ok(V::Bool(all))
    }

    /// Numeric values of `inner` over the sampled periods. A period where
    /// every item of `inner` is missing contributes nothing; otherwise
    /// missing items count as 0, as under the default strategy.
    fn samples(&self, inner: &Node, operation: &'static str) -> Result<Vec<f64>, EvalError> {
        let mut out = Vec::new();
        for index in 0..self.src.sample_count() {
            let s = SampleSource {
                inner: self.src,
                index,
            };
            if should_skip(inner, &s, MissingValueStrategy::SkipIfAllValuesMissing) {
                continue;
            }
            let v = Evaluator { src: &s }.eval(inner, &Env::default())?;
            if let Some(x) = to_num(v, operation)? {
                out.push(x);
            }
        }
        Ok(out)
    }

    fn fn_aggregate(&self, f: Function, args: &[Node], env: &Env) -> Result<V, EvalError> {
        use Function::*;
        let name = f.name();
        let xs = self.samples(Self::arg(args, f.sampled_arg().unwrap_or(0), f)?, name)?;
        Ok(match f {
            Count => V::Num(xs.len() as f64),
            PercentileCont => {
                let p = self.num_arg(args, 0, env, name)?;
                opt_num(p.and_then(|p| percentile_cont(&xs, p)))
            }
            _ => opt_num(match f {
                Sum => (!xs.is_empty()).then(|| xs.iter().sum()),
                Avg => mean(&xs),
                Max => xs.iter().copied().reduce(f64::max),
                Min => xs.iter().copied().reduce(f64::min),
                Median => percentile_cont(&xs, 0.5),
                Variance => variance(&xs, 1),
                Stddev | StddevSamp => variance(&xs, 1).map(f64::sqrt),
                _ => variance(&xs, 0).map(f64::sqrt),
            }),
        })
    }

    /// Without an explicit mean and standard deviation, they are those of x
    /// over the sampled periods.
    fn fn_norm_dist(&self, f: Function, args: &[Node], env: &Env) -> Result<V, EvalError> {
        let name = f.name();
        let x = self.num_arg(args, 0, env, name)?;
        let xs = if args.len() < 3 {
            self.samples(Self::arg(args, 0, f)?, name)?
        } else {
            Vec::new()
        };
        let m = if args.len() > 1 {
            self.num_arg(args, 1, env, name)?
        } else {
            mean(&xs)
        };
        let sd = if args.len() > 2 {
            self.num_arg(args, 2, env, name)?
        } else {
            variance(&xs, 1).map(f64::sqrt)
        };
        Ok(match (x, m, sd) {
            (Some(x), Some(m), Some(sd)) if sd > 0.0 => num_of(if f == Function::NormDistCum {
                norm_cdf(x, m, sd)
            } else {
                norm_pdf(x, m, sd)
            }),
            _ => V::Null,
        })
    }
}

impl Expr {
    /// Every item referenced (constants included), each once, in order of
    /// appearance: what to pre-fetch.
    pub fn items(&self) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        for r in self.item_requests() {
            if !out.contains(&r.item) {
                out.push(r.item);
            }
        }
        out
    }

    /// Every (item, modifiers, sampled) combination the evaluation will ask
    /// the [`ValueSource`] for.
    pub fn item_requests(&self) -> Vec<ItemRequest> {
        let mut out = Vec::new();
        walk_items(&self.root, &QueryMods::default(), false, &mut out);
        out
    }

    /// Text that parses (in the same context) back to an equal `Expr`.
    pub fn to_string_canonical(&self) -> String {
        print(&self.root, None).0
    }

    /// The expression with each item replaced by `names(item)`; items
    /// without a name are left in their canonical written form.
    pub fn describe(&self, names: &dyn Fn(&Item) -> Option<String>) -> String {
        print(&self.root, Some(names)).0
    }

    /// Evaluates the expression. `Ok(Value::Null)` means "no value": the
    /// missing-value strategy said skip, or the arithmetic had no result
    /// (division by zero, `log(0)`, overflow, a null operand).
    pub fn evaluate(
        &self,
        src: &dyn ValueSource,
        missing: MissingValueStrategy,
    ) -> Result<Value, EvalError> {
        if should_skip(&self.root, src, missing) {
            return Ok(Value::Null);
        }
        Ok(Evaluator { src }
            .eval(&self.root, &Env::default())?
            .into_value())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_canonical())
    }
}

// ---------------------------------------------------------------------------
// Validation rule operators
// ---------------------------------------------------------------------------

/// A validation rule's `operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    EqualTo,
    NotEqualTo,
    GreaterThan,
    GreaterThanOrEqualTo,
    LessThan,
    LessThanOrEqualTo,
    CompulsoryPair,
    ExclusivePair,
}

impl Operator {
    /// The mathematical symbol DHIS2 shows in validation results.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::EqualTo => "==",
            Operator::NotEqualTo => "!=",
            Operator::GreaterThan => ">",
            Operator::GreaterThanOrEqualTo => ">=",
            Operator::LessThan => "<",
            Operator::LessThanOrEqualTo => "<=",
            Operator::CompulsoryPair => "[Compulsory pair]",
            Operator::ExclusivePair => "[Exclusive pair]",
        }
    }
}

/// Equal up to binary rounding, so `0.1 + 0.2` on one side does not violate
/// `== 0.3` on the other.
fn nearly_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Whether a validation rule holds for two side values. `None` means the
/// rule is skipped (a side without value, for the comparison operators);
/// `Some(false)` is a violation.
pub fn compare(op: Operator, left: Option<f64>, right: Option<f64>) -> Option<bool> {
    let left = left.filter(|x| x.is_finite());
    let right = right.filter(|x| x.is_finite());
    match op {
        Operator::CompulsoryPair => return Some(left.is_some() == right.is_some()),
        Operator::ExclusivePair => return Some(!(left.is_some() && right.is_some())),
        _ => {}
    }
    let (l, r) = (left?, right?);
    let eq = nearly_equal(l, r);
    Some(match op {
        Operator::EqualTo => eq,
        Operator::NotEqualTo => !eq,
        Operator::GreaterThan => l > r && !eq,
        Operator::GreaterThanOrEqualTo => l > r || eq,
        Operator::LessThan => l < r && !eq,
        _ => l < r || eq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::Union;
    use std::collections::HashMap;

    const ALL_CONTEXTS: [ExprContext; 4] = [
        ExprContext::Indicator,
        ExprContext::ValidationRule,
        ExprContext::Predictor,
        ExprContext::Generic,
    ];

    /// Test data keyed by the canonical item text.
    #[derive(Default)]
    struct Src {
        values: HashMap<String, Value>,
        days: Option<f64>,
        samples: Vec<HashMap<String, f64>>,
        ancestors: Vec<String>,
        offsets: HashMap<(String, i32), f64>,
    }

    impl Src {
        fn with(pairs: &[(&str, f64)]) -> Src {
            Src {
                values: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::Number(*v)))
                    .collect(),
                ..Src::default()
            }
        }
    }

    impl ValueSource for Src {
        fn item(&self, item: &Item) -> Option<f64> {
            self.item_value(item).as_number()
        }
        fn item_value(&self, item: &Item) -> Value {
            self.values
                .get(&item.to_string())
                .cloned()
                .unwrap_or(Value::Null)
        }
        fn modified_item(&self, item: &Item, mods: &QueryMods) -> Value {
            self.offsets
                .get(&(item.to_string(), mods.period_offset))
                .map_or(Value::Null, |x| Value::Number(*x))
        }
        fn days(&self) -> Option<f64> {
            self.days
        }
        fn org_unit_ancestor(&self, uids: &[String]) -> bool {
            uids.iter().any(|u| self.ancestors.contains(u))
        }
        fn sample_count(&self) -> usize {
            self.samples.len()
        }
        fn sample_item(&self, sample: usize, item: &Item) -> Value {
            self.samples
                .get(sample)
                .and_then(|m| m.get(&item.to_string()))
                .map_or(Value::Null, |x| Value::Number(*x))
        }
    }

    fn p(text: &str) -> Expr {
        parse(text, ExprContext::Generic).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn pc(text: &str, ctx: ExprContext) -> Expr {
        parse(text, ctx).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn perr(text: &str, ctx: ExprContext) -> ParseError {
        match parse(text, ctx) {
            Ok(e) => panic!("{text} parsed as {e:?}"),
            Err(e) => e,
        }
    }

    fn eval_with(text: &str, ctx: ExprContext, src: &Src, m: MissingValueStrategy) -> Value {
        pc(text, ctx)
            .evaluate(src, m)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn val(text: &str) -> Value {
        eval_with(
            text,
            ExprContext::Generic,
            &Src::default(),
            MissingValueStrategy::NeverSkip,
        )
    }

    fn num(text: &str) -> f64 {
        match val(text) {
            Value::Number(x) => x,
            other => panic!("{text} gave {other:?}"),
        }
    }

    fn bool_of(text: &str) -> bool {
        match val(text) {
            Value::Bool(b) => b,
            other => panic!("{text} gave {other:?}"),
        }
    }

    fn n(x: f64) -> Box<Node> {
        Box::new(Node::Number(x))
    }

    fn bin(op: BinaryOp, l: Box<Node>, r: Box<Node>) -> Box<Node> {
        Box::new(Node::Binary(op, l, r))
    }

    fn de(id: &str) -> Item {
        Item::DataElement {
            element: ElementRef::Element(id.to_string()),
            combo: None,
            attribute_combo: None,
        }
    }

    // -- precedence --------------------------------------------------------

    #[test]
    fn arithmetic_precedence_table() {
        let table: &[(&str, f64)] = &[
            ("1+2*3", 7.0),
            ("(1+2)*3", 9.0),
            ("10-4-3", 3.0),
            ("100/10/5", 2.0),
            ("7%4", 3.0),
            ("2*3%4", 2.0),
            ("-2^2", -4.0),
            ("(-2)^2", 4.0),
            ("2^3^2", 512.0),
            ("(2^3)^2", 64.0),
            ("2^-1", 0.5),
            ("2^-1^2", 0.5),
            ("-3*-3", 9.0),
            ("2*3^2", 18.0),
            ("-2*3", -6.0),
            ("+4-+1", 3.0),
            ("--5", 5.0),
            ("1 - 2 + 3", 2.0),
            (".5 + 1e3 + 1.", 1001.5),
            ("1.5E-1*10", 1.5),
        ];
        for (text, want) in table {
            assert!((num(text) - want).abs() < 1e-12, "{text}");
        }
    }

    #[test]
    fn precedence_shapes() {
        use BinaryOp::*;
        assert_eq!(p("1+2*3").root, *bin(Add, n(1.0), bin(Mul, n(2.0), n(3.0))));
        assert_eq!(
            p("-2^2").root,
            Node::Unary(UnaryOp::Neg, bin(Pow, n(2.0), n(2.0)))
        );
        assert_eq!(p("2^3^2").root, *bin(Pow, n(2.0), bin(Pow, n(3.0), n(2.0))));
        assert_eq!(p("1-2-3").root, *bin(Sub, bin(Sub, n(1.0), n(2.0)), n(3.0)));
        assert_eq!(
            p("1 < 2 == 3 > 4").root,
            *bin(Eq, bin(Lt, n(1.0), n(2.0)), bin(Gt, n(3.0), n(4.0)))
        );
        let t = || Box::new(Node::Bool(true));
        let f = || Box::new(Node::Bool(false));
        assert_eq!(
            p("true || false && false").root,
            *bin(Or, t(), bin(And, f(), f()))
        );
        assert_eq!(p("true or false and false"), p("true || false && false"));
        assert_eq!(
            p("!true == false").root,
            *bin(Eq, Box::new(Node::Unary(UnaryOp::Not, t())), f())
        );
        assert_eq!(p("not true"), p("!true"));
        assert_eq!(
            p("1 + 2 < 4 && 5 != 6").root,
            *bin(
                And,
                bin(Lt, bin(Add, n(1.0), n(2.0)), n(4.0)),
                bin(Ne, n(5.0), n(6.0))
            )
        );
    }

    #[test]
    fn comparisons_and_logic() {
        let table: &[(&str, bool)] = &[
            ("1 < 2", true),
            ("2 <= 2", true),
            ("3 > 4", false),
            ("4 >= 4", true),
            ("1 == 1.0", true),
            ("1 != 1", false),
            ("1 < 2 == true", true),
            ("true || false && false", true),
            ("(true || false) && false", false),
            ("not true or true", true),
            ("!false", true),
            ("'abc' < 'abd'", true),
            ("\"a\" == 'a'", true),
            ("false < true", true),
            ("true == 1", true),
            ("1 and 0", false),
            ("2 or 0", true),
            ("false && null", false),
            ("true || null", true),
        ];
        for (text, want) in table {
            assert_eq!(bool_of(text), *want, "{text}");
        }
        assert_eq!(val("true && null"), Value::Null);
        assert_eq!(val("null == null"), Value::Null);
        assert_eq!(val("1 < null"), Value::Null);
        let e = p("'a' == 1").evaluate(&Src::default(), MissingValueStrategy::NeverSkip);
        assert!(matches!(e, Err(EvalError::Incomparable { .. })), "{e:?}");
        let e = p("'a' + 1").evaluate(&Src::default(), MissingValueStrategy::NeverSkip);
        assert!(matches!(e, Err(EvalError::TypeMismatch { .. })), "{e:?}");
    }

    #[test]
    fn canonical_text_adds_needed_parentheses() {
        let cases = [
            ("(1+2)*3", "(1 + 2) * 3"),
            ("(-2)^2", "(-2) ^ 2"),
            ("-2^2", "-2 ^ 2"),
            ("2^(3^2)", "2 ^ 3 ^ 2"),
            ("(2^3)^2", "(2 ^ 3) ^ 2"),
            ("1-(2-3)", "1 - (2 - 3)"),
            ("not (1 < 2) and 'x' == \"y\"", "!(1 < 2) && \"x\" == \"y\""),
            ("#{a.*.*} + #{b.c.*} + #{d.*.e}", "#{a} + #{b.c} + #{d.*.e}"),
            ("(1).periodOffset(-1)", "(1).periodOffset(-1)"),
        ];
        for (text, want) in cases {
            let e = pc(text, ExprContext::Indicator);
            assert_eq!(e.to_string_canonical(), want);
            assert_eq!(pc(want, ExprContext::Indicator), e);
        }
    }

    // -- functions ---------------------------------------------------------

    #[test]
    fn every_function_checks_arity() {
        use ExprContext::*;
        // (function, context, accepted arg counts, rejected arg counts)
        let table: &[(&str, ExprContext, &[usize], &[usize])] = &[
            ("if", Generic, &[3], &[0, 1, 2, 4]),
            ("isNull", Generic, &[1], &[0, 2]),
            ("isNotNull", Generic, &[1], &[0, 2]),
            ("firstNonNull", Generic, &[1, 2, 5], &[0]),
            ("greatest", Generic, &[1, 3], &[0]),
            ("least", Generic, &[1, 3], &[0]),
            ("log", Generic, &[1, 2], &[0, 3]),
            ("log10", Generic, &[1], &[0, 2]),
            ("removeZeros", Generic, &[1], &[0, 2]),
            ("contains", Generic, &[2, 3], &[0, 1]),
            ("containsItems", Generic, &[2, 3], &[0, 1]),
            ("subExpression", Indicator, &[1], &[0, 2]),
            ("avg", Predictor, &[1], &[0, 2]),
            ("count", Predictor, &[1], &[0, 2]),
            ("max", Predictor, &[1], &[0, 2]),
            ("median", Predictor, &[1], &[0, 2]),
            ("min", Predictor, &[1], &[0, 2]),
            ("percentileCont", Predictor, &[2], &[1, 3]),
            ("stddev", Predictor, &[1], &[0, 2]),
            ("stddevPop", Predictor, &[1], &[0, 2]),
            ("stddevSamp", Predictor, &[1], &[0, 2]),
            ("sum", Predictor, &[1], &[0, 2]),
            ("variance", Predictor, &[1], &[0, 2]),
            ("normDistCum", Predictor, &[1, 2, 3], &[0, 4]),
            ("normDistDen", Predictor, &[1, 2, 3], &[0, 4]),
        ];
        assert_eq!(table.len(), Function::ALL.len());
        for (name, ctx, good, bad) in table {
            let call = |k: usize| format!("{name}({})", vec!["1"; k].join(", "));
            for &k in *good {
                let text = call(k);
                assert!(parse(&text, *ctx).is_ok(), "{text}");
            }
            for &k in *bad {
                let text = call(k);
                let e = perr(&text, *ctx);
                assert_eq!(e.position, 0, "{text}");
                assert!(
                    matches!(&e.kind, ParseErrorKind::Arity { function, found, .. } if function == name && *found == k),
                    "{text}: {e}"
                );
            }
        }
        let e = perr("1 + if(1, 2)", Generic);
        assert_eq!(
            e.to_string(),
            "function `if` takes 3 arguments but was given 2 at position 4"
        );
        assert!(parse("is(1 in 1, 2)", Generic).is_ok());
        assert!(matches!(
            perr("is(1 in)", Generic).kind,
            ParseErrorKind::Arity { .. }
        ));
        assert!(parse("orgUnit.ancestor(a, b)", ValidationRule).is_ok());
        assert!(parse("orgUnit.group()", ValidationRule).is_err());
    }

    #[test]
    fn function_values() {
        assert_eq!(num("if(1 < 2, 10, 20)"), 10.0);
        assert_eq!(num("if(0, 10, 20)"), 20.0);
        assert_eq!(num("if(2, 10, 20)"), 10.0);
        assert_eq!(val("if(null, 1, 2)"), Value::Null);
        // The branch not taken is not evaluated, so its type error is moot.
        assert_eq!(num("if(true, 1, 'x' + 1)"), 1.0);
        assert!(bool_of("isNull(null)"));
        assert!(!bool_of("isNull(0)"));
        assert!(bool_of("isNotNull(1)"));
        assert!(bool_of("isNull(1/0)"));
        assert_eq!(num("firstNonNull(null, removeZeros(0), 3, 4)"), 3.0);
        assert_eq!(val("firstNonNull(null)"), Value::Null);
        assert_eq!(num("greatest(1, 5, -2)"), 5.0);
        assert_eq!(num("least(1, 5, -2)"), -2.0);
        assert_eq!(num("greatest(null, 2)"), 2.0);
        assert!((num("log(100, 10)") - 2.0).abs() < 1e-12);
        assert!((num("log(2.718281828459045)") - 1.0).abs() < 1e-12);
        assert_eq!(val("log(0)"), Value::Null);
        assert_eq!(val("log(-1)"), Value::Null);
        assert_eq!(val("log(8, 1)"), Value::Null);
        assert!((num("log10(1000)") - 3.0).abs() < 1e-12);
        assert_eq!(val("removeZeros(0)"), Value::Null);
        assert_eq!(num("removeZeros(7)"), 7.0);
        assert!(bool_of("contains('hello world', 'lo w', 'hell')"));
        assert!(!bool_of("contains('hello', 'x')"));
        assert!(bool_of("containsItems('a, bb,c', 'bb', 'c')"));
        assert!(!bool_of("containsItems('a,bb,c', 'b')"));
        assert!(bool_of("is(3 in 1, 2, 3)"));
        assert!(!bool_of("is('x' in 'a', 'b')"));
        assert!(!bool_of("is('x' in 1)"));
    }

    #[test]
    fn org_unit_functions_use_the_source() {
        let src = Src {
            ancestors: vec!["OuKenya0001".into()],
            ..Src::default()
        };
        let e = pc(
            "if(orgUnit.ancestor(OuUganda001, OuKenya0001), 1, 2)",
            ExprContext::ValidationRule,
        );
        assert_eq!(
            e.evaluate(&src, MissingValueStrategy::NeverSkip),
            Ok(Value::Number(1.0))
        );
        let e = pc(
            "orgUnit.group(G1) || orgUnit.dataSet(D1) || orgUnit.program(P1)",
            ExprContext::Predictor,
        );
        assert_eq!(
            e.evaluate(&src, MissingValueStrategy::NeverSkip),
            Ok(Value::Bool(false))
        );
    }

    #[test]
    fn predictor_aggregates_use_samples() {
        let mut src = Src::default();
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            src.samples.push(HashMap::from([("#{a}".to_string(), v)]));
        }
        // A sample with no value is left out rather than counted as 0.
        src.samples.push(HashMap::new());
        let ev_in = |src: &Src, t: &str| {
            pc(t, ExprContext::Predictor)
                .evaluate(src, MissingValueStrategy::NeverSkip)
                .unwrap_or_else(|e| panic!("{t}: {e}"))
                .as_number()
                .unwrap_or(f64::NAN)
        };
        let ev = |t: &str| ev_in(&src, t);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert_eq!(ev("sum(#{a})"), 40.0);
        assert_eq!(ev("count(#{a})"), 8.0);
        assert_eq!(ev("avg(#{a})"), 5.0);
        assert_eq!(ev("max(#{a})"), 9.0);
        assert_eq!(ev("min(#{a})"), 2.0);
        assert_eq!(ev("median(#{a})"), 4.5);
        assert_eq!(ev("stddevPop(#{a})"), 2.0);
        assert!(close(ev("variance(#{a})"), 32.0 / 7.0));
        assert!(close(ev("stddev(#{a})"), (32.0f64 / 7.0).sqrt()));
        assert_eq!(ev("stddev(#{a})"), ev("stddevSamp(#{a})"));
        assert_eq!(ev("percentileCont(0.5, #{a})"), 4.5);
        assert_eq!(ev("percentileCont(1, #{a})"), 9.0);
        assert!(close(ev("percentileCont(0.25, #{a})"), 4.0));
        assert!(close(ev("normDistCum(0, 0, 1)"), 0.5));
        assert!(close(ev("normDistCum(1.96, 0, 1)"), 0.975_002_1));
        assert!(close(ev("normDistDen(0, 0, 1)"), 0.398_942_28));
        // Mean and deviation taken from the samples when omitted.
        src.values.insert("#{a}".into(), Value::Number(5.0));
        assert!(close(ev_in(&src, "normDistCum(#{a})"), 0.5));
        assert_eq!(
            pc("sum(#{a})", ExprContext::Predictor)
                .evaluate(&Src::default(), MissingValueStrategy::NeverSkip),
            Ok(Value::Null)
        );
        assert_eq!(
            pc("count(#{a})", ExprContext::Predictor)
                .evaluate(&Src::default(), MissingValueStrategy::NeverSkip),
            Ok(Value::Number(0.0))
        );
        let reqs = pc("sum(#{a}) + #{b}", ExprContext::Predictor).item_requests();
        assert!(reqs[0].sampled && !reqs[1].sampled);
        // Only sampled items: nothing in the evaluated period can be missing.
        assert_eq!(
            pc("avg(#{a})", ExprContext::Predictor)
                .evaluate(&src, MissingValueStrategy::SkipIfAnyValueMissing),
            Ok(Value::Number(5.0))
        );
    }

    // -- items -------------------------------------------------------------

    #[test]
    fn data_item_forms_and_wildcards() {
        let all = Item::DataElement {
            element: ElementRef::Element("deA".into()),
            combo: None,
            attribute_combo: None,
        };
        for t in ["#{deA}", "#{deA.*}", "#{deA.*.*}"] {
            assert_eq!(p(t).root, Node::Item(all.clone()), "{t}");
        }
        let coc = Item::DataElement {
            element: ElementRef::Element("deA".into()),
            combo: Some(ComboRef::Combo("cocB".into())),
            attribute_combo: None,
        };
        assert_eq!(p("#{deA.cocB}").root, Node::Item(coc.clone()));
        assert_eq!(p("#{deA.cocB.*}").root, Node::Item(coc));
        let aoc = Item::DataElement {
            element: ElementRef::Element("deA".into()),
            combo: None,
            attribute_combo: Some("aocC".into()),
        };
        assert_eq!(p("#{deA.*.aocC}").root, Node::Item(aoc.clone()));
        assert_eq!(aoc.to_string(), "#{deA.*.aocC}");
        let exact = p("#{deA.cocB.aocC}");
        assert_eq!(exact.to_string_canonical(), "#{deA.cocB.aocC}");
        let grp = p("#{deGroup:g1.co:opt.aocC}");
        assert_eq!(
            grp.root,
            Node::Item(Item::DataElement {
                element: ElementRef::Group("g1".into()),
                combo: Some(ComboRef::Option("opt".into())),
                attribute_combo: Some("aocC".into()),
            })
        );
        assert_eq!(grp.to_string_canonical(), "#{deGroup:g1.co:opt.aocC}");
        let groups = p("#{deA.coGroup:g1&g2}");
        assert_eq!(
            groups.root,
            Node::Item(Item::DataElement {
                element: ElementRef::Element("deA".into()),
                combo: Some(ComboRef::OptionGroups(vec!["g1".into(), "g2".into()])),
                attribute_combo: None,
            })
        );
        assert_eq!(groups.to_string_canonical(), "#{deA.coGroup:g1&g2}");

        for (bad, pos) in [
            ("#{}", 2),
            ("#{a.b.c.d}", 7),
            ("#{a b}", 3),
            ("#{a..b}", 4),
            ("#{*}", 2),
            ("#{a", 0),
            ("#{deGroup:}", 10),
            ("#{a.coGroup:x&}", 14),
            ("1 + #a", 4),
        ] {
            let e = perr(bad, ExprContext::Generic);
            assert_eq!(e.position, pos, "{bad}: {e}");
        }
    }

    #[test]
    fn other_items() {
        let e = pc(
            "C{pi} + OUG{g} + R{ds.REPORTING_RATE} + R{ds.REPORTING_RATE_ON_TIME} + \
             R{ds.ACTUAL_REPORTS} + R{ds.ACTUAL_REPORTS_ON_TIME} + R{ds.EXPECTED_REPORTS} + \
             N{ind} + D{prg.de} + A{prg.at} + I{pi1} + [days]",
            ExprContext::Indicator,
        );
        let items = e.items();
        assert_eq!(items.len(), 11);
        assert_eq!(items[0], Item::Constant("pi".into()));
        assert_eq!(
            items[6],
            Item::ReportingRate {
                data_set: "ds".into(),
                metric: ReportingMetric::ExpectedReports
            }
        );
        assert_eq!(
            items[8],
            Item::ProgramDataElement {
                program: "prg".into(),
                data_element: "de".into()
            }
        );
        assert_eq!(pc(&e.to_string_canonical(), ExprContext::Indicator), e);
        let err = perr("R{ds.REPORTING}", ExprContext::Generic);
        assert_eq!(err.position, 5);
        assert!(err
            .to_string()
            .contains("unknown reporting rate metric `REPORTING`"));
        assert!(parse("R{ds}", ExprContext::Generic).is_err());
        assert!(parse("D{prg}", ExprContext::Generic).is_err());
        assert!(parse("C{a.b}", ExprContext::Generic).is_err());
        let err = perr("V{x}", ExprContext::Generic);
        assert!(
            err.to_string().contains("unknown item type `V{…}`"),
            "{err}"
        );
        let err = perr("[week]", ExprContext::Generic);
        assert!(
            err.to_string().contains("unknown variable `[week]`"),
            "{err}"
        );
    }

    #[test]
    fn items_are_unique_and_in_order() {
        let e = p("#{b} + C{k} * #{a} - #{b} + isNull(#{c})");
        assert_eq!(
            e.items(),
            vec![de("b"), Item::Constant("k".into()), de("a"), de("c")]
        );
    }

    #[test]
    fn modifiers_reach_the_source() {
        let e = pc(
            "#{a}.periodOffset(-1) + (#{a} + #{b}.periodOffset(1)).periodOffset(-1) + #{a}.yearToDate()",
            ExprContext::Indicator,
        );
        let reqs = e.item_requests();
        let offsets: Vec<(String, i32, bool)> = reqs
            .iter()
            .map(|r| {
                (
                    r.item.to_string(),
                    r.modifiers.period_offset,
                    r.modifiers.year_to_date,
                )
            })
            .collect();
        assert_eq!(
            offsets,
            vec![
                ("#{a}".to_string(), -1, false),
                ("#{b}".to_string(), 0, false),
                ("#{a}".to_string(), 0, true),
            ]
        );
        let mut src = Src::with(&[("#{a}", 100.0), ("#{b}", 3.0)]);
        src.offsets.insert(("#{a}".into(), -1), 7.0);
        // -1 → 7; inner: #{a} at -1 → 7, #{b} at -1+1 = 0 (unmodified) → 3;
        // year-to-date has no data here, so counts as 0.
        assert_eq!(
            e.evaluate(&src, MissingValueStrategy::NeverSkip),
            Ok(Value::Number(17.0))
        );
        let e = pc(
            "#{a}.aggregationType(AVERAGE).maxDate(2024-02-29).minDate(2023-1-5)",
            ExprContext::Indicator,
        );
        let m = &e.item_requests()[0].modifiers;
        assert_eq!(m.aggregation_type.as_deref(), Some("AVERAGE"));
        assert_eq!(m.max_date, Date::new(2024, 2, 29));
        assert_eq!(
            e.to_string_canonical(),
            "#{a}.aggregationType(AVERAGE).maxDate(2024-02-29).minDate(2023-01-05)"
        );
        assert!(parse("#{a}.maxDate(2023-02-29)", ExprContext::Indicator).is_err());
        assert!(parse("#{a}.aggregationType(SOME)", ExprContext::Indicator).is_err());
        assert!(parse("#{a}.periodOffset(x)", ExprContext::Indicator).is_err());
        assert!(parse("#{a}.periodOffset( + 2 )", ExprContext::Indicator).is_ok());
        assert!(parse("#{a}.periodOffset(99999999999)", ExprContext::Indicator).is_err());
        let e = perr("#{a}.frobnicate(1)", ExprContext::Indicator);
        assert_eq!(
            e.kind,
            ParseErrorKind::UnknownFunction(".frobnicate".into())
        );
        assert_eq!(e.position, 4);
    }

    // -- contexts ----------------------------------------------------------

    #[test]
    fn context_rules() {
        use ExprContext::*;
        // (text, contexts where it parses)
        let table: &[(&str, &[ExprContext])] = &[
            (
                "#{a} + C{b} + OUG{c} + R{d.REPORTING_RATE} + [days]",
                &ALL_CONTEXTS,
            ),
            ("D{p.d} + A{p.a} + I{pi}", &ALL_CONTEXTS),
            (
                "if(isNull(#{a}), firstNonNull(#{b}, 0), greatest(1, least(2, 3)))",
                &ALL_CONTEXTS,
            ),
            ("log(1) + log10(1) + removeZeros(1)", &ALL_CONTEXTS),
            (
                "contains('a', 'a') && containsItems('a', 'a') && is(1 in 1)",
                &ALL_CONTEXTS,
            ),
            ("N{ind}", &[Indicator]),
            ("subExpression(#{a})", &[Indicator]),
            ("[periodInYear] + [yearlyPeriodCount]", &[Indicator]),
            ("#{a}.periodOffset(1)", &[Indicator]),
            ("#{a}.yearToDate()", &[Indicator]),
            ("#{a}.aggregationType(SUM)", &[Indicator]),
            ("#{a}.maxDate(2024-01-01)", &[Indicator, Predictor]),
            ("#{a}.minDate(2024-01-01)", &[Indicator, Predictor]),
            ("orgUnit.ancestor(a)", &[ValidationRule, Predictor]),
            ("orgUnit.group(a)", &[ValidationRule, Predictor]),
            ("orgUnit.dataSet(a)", &[ValidationRule, Predictor]),
            ("orgUnit.program(a)", &[ValidationRule, Predictor]),
            (
                "sum(#{a}) + avg(#{a}) + stddev(#{a}) + normDistCum(1)",
                &[Predictor],
            ),
        ];
        for (text, ok_in) in table {
            for ctx in ALL_CONTEXTS {
                let parsed = parse(text, ctx);
                assert_eq!(
                    parsed.is_ok(),
                    ok_in.contains(&ctx),
                    "{text} in {ctx:?}: {parsed:?}"
                );
                if let Err(e) = parsed {
                    assert!(matches!(e.kind, ParseErrorKind::NotAllowed { .. }), "{e}");
                }
            }
        }
        assert_eq!(
            perr("1 + N{abc}", ValidationRule).to_string(),
            "`N{…}` is not allowed in a validation rule; it is only allowed in indicators at position 4"
        );
        assert_eq!(
            perr("orgUnit.ancestor(a)", Indicator).to_string(),
            "function `orgUnit.ancestor` is not allowed in an indicator; it is only allowed in validation rules and predictors at position 0"
        );
        assert_eq!(
            perr("sum(1)", Generic).to_string(),
            "function `sum` is not allowed in a generic expression; it is only allowed in predictors at position 0"
        );
    }

    // -- missing values ----------------------------------------------------

    #[test]
    fn missing_value_strategies() {
        use MissingValueStrategy::*;
        let ctx = ExprContext::ValidationRule;
        let some = Src::with(&[("#{a}", 5.0)]);
        let none = Src::default();
        let all = Src::with(&[("#{a}", 5.0), ("#{b}", 2.0)]);
        let text = "#{a} + #{b}";
        assert_eq!(
            eval_with(text, ctx, &all, SkipIfAnyValueMissing),
            Value::Number(7.0)
        );
        assert_eq!(
            eval_with(text, ctx, &some, SkipIfAnyValueMissing),
            Value::Null
        );
        assert_eq!(
            eval_with(text, ctx, &some, SkipIfAllValuesMissing),
            Value::Number(5.0)
        );
        assert_eq!(
            eval_with(text, ctx, &none, SkipIfAllValuesMissing),
            Value::Null
        );
        assert_eq!(eval_with(text, ctx, &none, NeverSkip), Value::Number(0.0));
        assert_eq!(eval_with(text, ctx, &some, NeverSkip), Value::Number(5.0));
        // No data items: never skipped. Constants are not data.
        let k = Src::with(&[("C{k}", 3.0)]);
        assert_eq!(
            eval_with("C{k} * 2", ctx, &k, SkipIfAnyValueMissing),
            Value::Number(6.0)
        );
        assert_eq!(
            eval_with("1 + 1", ctx, &none, SkipIfAllValuesMissing),
            Value::Number(2.0)
        );
        // An unknown constant is a mistake, not missing data.
        assert_eq!(
            p("C{nope}").evaluate(&none, NeverSkip),
            Err(EvalError::UnknownConstant("nope".into()))
        );
        // isNull sees the raw null even though arithmetic would see 0.
        assert_eq!(
            eval_with(
                "isNull(#{b}) && #{a} == 5",
                ctx,
                &some,
                SkipIfAllValuesMissing
            ),
            Value::Bool(true)
        );
        // …but when it is the only item, skip-if-all still skips.
        assert_eq!(
            eval_with("isNull(#{b})", ctx, &some, SkipIfAllValuesMissing),
            Value::Null
        );
        assert_eq!(
            eval_with("isNull(#{b})", ctx, &some, NeverSkip),
            Value::Bool(true)
        );
        assert_eq!(
            eval_with("if(isNull(#{b}), -1, #{b}) + #{a}", ctx, &some, NeverSkip),
            Value::Number(4.0)
        );
        assert_eq!(
            eval_with("#{b} == 0", ctx, &some, NeverSkip),
            Value::Bool(true)
        );
        // A missing item in a text context counts as "", in a boolean one as false.
        let mut txt = Src::default();
        txt.values.insert("#{t}".into(), Value::Text("a,b".into()));
        assert_eq!(
            eval_with("#{u} == ''", ctx, &txt, NeverSkip),
            Value::Bool(true)
        );
        assert_eq!(
            eval_with("containsItems(#{t}, 'b')", ctx, &txt, NeverSkip),
            Value::Bool(true)
        );
        assert_eq!(eval_with("!#{u}", ctx, &txt, NeverSkip), Value::Bool(true));
        assert_eq!(eval_with("#{u}", ctx, &txt, NeverSkip), Value::Number(0.0));
        assert_eq!(MissingValueStrategy::default(), SkipIfAllValuesMissing);
    }

    #[test]
    fn division_by_zero_has_no_value() {
        use MissingValueStrategy::*;
        assert_eq!(val("1/0"), Value::Null);
        assert_eq!(val("0/0"), Value::Null);
        assert_eq!(val("5%0"), Value::Null);
        assert_eq!(val("1 + 1/0"), Value::Null);
        assert_eq!(val("10^400"), Value::Null);
        let src = Src::with(&[("#{a}", 3.0), ("#{b}", 0.0)]);
        assert_eq!(
            eval_with("#{a}/#{b}", ExprContext::Indicator, &src, NeverSkip),
            Value::Null
        );
        // Missing denominator counts as 0 under SkipIfAll: still no value.
        let src = Src::with(&[("#{a}", 3.0)]);
        assert_eq!(
            eval_with(
                "#{a}/#{b}",
                ExprContext::Indicator,
                &src,
                SkipIfAllValuesMissing
            ),
            Value::Null
        );
        assert_eq!(num("-0 * 1"), 0.0);
        assert!(num("-0 * 1").is_sign_positive());
    }

    // -- describe ----------------------------------------------------------

    #[test]
    fn describe_replaces_known_items() {
        let e = pc("(#{abc.def} + C{k}) / #{zzz} * 100", ExprContext::Indicator);
        let names = |item: &Item| match item.to_string().as_str() {
            "#{abc.def}" => Some("ANC 1st visit Fixed".to_string()),
            "C{k}" => Some("Population factor".to_string()),
            _ => None,
        };
        assert_eq!(
            e.describe(&names),
            "(ANC 1st visit Fixed + Population factor) / #{zzz} * 100"
        );
        assert_eq!(
            pc("#{abc.def}", ExprContext::Indicator).describe(&names),
            "ANC 1st visit Fixed"
        );
    }

    // -- lexical details and errors ----------------------------------------

    #[test]
    fn literals() {
        assert_eq!(p("'it\\'s'").root, Node::Text("it's".into()));
        assert_eq!(
            p("\"a\\\"b\\\\c\\n\\u00e9\"").root,
            Node::Text("a\"b\\c\né".into())
        );
        assert_eq!(p("'\"'").to_string_canonical(), "\"\\\"\"");
        assert_eq!(p("null").root, Node::Null);
        assert_eq!(p(" true ").root, Node::Bool(true));
        assert_eq!(p("0.25").root, Node::Number(0.25));
        assert_eq!(p("1e3").root, Node::Number(1000.0));
        assert_eq!(p("1.e3").root, Node::Number(1000.0));
        assert_eq!(p("2.E-1").root, Node::Number(0.2));
        assert_eq!(p("7.").root, Node::Number(7.0));
        assert_eq!(p("1e-7").to_string_canonical(), "1e-7");
        assert_eq!(p("100000000000000000000").to_string_canonical(), "1e20");
        for (bad, pos, msg) in [
            ("012", 0, "leading zeros"),
            ("1e", 1, "exponent"),
            ("1e999", 0, "too large"),
            ("'abc", 0, "not closed"),
            ("'a\nb'", 0, "not closed"),
            ("'\\q'", 1, "unknown escape"),
            ("'\\u12'", 1, "four hex digits"),
            ("1 = 1", 2, "`==`"),
            ("1 & 1", 2, "`&&`"),
            ("1 | 1", 2, "`||`"),
            ("1 $ 2", 2, "unexpected character `$`"),
        ] {
            let e = perr(bad, ExprContext::Generic);
            assert_eq!(e.position, pos, "{bad}: {e}");
            assert!(e.to_string().contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn error_positions_and_messages() {
        let g = ExprContext::Generic;
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "the expression is empty at position 0"),
            ("   ", 0, "the expression is empty at position 0"),
            ("(1 + 2", 6, "expected `)` to close the `(` at position 0 but the expression ended at position 6"),
            ("(1 + 2 3", 7, "expected `)` to close the `(` at position 0 but found `3` at position 7"),
            ("1 + sumx(2)", 4, "unknown function `sumx` at position 4"),
            ("1 + foo", 4, "unknown word `foo` at position 4"),
            ("if (1, 2, 3)", 0, "function `if` must be followed immediately by `(` at position 0"),
            ("notisNull(1)", 0, "unknown function `notisNull` at position 0"),
            ("1 +", 3, "expected a value but the expression ended at position 3"),
            ("1 + * 2", 4, "expected a value but found `*` at position 4"),
            ("1 2", 2, "expected an operator or the end of the expression but found `2` at position 2"),
            ("1)", 1, "this `)` has no matching `(` at position 1"),
            ("greatest(1 2)", 11, "expected `,` or `)` but found `2` at position 11"),
            ("is(1, 2)", 4, "expected `in` but found `,` at position 4"),
            ("1 and", 5, "expected a value but the expression ended at position 5"),
        ];
        for (text, pos, msg) in cases {
            let e = perr(text, g);
            assert_eq!(e.position, *pos, "{text}: {e}");
            assert_eq!(e.to_string(), *msg, "{text}");
        }
        assert!(parse("not isNull(1)", g).is_ok());
        // Positions count characters, not bytes.
        assert_eq!(perr("'é' + sumx(1)", g).position, 6);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(
            perr(&deep, ExprContext::Generic).kind,
            ParseErrorKind::TooDeep
        );
        let long = vec!["1"; 10_000].join("+");
        assert_eq!(
            perr(&long, ExprContext::Generic).kind,
            ParseErrorKind::TooDeep
        );
        let neg = format!("{}1", "-".repeat(10_000));
        assert_eq!(
            perr(&neg, ExprContext::Generic).kind,
            ParseErrorKind::TooDeep
        );
        let ok = vec!["1"; 150].join("+");
        assert_eq!(num(&ok), 150.0);
    }

    // -- validation rule operators -----------------------------------------

    #[test]
    fn operators_compare() {
        use Operator::*;
        // (operator, left, right, expected)
        type Case = (Operator, Option<f64>, Option<f64>, Option<bool>);
        let cases: &[Case] = &[
            (EqualTo, Some(1.0), Some(1.0), Some(true)),
            (EqualTo, Some(0.1 + 0.2), Some(0.3), Some(true)),
            (EqualTo, Some(1.0), Some(2.0), Some(false)),
            (NotEqualTo, Some(1.0), Some(2.0), Some(true)),
            (GreaterThan, Some(2.0), Some(1.0), Some(true)),
            (GreaterThan, Some(1.0), Some(1.0), Some(false)),
            (GreaterThanOrEqualTo, Some(1.0), Some(1.0), Some(true)),
            (LessThan, Some(1.0), Some(2.0), Some(true)),
            (LessThanOrEqualTo, Some(3.0), Some(2.0), Some(false)),
            (LessThan, None, Some(2.0), None),
            (EqualTo, Some(1.0), None, None),
            (CompulsoryPair, Some(1.0), Some(2.0), Some(true)),
            (CompulsoryPair, None, None, Some(true)),
            (CompulsoryPair, Some(1.0), None, Some(false)),
            (CompulsoryPair, None, Some(1.0), Some(false)),
            (ExclusivePair, Some(1.0), Some(2.0), Some(false)),
            (ExclusivePair, Some(1.0), None, Some(true)),
            (ExclusivePair, None, None, Some(true)),
        ];
        for (op, l, r, want) in cases {
            assert_eq!(compare(*op, *l, *r), *want, "{op:?} {l:?} {r:?}");
        }
    }

    #[test]
    fn serde_names() {
        let names = [
            (Operator::EqualTo, "equal_to"),
            (Operator::NotEqualTo, "not_equal_to"),
            (Operator::GreaterThan, "greater_than"),
            (Operator::GreaterThanOrEqualTo, "greater_than_or_equal_to"),
            (Operator::LessThan, "less_than"),
            (Operator::LessThanOrEqualTo, "less_than_or_equal_to"),
            (Operator::CompulsoryPair, "compulsory_pair"),
            (Operator::ExclusivePair, "exclusive_pair"),
        ];
        for (op, name) in names {
            let token = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name);
            assert_eq!(Operator::deserialize(token), Ok(op));
        }
        let token = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(
            "SKIP_IF_ANY_VALUE_MISSING",
        );
        assert_eq!(
            MissingValueStrategy::deserialize(token),
            Ok(MissingValueStrategy::SkipIfAnyValueMissing)
        );
    }

    // -- properties --------------------------------------------------------

    fn arb_id() -> impl Strategy<Value = String> {
        "[a-zA-Z][a-zA-Z0-9_]{0,10}"
    }

    fn arb_item(ctx: ExprContext) -> BoxedStrategy<Item> {
        let combo = prop_oneof![
            Just(None),
            arb_id().prop_map(|s| Some(ComboRef::Combo(s))),
            arb_id().prop_map(|s| Some(ComboRef::Option(s))),
            prop::collection::vec(arb_id(), 1..3).prop_map(|v| Some(ComboRef::OptionGroups(v))),
        ];
        let element = prop_oneof![
            arb_id().prop_map(ElementRef::Element),
            arb_id().prop_map(ElementRef::Group),
        ];
        let mut options: Vec<BoxedStrategy<Item>> = vec![
            (element, combo, proptest::option::of(arb_id()))
                .prop_map(|(element, combo, attribute_combo)| Item::DataElement {
                    element,
                    combo,
                    attribute_combo,
                })
                .boxed(),
            arb_id().prop_map(Item::Constant).boxed(),
            arb_id().prop_map(Item::OrgUnitGroupCount).boxed(),
            (
                arb_id(),
                prop::sample::select(ReportingMetric::ALL.to_vec()),
            )
                .prop_map(|(data_set, metric)| Item::ReportingRate { data_set, metric })
                .boxed(),
            (arb_id(), arb_id())
                .prop_map(|(program, data_element)| Item::ProgramDataElement {
                    program,
                    data_element,
                })
                .boxed(),
            (arb_id(), arb_id())
                .prop_map(|(program, attribute)| Item::ProgramAttribute { program, attribute })
                .boxed(),
            arb_id().prop_map(Item::ProgramIndicator).boxed(),
        ];
        if ctx == ExprContext::Indicator {
            options.push(arb_id().prop_map(Item::Indicator).boxed());
        }
        Union::new(options).boxed()
    }

    fn arb_number() -> impl Strategy<Value = f64> {
        use proptest::num::f64::{NORMAL, POSITIVE, SUBNORMAL, ZERO};
        prop_oneof![
            (0u32..1000).prop_map(f64::from),
            0.0f64..1e6,
            POSITIVE | NORMAL | SUBNORMAL | ZERO,
        ]
    }

    fn arb_date() -> impl Strategy<Value = Date> {
        (1000u16..9999, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| Date {
            year: y,
            month: m,
            day: d,
        })
    }

    fn arb_modifier(ctx: ExprContext) -> Option<BoxedStrategy<Modifier>> {
        let mut options: Vec<BoxedStrategy<Modifier>> = Vec::new();
        if ctx == ExprContext::Indicator {
            options.push(
                prop::sample::select(AGGREGATION_TYPES.to_vec())
                    .prop_map(|t| Modifier::AggregationType(t.to_string()))
                    .boxed(),
            );
            options.push(any::<i32>().prop_map(Modifier::PeriodOffset).boxed());
            options.push(Just(Modifier::YearToDate).boxed());
        }
        if matches!(ctx, ExprContext::Indicator | ExprContext::Predictor) {
            options.push(arb_date().prop_map(Modifier::MaxDate).boxed());
            options.push(arb_date().prop_map(Modifier::MinDate).boxed());
        }
        (!options.is_empty()).then(|| Union::new(options).boxed())
    }

    fn arb_leaf(ctx: ExprContext) -> BoxedStrategy<Node> {
        let mut options: Vec<BoxedStrategy<Node>> = vec![
            arb_number().prop_map(Node::Number).boxed(),
            any::<String>().prop_map(Node::Text).boxed(),
            any::<bool>().prop_map(Node::Bool).boxed(),
            Just(Node::Null).boxed(),
            arb_item(ctx).prop_map(Node::Item).boxed(),
            Just(Node::Period(PeriodVar::Days)).boxed(),
        ];
        if ctx == ExprContext::Indicator {
            options.push(Just(Node::Period(PeriodVar::PeriodInYear)).boxed());
            options.push(Just(Node::Period(PeriodVar::YearlyPeriodCount)).boxed());
        }
        if matches!(ctx, ExprContext::ValidationRule | ExprContext::Predictor) {
            options.push(
                (
                    prop::sample::select(OrgUnitTest::ALL.to_vec()),
                    prop::collection::vec("[a-zA-Z0-9_-]{1,11}", 1..3),
                )
                    .prop_map(|(t, ids)| Node::OrgUnit(t, ids))
                    .boxed(),
            );
        }
        Union::new(options).boxed()
    }

    fn arb_node(ctx: ExprContext) -> BoxedStrategy<Node> {
        let functions: Vec<Function> = Function::ALL
            .into_iter()
            .filter(|f| f.allowed().permits(ctx))
            .collect();
        arb_leaf(ctx)
            .prop_recursive(5, 48, 4, move |inner| {
                let mut options: Vec<BoxedStrategy<Node>> = vec![
                    (
                        prop::sample::select(vec![UnaryOp::Neg, UnaryOp::Plus, UnaryOp::Not]),
                        inner.clone(),
                    )
                        .prop_map(|(op, x)| Node::Unary(op, Box::new(x)))
                        .boxed(),
                    (
                        prop::sample::select(vec![
                            BinaryOp::Pow,
                            BinaryOp::Mul,
                            BinaryOp::Div,
                            BinaryOp::Mod,
                            BinaryOp::Add,
                            BinaryOp::Sub,
                            BinaryOp::Lt,
                            BinaryOp::Gt,
                            BinaryOp::Le,
                            BinaryOp::Ge,
                            BinaryOp::Eq,
                            BinaryOp::Ne,
                            BinaryOp::And,
                            BinaryOp::Or,
                        ]),
                        inner.clone(),
                        inner.clone(),
                    )
                        .prop_map(|(op, l, r)| Node::Binary(op, Box::new(l), Box::new(r)))
                        .boxed(),
                    (inner.clone(), prop::collection::vec(inner.clone(), 1..3))
                        .prop_map(|(v, o)| Node::Is(Box::new(v), o))
                        .boxed(),
                ];
                let inner2 = inner.clone();
                options.push(
                    prop::sample::select(functions.clone())
                        .prop_flat_map(move |f| {
                            let (min, max) = f.arity();
                            let max = max.unwrap_or(min + 2);
                            prop::collection::vec(inner2.clone(), min..=max)
                                .prop_map(move |args| Node::Call(f, args))
                        })
                        .boxed(),
                );
                if let Some(m) = arb_modifier(ctx) {
                    options.push(
                        (inner.clone(), m)
                            .prop_map(|(x, m)| Node::Modified(Box::new(x), m))
                            .boxed(),
                    );
                }
                Union::new(options)
            })
            .boxed()
    }

    fn arb_ctx_node() -> impl Strategy<Value = (ExprContext, Node)> {
        prop::sample::select(ALL_CONTEXTS.to_vec()).prop_flat_map(|ctx| (Just(ctx), arb_node(ctx)))
    }

    /// Arithmetic-only trees: evaluation must give a number or no value,
    /// never an error.
    fn arb_numeric() -> BoxedStrategy<Node> {
        let leaf = prop_oneof![
            (0u32..20).prop_map(|x| Node::Number(f64::from(x))),
            arb_number().prop_map(Node::Number),
            prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(|s| Node::Item(de(s))),
            Just(Node::Null),
        ];
        leaf.prop_recursive(6, 64, 4, |inner| {
            prop_oneof![
                (
                    prop::sample::select(vec![
                        BinaryOp::Pow,
                        BinaryOp::Mul,
                        BinaryOp::Div,
                        BinaryOp::Mod,
                        BinaryOp::Add,
                        BinaryOp::Sub,
                    ]),
                    inner.clone(),
                    inner.clone(),
                )
                    .prop_map(|(op, l, r)| Node::Binary(
                        op,
                        Box::new(l),
                        Box::new(r)
                    )),
                (
                    prop::sample::select(vec![UnaryOp::Neg, UnaryOp::Plus]),
                    inner.clone()
                )
                    .prop_map(|(op, x)| Node::Unary(op, Box::new(x))),
                (
                    prop::sample::select(vec![
                        Function::Greatest,
                        Function::Least,
                        Function::FirstNonNull,
                        Function::Log,
                        Function::Log10,
                        Function::RemoveZeros,
                    ]),
                    prop::collection::vec(inner.clone(), 1..3),
                )
                    .prop_map(|(f, mut args)| {
                        if f.arity().1 == Some(1) {
                            args.truncate(1);
                        }
                        Node::Call(f, args)
                    }),
                (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| {
                    Node::Call(
                        Function::If,
                        vec![
                            Node::Binary(BinaryOp::Gt, Box::new(c), Box::new(Node::Number(1.0))),
                            a,
                            b,
                        ],
                    )
                }),
            ]
        })
        .boxed()
    }

    /// Source whose answers are drawn from a seed: some items missing, some
    /// zero, some large.
    struct Seeded {
        seed: u64,
        samples: usize,
    }

    impl Seeded {
        fn pick(&self, key: &str, salt: u64) -> Option<f64> {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (key, self.seed, salt).hash(&mut h);
            let x = h.finish();
            match x % 5 {
                0 => None,
                1 => Some(0.0),
                2 => Some(1e300),
                _ => Some((x % 2001) as f64 - 1000.0),
            }
        }
    }

    impl ValueSource for Seeded {
        fn item(&self, item: &Item) -> Option<f64> {
            self.pick(&item.to_string(), 0)
        }
        fn modified_item(&self, item: &Item, mods: &QueryMods) -> Value {
            self.pick(&item.to_string(), mods.period_offset as u64 + 7)
                .map_or(Value::Null, Value::Number)
        }
        fn days(&self) -> Option<f64> {
            Some(31.0)
        }
        fn sample_count(&self) -> usize {
            self.samples
        }
        fn sample_item(&self, sample: usize, item: &Item) -> Value {
            self.pick(&item.to_string(), sample as u64 + 1)
                .map_or(Value::Null, Value::Number)
        }
    }

    const STRATEGIES: [MissingValueStrategy; 3] = [
        MissingValueStrategy::SkipIfAnyValueMissing,
        MissingValueStrategy::SkipIfAllValuesMissing,
        MissingValueStrategy::NeverSkip,
    ];

    proptest! {
        #[test]
        fn parse_never_panics_on_any_text(s in any::<String>()) {
            for ctx in ALL_CONTEXTS {
                if let Err(e) = parse(&s, ctx) {
                    prop_assert!(e.position <= s.chars().count(), "{}", e);
                }
            }
        }

        #[test]
        fn parse_never_panics_on_damaged_expressions(
            (ctx, node) in arb_ctx_node(),
            cut in any::<prop::sample::Index>(),
            junk in prop::sample::select(vec!["", "(", ")", ",", "}", "{", "'", ".", "#{", "in", "--"]),
        ) {
            // Valid text cut short, or with a stray token spliced in, reaches
            // error paths that random strings rarely do.
            let text: Vec<char> = Expr::from(node).to_string_canonical().chars().collect();
            let at = cut.index(text.len() + 1);
            let damaged: String = text[..at].iter().copied().chain(junk.chars()).collect();
            let spliced: String = text[..at]
                .iter()
                .copied()
                .chain(junk.chars())
                .chain(text[at..].iter().copied())
                .collect();
            for t in [damaged, spliced] {
                if let Err(e) = parse(&t, ctx) {
                    prop_assert!(e.position <= t.chars().count(), "{}", e);
                }
            }
        }

        #[test]
        fn parse_never_panics_on_expression_like_text(
            s in "[#{}()\\[\\]a-zA-Z0-9.,*+\\-/%^!<>=&|'\"\\\\: _]{0,60}"
        ) {
            for ctx in ALL_CONTEXTS {
                if let Ok(e) = parse(&s, ctx) {
                    // Whatever parses must print to text that parses back.
                    prop_assert_eq!(parse(&e.to_string_canonical(), ctx), Ok(e));
                }
            }
        }

        #[test]
        fn canonical_text_round_trips((ctx, node) in arb_ctx_node()) {
            let e = Expr::from(node);
            let text = e.to_string_canonical();
            prop_assert_eq!(parse(&text, ctx), Ok(e), "text: {}", text);
        }

        #[test]
        fn evaluation_never_panics((ctx, node) in arb_ctx_node(), seed in any::<u64>()) {
            let e = Expr::from(node);
            let src = Seeded { seed, samples: 3 };
            for m in STRATEGIES {
                let _ = e.evaluate(&src, m);
            }
            let _ = ctx;
        }

        #[test]
        fn numeric_evaluation_gives_a_number_or_nothing(node in arb_numeric(), seed in any::<u64>()) {
            let e = Expr::from(node);
            let src = Seeded { seed, samples: 0 };
            for m in STRATEGIES {
                match e.evaluate(&src, m) {
                    Ok(Value::Number(x)) => prop_assert!(x.is_finite()),
                    Ok(Value::Null) => {}
                    other => prop_assert!(false, "{} gave {:?}", e, other),
                }
            }
        }
    }
}
