//! Deterministic demo country ("Republic of Kuruma").
//!
//! `generate` builds one DHIS2 metadata import payload (the body of `POST /api/metadata`) plus the
//! list of demo logins; aggregate data values, data set completions and malaria case events are
//! produced lazily by the `for_each_*` methods so that a 15,000-facility country never has its
//! millions of values in memory at once.
//!
//! Determinism: the same `DemoOptions` give byte-identical output. Every random draw comes from a
//! ChaCha8 stream whose key is derived (SHA-256) from the seed and a domain label, and whose
//! stream number is derived from what is being generated (object kind and index, or facility ×
//! report slot). That keeps one object's UID or one report's values independent of how many
//! other objects were generated before it, and lets reports be produced in any order. The data
//! path only uses IEEE-exact float operations (+ − × ÷ √, rounding) so results do not depend on a
//! platform's libm. No hash-map iteration order reaches the output.

use std::collections::HashSet;
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::{Date, Duration, Month, OffsetDateTime};

/// Built-in DHIS2 default category option (same UID in every database).
pub const DEFAULT_CATEGORY_OPTION: &str = "xYerKDKCefk";
/// Built-in DHIS2 default category.
pub const DEFAULT_CATEGORY: &str = "GLevLNI9wkl";
/// Built-in DHIS2 default category combo.
pub const DEFAULT_CATEGORY_COMBO: &str = "bjDvmb4bfuf";
/// Built-in DHIS2 default category option combo; also the attribute option combo of all demo data.
pub const DEFAULT_CATEGORY_OPTION_COMBO: &str = "HllvX50cXC0";

const DEFAULT_UIDS: [&str; 4] = [
    DEFAULT_CATEGORY_OPTION,
    DEFAULT_CATEGORY,
    DEFAULT_CATEGORY_COMBO,
    DEFAULT_CATEGORY_OPTION_COMBO,
];

const COUNTRY_NAME: &str = "Republic of Kuruma";
const COUNTRY_SHORT: &str = "Kuruma";
const COUNTRY_CODE: &str = "KU";
const ADMIN_USERNAME: &str = "admin";
const OPEN_SINCE: (i32, u8, u8) = (1990, 1, 1);
const MONTHS_OF_DATA: usize = 24;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Number of health facilities (default 1000; tested up to 15,000; at most 99,999 because
    /// facility codes have five digits).
    pub facilities: usize,
    /// Last month with data, `(year, month 1-12)`; the 24 months ending there carry data.
    pub end_period: (i32, u8),
    /// Same seed, same country: names, UIDs and data are all derived from it.
    pub seed: u64,
}

impl Default for DemoOptions {
    /// A fixed end period, because a default taken from the clock would break reproducibility;
    /// servers normally use [`DemoOptions::ending_before`] with today's date.
    fn default() -> Self {
        DemoOptions {
            facilities: 1000,
            end_period: (2025, 12),
            seed: 20_240_101,
        }
    }
}

impl DemoOptions {
    /// Sets `end_period` to the month before `today`, so the data stops at the last complete month.
    pub fn ending_before(mut self, today: Date) -> Self {
        let (y, m) = (today.year(), today.month() as u8);
        self.end_period = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        self
    }
}

/// The generated country: metadata payload, logins, and lazily generated data.
#[derive(Clone)]
pub struct DemoCountry {
    /// One DHIS2 metadata import payload.
    pub metadata: Value,
    /// All demo users, to be shown to whoever starts the demo.
    pub logins: Vec<DemoLogin>,
    state: State,
}

/// A demo account, for showing to whoever starts the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoLogin {
    pub username: String,
    pub password: String,
    /// User role name.
    pub role: String,
    /// Name of the user's data capture org unit.
    pub org_unit: String,
    /// Health workers and facility reporters only, in E.164 form from the UK's range reserved
    /// for drama (+44 7700 900xxx), so an SMS gateway can never reach a real subscriber.
    pub phone_number: Option<String>,
}

/// One aggregate data value as it would arrive through `/api/dataValueSets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoDataValue {
    pub data_element: String,
    /// ISO period, e.g. `202403` or `2024`.
    pub period: String,
    pub org_unit: String,
    pub category_option_combo: String,
    pub attribute_option_combo: String,
    pub value: String,
    pub stored_by: String,
    pub created: OffsetDateTime,
    pub comment: Option<String>,
}

/// One complete data set registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCompletion {
    pub data_set: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: String,
    pub completed_by: String,
    pub completed_at: OffsetDateTime,
}

/// One event of the malaria case investigation program (no registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoEvent {
    pub uid: String,
    pub program: String,
    pub program_stage: String,
    pub org_unit: String,
    pub occurred_at: Date,
    pub stored_by: String,
    pub created: OffsetDateTime,
    /// `(data element uid, value)` for every element of the program stage.
    pub values: Vec<(String, String)>,
}

/// Builds the demo country. Panics if `end_period.1` is not 1–12 or `facilities` exceeds 99,999.
pub fn generate(options: &DemoOptions) -> DemoCountry {
    Builder::new(options).build()
}

impl DemoCountry {
    /// Calls `f` for each aggregate data value, in a deterministic order (periods
    /// chronologically; a yearly period before the months it contains; then data set, facility,
    /// data element and category option combo), without materialising them all.
    pub fn for_each_data_value(&self, mut f: impl FnMut(DemoDataValue)) {
        self.state.walk_values(&mut f);
    }

    /// Calls `f` for each data set registration (one per reported facility × data set × period),
    /// in the same order as the values.
    pub fn for_each_completion(&self, mut f: impl FnMut(DemoCompletion)) {
        self.state.walk_completions(&mut f);
    }

    /// Calls `f` for each malaria case investigation event, by month, facility, then occurrence.
    pub fn for_each_event(&self, mut f: impl FnMut(DemoEvent)) {
        self.state.walk_events(&mut f);
    }
}

impl fmt::Debug for DemoCountry {
    // The payload can be megabytes; a summary is what a log line needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoCountry")
            .field("facilities", &self.state.facilities.len())
            .field("logins", &self.logins.len())
            .field(
                "first_month",
                &self.state.months.first().map(|p| p.iso.clone()),
            )
            .field(
                "last_month",
                &self.state.months.last().map(|p| p.iso.clone()),
            )
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Static model: category model, data elements, option sets, data sets
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combo {
    Default,
    AgeSex,
    Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Aggregate,
    Tracker,
}

struct DeSpec {
    name: &'static str,
    short: &'static str,
    code: &'static str,
    form: &'static str,
    value_type: &'static str,
    aggregation: &'static str,
    zero_significant: bool,
    combo: Combo,
    option_set: Option<usize>,
    domain: Domain,
}

/// Indexes into `DE_SPECS`.
mod de {
    pub const MAL_TESTED: usize = 0;
    pub const MAL_CONFIRMED: usize = 1;
    pub const MAL_TREATED: usize = 2;
    pub const MAL_DEATHS: usize = 3;
    pub const MAL_LLIN: usize = 4;
    pub const MAL_REMARKS: usize = 5;
    pub const MAL_RDT_STOCK: usize = 6;
    pub const EPI_BCG: usize = 7;
    pub const EPI_PENTA1: usize = 8;
    pub const EPI_PENTA3: usize = 9;
    pub const EPI_MEASLES1: usize = 10;
    pub const EPI_FULLY: usize = 11;
    pub const ANC_1: usize = 12;
    pub const ANC_4: usize = 13;
    pub const ANC_IPTP2: usize = 14;
    pub const ANC_HIV: usize = 15;
    pub const POP_TOTAL: usize = 16;
    pub const POP_PREGNANCIES: usize = 17;
    pub const POP_INFANTS: usize = 18;
    pub const EV_AGE: usize = 19;
    pub const EV_SEX: usize = 20;
    pub const EV_RESULT: usize = 21;
    pub const EV_TREATED: usize = 22;
    pub const EV_VILLAGE: usize = 23;
}

const fn count(
    name: &'static str,
    short: &'static str,
    code: &'static str,
    form: &'static str,
    zero_significant: bool,
    combo: Combo,
) -> DeSpec {
    DeSpec {
        name,
        short,
        code,
        form,
        value_type: "INTEGER_ZERO_OR_POSITIVE",
        aggregation: "SUM",
        zero_significant,
        combo,
        option_set: None,
        domain: Domain::Aggregate,
    }
}

const fn population(
    name: &'static str,
    short: &'static str,
    code: &'static str,
    form: &'static str,
) -> DeSpec {
    DeSpec {
        name,
        short,
        code,
        form,
        value_type: "INTEGER_ZERO_OR_POSITIVE",
        aggregation: "AVERAGE_SUM_ORG_UNIT",
        zero_significant: false,
        combo: Combo::Default,
        option_set: None,
        domain: Domain::Aggregate,
    }
}

#[allow(clippy::too_many_arguments)]
const fn other(
    name: &'static str,
    short: &'static str,
    code: &'static str,
    form: &'static str,
    value_type: &'static str,
    aggregation: &'static str,
    zero_significant: bool,
    option_set: Option<usize>,
    domain: Domain,
) -> DeSpec {
    DeSpec {
        name,
        short,
        code,
        form,
        value_type,
        aggregation,
        zero_significant,
        combo: Combo::Default,
        option_set,
        domain,
    }
}

// Zero is significant only where a zero says something a blank does not: "tested nobody" and
// "found no positives" feed the positivity rate; a month without deaths or doses is just blank.
const DE_SPECS: [DeSpec; 24] = [
    count(
        "Malaria suspected cases tested",
        "Malaria tested",
        "MAL_TESTED",
        "Suspected cases tested (RDT or microscopy)",
        true,
        Combo::AgeSex,
    ),
    count(
        "Malaria confirmed cases (positive)",
        "Malaria confirmed",
        "MAL_CONFIRMED",
        "Confirmed cases (positive test)",
        true,
        Combo::AgeSex,
    ),
    count(
        "Malaria cases treated with ACT",
        "Malaria treated with ACT",
        "MAL_TREATED_ACT",
        "Confirmed cases treated with ACT",
        false,
        Combo::AgeSex,
    ),
    count(
        "Malaria deaths",
        "Malaria deaths",
        "MAL_DEATHS",
        "Malaria deaths",
        false,
        Combo::Default,
    ),
    count(
        "LLINs distributed",
        "LLINs distributed",
        "MAL_LLIN",
        "Long-lasting insecticidal nets distributed",
        false,
        Combo::Default,
    ),
    other(
        "Malaria stock-out remarks",
        "Malaria stock-out remarks",
        "MAL_STOCK_REMARKS",
        "Remarks on stock-outs",
        "LONG_TEXT",
        "NONE",
        false,
        None,
        Domain::Aggregate,
    ),
    other(
        "RDT stock status",
        "RDT stock status",
        "MAL_RDT_STOCK",
        "RDT stock status at month end",
        "TEXT",
        "NONE",
        false,
        Some(os::STOCK),
        Domain::Aggregate,
    ),
    count(
        "BCG doses given",
        "BCG doses",
        "EPI_BCG",
        "BCG",
        false,
        Combo::Location,
    ),
    count(
        "Penta 1 doses given",
        "Penta 1 doses",
        "EPI_PENTA1",
        "Penta 1",
        false,
        Combo::Location,
    ),
    count(
        "Penta 3 doses given",
        "Penta 3 doses",
        "EPI_PENTA3",
        "Penta 3",
        false,
        Combo::Location,
    ),
    count(
        "Measles 1 doses given",
        "Measles 1 doses",
        "EPI_MEASLES1",
        "Measles 1",
        false,
        Combo::Location,
    ),
    count(
        "Children under 1 fully immunized",
        "Fully immunized under 1",
        "EPI_FULLY_IMMUNIZED",
        "Children under 1 fully immunized",
        false,
        Combo::Default,
    ),
    count(
        "ANC 1st visit",
        "ANC 1st visit",
        "ANC_1ST_VISIT",
        "ANC 1st visit",
        false,
        Combo::Default,
    ),
    count(
        "ANC 4th visit",
        "ANC 4th visit",
        "ANC_4TH_VISIT",
        "ANC 4th visit",
        false,
        Combo::Default,
    ),
    count(
        "IPTp2 doses given",
        "IPTp2 doses",
        "ANC_IPTP2",
        "IPTp2 doses given",
        false,
        Combo::Default,
    ),
    count(
        "Pregnant women tested for HIV",
        "ANC HIV tested",
        "ANC_HIV_TESTED",
        "Pregnant women tested for HIV",
        false,
        Combo::Default,
    ),
    population(
        "Total population",
        "Total population",
        "POP_TOTAL",
        "Total population",
    ),
    population(
        "Expected pregnancies",
        "Expected pregnancies",
        "POP_EXPECTED_PREGNANCIES",
        "Expected pregnancies",
    ),
    population(
        "Surviving infants (under 1)",
        "Surviving infants",
        "POP_SURVIVING_INFANTS",
        "Surviving infants (under 1)",
    ),
    other(
        "Patient age in years",
        "Patient age (years)",
        "MCI_AGE_YEARS",
        "Age in years",
        "INTEGER_ZERO_OR_POSITIVE",
        "AVERAGE",
        true,
        None,
        Domain::Tracker,
    ),
    other(
        "Patient sex",
        "Patient sex",
        "MCI_SEX",
        "Sex",
        "TEXT",
        "NONE",
        false,
        Some(os::SEX),
        Domain::Tracker,
    ),
    other(
        "Malaria test result",
        "Malaria test result",
        "MCI_TEST_RESULT",
        "Test result",
        "TEXT",
        "NONE",
        false,
        Some(os::RESULT),
        Domain::Tracker,
    ),
    other(
        "Treated with ACT",
        "Treated with ACT",
        "MCI_TREATED_ACT",
        "Treated with ACT",
        "BOOLEAN",
        "SUM",
        false,
        None,
        Domain::Tracker,
    ),
    other(
        "Residence village",
        "Residence village",
        "MCI_VILLAGE",
        "Village of residence",
        "TEXT",
        "NONE",
        false,
        None,
        Domain::Tracker,
    ),
];

/// Indexes into `OPTION_SETS`.
mod os {
    pub const STOCK: usize = 0;
    pub const SEX: usize = 1;
    pub const RESULT: usize = 2;
}

struct OptionSetSpec {
    name: &'static str,
    code: &'static str,
    options: &'static [(&'static str, &'static str)],
}

const OPTION_SETS: [OptionSetSpec; 3] = [
    OptionSetSpec {
        name: "Stock status",
        code: "STOCK_STATUS",
        options: &[
            ("ADEQUATE", "Adequate"),
            ("LOW", "Low"),
            ("STOCKOUT", "Stock-out"),
        ],
    },
    OptionSetSpec {
        name: "Sex",
        code: "SEX",
        options: &[("M", "Male"), ("F", "Female")],
    },
    OptionSetSpec {
        name: "Test result",
        code: "TEST_RESULT",
        options: &[("POSITIVE", "Positive"), ("NEGATIVE", "Negative")],
    },
];

/// `(name, code)`; indexes are used by `CATEGORIES`.
const CATEGORY_OPTIONS: [(&str, &str); 7] = [
    ("Male", "MALE"),
    ("Female", "FEMALE"),
    ("<5y", "AGE_UNDER_5"),
    ("5-14y", "AGE_5_14"),
    ("15y+", "AGE_15_PLUS"),
    ("Fixed", "FIXED"),
    ("Outreach", "OUTREACH"),
];

const CAT_SEX: usize = 0;
const CAT_AGE: usize = 1;
const CAT_LOCATION: usize = 2;

/// `(name, code, option indexes)`.
const CATEGORIES: [(&str, &str, &[usize]); 3] = [
    ("Sex", "SEX", &[0, 1]),
    ("Age group (malaria)", "AGE_GROUP_MALARIA", &[2, 3, 4]),
    ("Location (EPI)", "LOCATION_EPI", &[5, 6]),
];

/// `(combo, name, code, category indexes in order)`.
const COMBOS: [(Combo, &str, &str, &[usize]); 2] = [
    (
        Combo::AgeSex,
        "Age and sex",
        "AGE_AND_SEX",
        &[CAT_AGE, CAT_SEX],
    ),
    (Combo::Location, "Location", "LOCATION", &[CAT_LOCATION]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ds {
    Malaria = 0,
    Epi = 1,
    Anc = 2,
    Population = 3,
}

const DATA_SETS: [Ds; 4] = [Ds::Malaria, Ds::Epi, Ds::Anc, Ds::Population];

struct DsSpec {
    name: &'static str,
    short: &'static str,
    code: &'static str,
    period_type: &'static str,
    expiry_days: u32,
    timely_days: u32,
    open_future_periods: u32,
    sections: &'static [(&'static str, &'static [usize])],
}

/// A month stays open 45 days after it ends: the running month is never
/// open (`openFuturePeriods` 0), so a shorter expiry would leave weeks
/// each month with no monthly form a health worker could send; older
/// months close, as a country's do.
const MONTHLY_EXPIRY_DAYS: u32 = 45;

const DS_SPECS: [DsSpec; 4] = [
    DsSpec {
        name: "Malaria monthly",
        short: "Malaria monthly",
        code: "DS_MALARIA_MONTHLY",
        period_type: "Monthly",
        expiry_days: MONTHLY_EXPIRY_DAYS,
        timely_days: 10,
        open_future_periods: 0,
        sections: &[
            (
                "Testing and treatment",
                &[de::MAL_TESTED, de::MAL_CONFIRMED, de::MAL_TREATED],
            ),
            ("Deaths and prevention", &[de::MAL_DEATHS, de::MAL_LLIN]),
            ("Commodities", &[de::MAL_RDT_STOCK, de::MAL_REMARKS]),
        ],
    },
    DsSpec {
        name: "Immunization (EPI) monthly",
        short: "EPI monthly",
        code: "DS_EPI_MONTHLY",
        period_type: "Monthly",
        expiry_days: MONTHLY_EXPIRY_DAYS,
        timely_days: 10,
        open_future_periods: 0,
        sections: &[
            (
                "Doses given",
                &[
                    de::EPI_BCG,
                    de::EPI_PENTA1,
                    de::EPI_PENTA3,
                    de::EPI_MEASLES1,
                ],
            ),
            ("Fully immunized", &[de::EPI_FULLY]),
        ],
    },
    DsSpec {
        name: "Antenatal care monthly",
        short: "ANC monthly",
        code: "DS_ANC_MONTHLY",
        period_type: "Monthly",
        expiry_days: MONTHLY_EXPIRY_DAYS,
        timely_days: 10,
        open_future_periods: 0,
        sections: &[
            ("Visits", &[de::ANC_1, de::ANC_4]),
            ("Interventions", &[de::ANC_IPTP2, de::ANC_HIV]),
        ],
    },
    // Population estimates are entered at the start of the year they describe, so the running
    // year must be open (openFuturePeriods 1) and never lock (expiryDays 0).
    DsSpec {
        name: "Population (yearly)",
        short: "Population yearly",
        code: "DS_POPULATION_YEARLY",
        period_type: "Yearly",
        expiry_days: 0,
        timely_days: 30,
        open_future_periods: 1,
        sections: &[(
            "Catchment population",
            &[de::POP_TOTAL, de::POP_PREGNANCIES, de::POP_INFANTS],
        )],
    },
];

const STAGE_ELEMENTS: [(usize, bool); 5] = [
    (de::EV_AGE, true),
    (de::EV_SEX, true),
    (de::EV_RESULT, true),
    (de::EV_TREATED, true),
    (de::EV_VILLAGE, false),
];

/// Role indexes into `ROLES`.
const ROLE_SUPERUSER: usize = 0;
const ROLE_HEALTH_WORKER: usize = 1;
const ROLE_REPORTER: usize = 2;
const ROLE_SUPERVISOR: usize = 3;
const ROLE_DATA_MANAGER: usize = 4;

/// `(name, code, description, authorities)`.
const ROLES: [(&str, &str, &str, &[&str]); 5] = [
    (
        "Superuser",
        "SUPERUSER",
        "Full access to everything",
        &["ALL"],
    ),
    (
        "Health worker",
        "HEALTH_WORKER",
        "Enters aggregate data and malaria cases for one facility, on web or mobile",
        &[
            "F_DATAVALUE_ADD",
            "F_DATAVALUE_DELETE",
            "M_dhis-web-aggregate-data-entry",
            "F_TRACKER_IMPORTER_EXPERIMENTAL",
            "F_MOBILE_SYNC",
        ],
    ),
    (
        "Facility reporter",
        "FACILITY_REPORTER",
        "Reports aggregate data for one facility by SMS",
        &["F_DATAVALUE_ADD", "F_MOBILE_SMS"],
    ),
    (
        "District supervisor",
        "DISTRICT_SUPERVISOR",
        "Reviews and approves the data of one district",
        &[
            "F_APPROVE_DATA",
            "F_ACCEPT_DATA_LOWER_LEVELS",
            "F_VIEW_UNAPPROVED_DATA",
            "M_dhis-web-dashboard",
            "F_USER_VIEW",
            "F_DATA_VALUE_READ",
        ],
    ),
    (
        "Data manager",
        "DATA_MANAGER",
        "Maintains metadata and users at national level",
        &[
            "F_METADATA_IMPORT",
            "F_METADATA_EXPORT",
            "F_USER_ADD",
            "F_DATAVALUE_ADD",
            "F_APPROVE_DATA",
        ],
    ),
];

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// A 32-byte ChaCha key per (seed, domain), so that different purposes never share a stream.
fn derive_key(seed: u64, domain: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hisa-demo/v1/");
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(seed.to_le_bytes());
    h.finalize().into()
}

fn stream(key: &[u8; 32], stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(*key);
    rng.set_stream(stream);
    rng
}

const UID_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UID_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn draw_uid(rng: &mut impl Rng) -> String {
    let mut s = String::with_capacity(11);
    s.push(UID_LETTERS[rng.gen_range(0..UID_LETTERS.len())] as char);
    for _ in 0..10 {
        s.push(UID_ALNUM[rng.gen_range(0..UID_ALNUM.len())] as char);
    }
    s
}

/// UID kinds; each kind × index gets its own stream.
mod kind {
    pub const ORG_UNIT: u64 = 1;
    pub const OU_LEVEL: u64 = 2;
    pub const OU_GROUP: u64 = 3;
    pub const OU_GROUP_SET: u64 = 4;
    pub const CATEGORY_OPTION: u64 = 5;
    pub const CATEGORY: u64 = 6;
    pub const CATEGORY_COMBO: u64 = 7;
    pub const COC: u64 = 8;
    pub const OPTION_SET: u64 = 9;
    pub const OPTION: u64 = 10;
    pub const DATA_ELEMENT: u64 = 11;
    pub const DATA_SET: u64 = 12;
    pub const SECTION: u64 = 13;
    pub const INDICATOR_TYPE: u64 = 14;
    pub const INDICATOR: u64 = 15;
    pub const CONSTANT: u64 = 16;
    pub const VALIDATION_RULE: u64 = 17;
    pub const VALIDATION_RULE_GROUP: u64 = 18;
    pub const PROGRAM: u64 = 19;
    pub const PROGRAM_STAGE: u64 = 20;
    pub const USER_ROLE: u64 = 21;
    pub const USER: u64 = 22;
    pub const SMS_COMMAND: u64 = 23;
}

/// Hands out metadata UIDs; re-draws on the (astronomically rare) collision so the payload is
/// guaranteed collision-free, and never hands out a built-in default UID.
struct UidMint {
    key: [u8; 32],
    issued: HashSet<String>,
}

impl UidMint {
    fn new(seed: u64) -> Self {
        UidMint {
            key: derive_key(seed, "uid"),
            issued: DEFAULT_UIDS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn mint(&mut self, kind: u64, index: u64) -> String {
        let mut rng = stream(&self.key, (kind << 48) | index);
        loop {
            let uid = draw_uid(&mut rng);
            if self.issued.insert(uid.clone()) {
                return uid;
            }
        }
    }
}

/// Approximately standard normal (Irwin–Hall with four uniforms): avoids `ln`/`cos`, whose last
/// bits may differ between platforms' libm.
fn normal(rng: &mut impl Rng) -> f64 {
    let s: f64 = rng.gen::<f64>() + rng.gen::<f64>() + rng.gen::<f64>() + rng.gen::<f64>();
    (s - 2.0) * 1.732_050_807_568_877_2
}

/// A non-negative count around `mean` with relative spread `rel_sd`.
fn around(rng: &mut impl Rng, mean: f64, rel_sd: f64) -> u32 {
    let x = mean * (1.0 + rel_sd * normal(rng));
    if x <= 0.0 {
        0
    } else {
        x.round().min(1.0e9) as u32
    }
}

/// Successes in `n` trials of probability `p` (exact for small `n`, normal approximation above).
fn binomial(rng: &mut impl Rng, n: u32, p: f64) -> u32 {
    let p = p.clamp(0.0, 1.0);
    if n <= 40 {
        (0..n).filter(|_| rng.gen_bool(p)).count() as u32
    } else {
        let mean = n as f64 * p;
        let sd = (mean * (1.0 - p)).sqrt();
        let x = (mean + sd * normal(rng)).round();
        x.clamp(0.0, n as f64) as u32
    }
}

/// Count of rare events with mean `mean` (≤ 20), as a binomial over 20 slots.
fn rare(rng: &mut impl Rng, mean: f64) -> u32 {
    binomial(rng, 20, (mean / 20.0).min(1.0))
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

const ONSETS: [&str; 22] = [
    "b", "d", "g", "h", "k", "l", "m", "n", "r", "s", "t", "w", "y", "z", "mb", "nd", "ng", "ny",
    "ch", "sh", "kw", "nz",
];
const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];

/// A pronounceable invented place name of two or three syllables, capitalised.
fn place_word(rng: &mut impl Rng) -> String {
    loop {
        let syllables = if rng.gen_bool(0.45) { 2 } else { 3 };
        let mut s = String::with_capacity(12);
        for i in 0..syllables {
            // An initial bare vowel ("Ukoma") breaks the monotony of CV-CV names.
            if !(i == 0 && rng.gen_bool(0.12)) {
                s.push_str(ONSETS[rng.gen_range(0..ONSETS.len())]);
            }
            s.push_str(VOWELS[rng.gen_range(0..VOWELS.len())]);
        }
        if !BLOCKED_SUBSTRINGS.iter().any(|b| s.contains(b)) {
            return capitalise(&s);
        }
    }
}

/// Random syllables can spell slurs or vulgar words (English or Swahili, the register these
/// names imitate); a demo shown to ministries must not.
const BLOCKED_SUBSTRINGS: [&str; 24] = [
    "nig", "nega", "kike", "shit", "nazi", "homo", "wog", "yid", "mongo", "dumb", "hore", "bum",
    "kaka", "kuma", "malaya", "tomba", "shenzi", "kunya", "matako", "shoga", "nyoko", "kisimi",
    "nyege", "tit",
];

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// A place name not used before anywhere in the country, so facility names stay globally
/// distinct even at 15,000 facilities.
fn unique_place(rng: &mut impl Rng, used: &mut HashSet<String>) -> String {
    loop {
        let w = place_word(rng);
        if used.insert(w.clone()) {
            return w;
        }
    }
}

const FIRST_NAMES: [&str; 40] = [
    "Amina",
    "Juma",
    "Neema",
    "Baraka",
    "Grace",
    "Joseph",
    "Halima",
    "Peter",
    "Rehema",
    "Emmanuel",
    "Zawadi",
    "John",
    "Fatuma",
    "Daniel",
    "Upendo",
    "Musa",
    "Esther",
    "Hassan",
    "Mary",
    "Said",
    "Agnes",
    "Ibrahim",
    "Lucy",
    "Omari",
    "Rose",
    "Yusuf",
    "Janeth",
    "Salim",
    "Happiness",
    "Elias",
    "Mwajuma",
    "George",
    "Tumaini",
    "Paulo",
    "Asha",
    "Khamis",
    "Winfrida",
    "Simon",
    "Mariam",
    "Athumani",
];

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn username_part(name: &str) -> String {
    name.to_lowercase().replace(' ', "_")
}

// ---------------------------------------------------------------------------------------------
// Calendar helpers
// ---------------------------------------------------------------------------------------------

fn date(y: i32, m: u8, d: u8) -> Date {
    Date::from_calendar_date(y, Month::try_from(m).expect("month 1-12"), d).expect("valid date")
}

fn month_end(y: i32, m: u8) -> Date {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    date(ny, nm, 1) - Duration::days(1)
}

fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeriodKind {
    Month,
    Year,
}

#[derive(Debug, Clone)]
struct Period {
    kind: PeriodKind,
    iso: String,
    start: Date,
    end: Date,
}

impl Period {
    fn month(y: i32, m: u8) -> Self {
        Period {
            kind: PeriodKind::Month,
            iso: format!("{y:04}{m:02}"),
            start: date(y, m, 1),
            end: month_end(y, m),
        }
    }

    fn year(y: i32) -> Self {
        Period {
            kind: PeriodKind::Year,
            iso: format!("{y:04}"),
            start: date(y, 1, 1),
            end: date(y, 12, 31),
        }
    }
}

/// Coordinates rounded to 5 decimals (about a metre); the division keeps the printed form short.
fn round5(x: f64) -> f64 {
    (x * 100_000.0).round() / 100_000.0
}

fn rectangle(west: f64, south: f64, east: f64, north: f64) -> Value {
    // Counter-clockwise exterior ring, as RFC 7946 asks.
    json!({
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]
    })
}

// ---------------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FacilityType {
    Hospital,
    HealthCentre,
    Dispensary,
}

impl FacilityType {
    fn suffix(self) -> &'static str {
        match self {
            FacilityType::Hospital => " Hospital",
            FacilityType::HealthCentre => " Health Centre",
            FacilityType::Dispensary => " Dispensary",
        }
    }
}

#[derive(Debug, Clone)]
struct Facility {
    uid: String,
    name: String,
    district: usize,
    ftype: FacilityType,
    urban: bool,
    /// Catchment population at the end year.
    population: f64,
    /// Local malaria burden relative to the district's.
    malaria_factor: f64,
    /// Probability of not reporting a data set for a period at all.
    miss_rate: f64,
    opening: Date,
    closing: Option<Date>,
    reports_cases: bool,
    stored_by: Option<String>,
}

impl Facility {
    /// Monthly reports need the whole month after opening, and stop well before closing so that
    /// late reports still arrive while the facility is open.
    fn active(&self, p: &Period) -> bool {
        match p.kind {
            PeriodKind::Month => {
                p.start >= self.opening
                    && self.closing.is_none_or(|c| p.end + Duration::days(41) < c)
            }
            PeriodKind::Year => {
                self.opening <= p.end
                    && self
                        .closing
                        .is_none_or(|c| c > p.start + Duration::days(90))
            }
        }
    }

    fn stored_by(&self) -> &str {
        self.stored_by.as_deref().unwrap_or(ADMIN_USERNAME)
    }
}

#[derive(Debug, Clone)]
struct District {
    uid: String,
    name: String,
    /// Mean monthly malaria tests per 1000 population.
    test_rate: f64,
    /// Baseline test positivity.
    positivity: f64,
}

#[derive(Debug, Clone)]
struct Slot {
    period: Period,
    ds: Ds,
}

#[derive(Debug, Clone)]
struct State {
    data_key: [u8; 32],
    end_year: i32,
    facilities: Vec<Facility>,
    districts: Vec<District>,
    slots: Vec<Slot>,
    months: Vec<Period>,
    /// Slot index of each month's malaria report; events hang off it.
    malaria_slots: Vec<usize>,
    de: Vec<String>,
    /// Ordered age-major (`<5y, Male`, `<5y, Female`, …) so report cells index as age * 2 + sex.
    coc_age_sex: Vec<String>,
    coc_location: Vec<String>,
    data_sets: Vec<String>,
    program: String,
    stage: String,
}

const SUB_HEADER: u64 = 0;
const SUB_VALUES: u64 = 1;
const SUB_EVENTS: u64 = 2;

// Seasonal malaria multipliers by calendar month: peaks after the long (Mar–May) and short
// (Oct–Dec) rains.
const MALARIA_SEASON: [f64; 12] = [0.9, 0.8, 0.8, 1.0, 1.4, 1.5, 1.2, 0.9, 0.8, 0.9, 1.1, 1.2];
const AGE_SHARE_TESTED: [f64; 3] = [0.32, 0.24, 0.44];
const AGE_POSITIVITY: [f64; 3] = [1.25, 1.15, 0.8];
const MALE_SHARE: f64 = 0.48;
const ANNUAL_GROWTH: f64 = 1.03;

const STOCK_REMARKS: [&str; 6] = [
    "RDT stock-out for two weeks; requested resupply from the district store.",
    "ACT for children under 5 ran out mid-month; patients referred to the health centre.",
    "RDT delivery delayed because the road was impassable after the rains.",
    "Borrowed 50 RDTs from a neighbouring facility.",
    "Stock low after outreach campaign; order placed with the district pharmacist.",
    "Expired RDTs removed from stock and returned to the district.",
];

const DEATH_COMMENTS: [&str; 3] = [
    "Severe malaria, patient arrived late from a remote village.",
    "Death reviewed by the facility committee.",
    "Referred from a dispensary; died within 24 hours of admission.",
];

impl State {
    fn rng(&self, facility: usize, slot: usize, sub: u64) -> ChaCha8Rng {
        stream(
            &self.data_key,
            ((facility as u64) << 24) | ((slot as u64) << 4) | sub,
        )
    }

    /// When the facility submitted this report, or `None` when it did not report.
    fn report_time(&self, fi: usize, si: usize) -> Option<OffsetDateTime> {
        let fac = &self.facilities[fi];
        let period = &self.slots[si].period;
        if !fac.active(period) {
            return None;
        }
        let mut rng = self.rng(fi, si, SUB_HEADER);
        if rng.gen_bool(fac.miss_rate) {
            return None;
        }
        let day = match period.kind {
            PeriodKind::Month => {
                let days = if rng.gen_bool(0.12) {
                    rng.gen_range(11..=40)
                } else {
                    rng.gen_range(1..=10)
                };
                period.end + Duration::days(days)
            }
            // Population estimates are set once the year starts (or the facility opens).
            PeriodKind::Year => {
                period.start.max(fac.opening) + Duration::days(rng.gen_range(5..=40))
            }
        };
        Some(working_hours(&mut rng, day))
    }

    fn walk_slots(&self, f: &mut dyn FnMut(usize, usize, OffsetDateTime)) {
        for si in 0..self.slots.len() {
            for fi in 0..self.facilities.len() {
                if let Some(t) = self.report_time(fi, si) {
                    f(fi, si, t);
                }
            }
        }
    }

    fn walk_completions(&self, f: &mut dyn FnMut(DemoCompletion)) {
        self.walk_slots(&mut |fi, si, t| {
            let fac = &self.facilities[fi];
            let slot = &self.slots[si];
            f(DemoCompletion {
                data_set: self.data_sets[slot.ds as usize].clone(),
                period: slot.period.iso.clone(),
                org_unit: fac.uid.clone(),
                attribute_option_combo: DEFAULT_CATEGORY_OPTION_COMBO.to_string(),
                completed_by: fac.stored_by().to_string(),
                completed_at: t,
            })
        });
    }

    fn walk_values(&self, f: &mut dyn FnMut(DemoDataValue)) {
        self.walk_slots(&mut |fi, si, t| {
            let fac = &self.facilities[fi];
            let slot = &self.slots[si];
            let mut rng = self.rng(fi, si, SUB_VALUES);
            let mut out = Emitter {
                state: self,
                fac,
                period: &slot.period.iso,
                created: t,
                f: &mut *f,
            };
            match slot.ds {
                Ds::Malaria => self.malaria_report(&mut rng, fi, &slot.period, &mut out),
                Ds::Epi => self.epi_report(&mut rng, fi, &slot.period, &mut out),
                Ds::Anc => self.anc_report(&mut rng, fi, &slot.period, &mut out),
                Ds::Population => self.population_report(&mut rng, fi, &slot.period, &mut out),
            }
        });
    }

    /// Catchment population for the year a period falls in (3 % yearly growth, anchored at the
    /// end year so the most recent figures are the "base" sizes).
    fn population_in(&self, fac: &Facility, year: i32) -> f64 {
        let mut p = fac.population;
        for _ in year..self.end_year {
            p /= ANNUAL_GROWTH;
        }
        p
    }

    fn malaria_report(&self, rng: &mut ChaCha8Rng, fi: usize, p: &Period, out: &mut Emitter) {
        let fac = &self.facilities[fi];
        let district = &self.districts[fac.district];
        let season = MALARIA_SEASON[p.start.month() as usize - 1];
        let pop = self.population_in(fac, p.start.year());
        let mean_tested =
            pop / 1000.0 * district.test_rate * season * fac.malaria_factor * type_pull(fac.ftype);
        let tested_total = around(rng, mean_tested, 0.15);
        let positivity = (district.positivity * (0.6 + 0.4 * season) * uniform(rng, 0.85, 1.15))
            .clamp(0.02, 0.85);

        let mut tested = [0u32; 6];
        let mut confirmed = [0u32; 6];
        let mut treated = [0u32; 6];
        for age in 0..3 {
            let age_n = binomial(rng, tested_total, AGE_SHARE_TESTED[age]);
            let male = binomial(rng, age_n, MALE_SHARE);
            for (sex, n) in [male, age_n - male].into_iter().enumerate() {
                let c = age * 2 + sex;
                tested[c] = n;
                confirmed[c] = binomial(rng, n, positivity * AGE_POSITIVITY[age]);
                let share = uniform(rng, 0.88, 1.0);
                treated[c] = binomial(rng, confirmed[c], share);
            }
        }
        // A data entry slip (positives typed into the wrong row) that validation must catch.
        let violation = rng.gen_bool(0.005);
        if violation {
            for (c, t) in confirmed.iter_mut().zip(tested) {
                *c = t + rng.gen_range(1..=4);
            }
        }
        // A blank register line drops a whole age/sex row; dropping only the tested value would
        // fabricate rule violations.
        let mut row_missing = [false; 6];
        if !violation {
            for m in row_missing.iter_mut() {
                *m = rng.gen_bool(0.01);
            }
        }
        for (c, coc) in self.coc_age_sex.iter().enumerate() {
            if !row_missing[c] {
                out.count(de::MAL_TESTED, coc, tested[c]);
            }
        }
        for (c, coc) in self.coc_age_sex.iter().enumerate() {
            if !row_missing[c] {
                out.count(de::MAL_CONFIRMED, coc, confirmed[c]);
            }
        }
        for (c, coc) in self.coc_age_sex.iter().enumerate() {
            if !row_missing[c] && !rng.gen_bool(0.02) {
                out.count(de::MAL_TREATED, coc, treated[c]);
            }
        }

        let confirmed_total: u32 = confirmed.iter().sum();
        let fatality = match fac.ftype {
            FacilityType::Hospital => 0.006,
            FacilityType::HealthCentre => 0.002,
            FacilityType::Dispensary => 0.0005,
        };
        let deaths = rare(rng, (confirmed_total as f64 * fatality).min(20.0));
        let death_comment = (deaths > 0 && rng.gen_bool(0.25))
            .then(|| DEATH_COMMENTS[rng.gen_range(0..DEATH_COMMENTS.len())]);
        if !rng.gen_bool(0.02) {
            out.count_with_comment(de::MAL_DEATHS, deaths, death_comment);
        }
        // Nets go out in bursts (campaigns, ANC stock arrivals), so many months have none.
        let llins = if rng.gen_bool(0.35) {
            around(rng, pop * 0.004, 0.4)
        } else {
            0
        };
        if !rng.gen_bool(0.02) {
            out.count(de::MAL_LLIN, DEFAULT_CATEGORY_OPTION_COMBO, llins);
        }

        let roll = rng.gen::<f64>();
        let status = if roll < 0.05 {
            "STOCKOUT"
        } else if roll < 0.15 {
            "LOW"
        } else {
            "ADEQUATE"
        };
        // Many facilities leave the stock field blank when all is well.
        let report_status = status != "ADEQUATE" || rng.gen_bool(0.25);
        if report_status {
            out.text(de::MAL_RDT_STOCK, status);
        }
        let remark_chance = match status {
            "STOCKOUT" => 0.7,
            "LOW" => 0.3,
            _ => 0.0,
        };
        if report_status && rng.gen_bool(remark_chance) {
            out.text(
                de::MAL_REMARKS,
                STOCK_REMARKS[rng.gen_range(0..STOCK_REMARKS.len())],
            );
        }
    }

    fn epi_report(&self, rng: &mut ChaCha8Rng, fi: usize, p: &Period, out: &mut Emitter) {
        let fac = &self.facilities[fi];
        let pop = self.population_in(fac, p.start.year());
        let infants_per_month = pop * 0.036 / 12.0;
        let fixed_share = if fac.urban { 0.9 } else { 0.65 };
        // Births happen mostly in hospitals, so BCG skews towards them.
        let bcg_pull = match fac.ftype {
            FacilityType::Hospital => 1.8,
            FacilityType::HealthCentre => 1.0,
            FacilityType::Dispensary => 0.6,
        };
        let bcg = around(rng, infants_per_month * bcg_pull, 0.2);
        let penta1 = around(rng, infants_per_month * 0.95, 0.15);
        let split = |rng: &mut ChaCha8Rng, n: u32| {
            let fixed = binomial(rng, n, fixed_share);
            [fixed, n - fixed]
        };
        let bcg_l = split(rng, bcg);
        let p1_l = split(rng, penta1);
        // Later doses go to children who had Penta 1 at the same site, so they never exceed it.
        let p3_share = uniform(rng, 0.82, 0.96);
        let ms_share = uniform(rng, 0.78, 0.92);
        let mut p3_l = [
            binomial(rng, p1_l[0], p3_share),
            binomial(rng, p1_l[1], p3_share),
        ];
        let ms_l = [
            binomial(rng, p1_l[0], ms_share),
            binomial(rng, p1_l[1], ms_share),
        ];
        let fully_share = uniform(rng, 0.85, 0.98);
        let fully = binomial(rng, ms_l[0] + ms_l[1], fully_share);

        // Penta 3 recorded in the Penta 1 column's place: a violation validation must catch.
        let violation = rng.gen_bool(0.005);
        if violation {
            p3_l = [
                p1_l[0] + rng.gen_range(1..=3),
                p1_l[1] + rng.gen_range(1..=3),
            ];
        }
        for (l, coc) in self.coc_location.iter().enumerate() {
            if !rng.gen_bool(0.02) {
                out.count(de::EPI_BCG, coc, bcg_l[l]);
            }
        }
        for (l, coc) in self.coc_location.iter().enumerate() {
            out.count(de::EPI_PENTA1, coc, p1_l[l]);
        }
        for (l, coc) in self.coc_location.iter().enumerate() {
            if violation || !rng.gen_bool(0.02) {
                out.count(de::EPI_PENTA3, coc, p3_l[l]);
            }
        }
        for (l, coc) in self.coc_location.iter().enumerate() {
            out.count(de::EPI_MEASLES1, coc, ms_l[l]);
        }
        if !rng.gen_bool(0.02) {
            out.count(de::EPI_FULLY, DEFAULT_CATEGORY_OPTION_COMBO, fully);
        }
    }

    fn anc_report(&self, rng: &mut ChaCha8Rng, fi: usize, p: &Period, out: &mut Emitter) {
        let fac = &self.facilities[fi];
        let pop = self.population_in(fac, p.start.year());
        let anc1 = around(rng, pop * 0.045 / 12.0 * 0.92, 0.15);
        let shares = [
            uniform(rng, 0.45, 0.7),
            uniform(rng, 0.5, 0.75),
            uniform(rng, 0.8, 0.98),
        ];
        let anc4 = binomial(rng, anc1, shares[0]);
        let iptp2 = binomial(rng, anc1, shares[1]);
        let hiv = binomial(rng, anc1, shares[2]);
        out.count(de::ANC_1, DEFAULT_CATEGORY_OPTION_COMBO, anc1);
        for (d, v) in [
            (de::ANC_4, anc4),
            (de::ANC_IPTP2, iptp2),
            (de::ANC_HIV, hiv),
        ] {
            if !rng.gen_bool(0.02) {
                out.count(d, DEFAULT_CATEGORY_OPTION_COMBO, v);
            }
        }
    }

    fn population_report(&self, rng: &mut ChaCha8Rng, fi: usize, p: &Period, out: &mut Emitter) {
        let fac = &self.facilities[fi];
        let total = self.population_in(fac, p.start.year()).round().max(1.0);
        let pregnancies = (total * uniform(rng, 0.043, 0.047)).round();
        let infants = (total * uniform(rng, 0.034, 0.038)).round();
        let coc = DEFAULT_CATEGORY_OPTION_COMBO;
        out.count(de::POP_TOTAL, coc, total as u32);
        out.count(de::POP_PREGNANCIES, coc, pregnancies as u32);
        out.count(de::POP_INFANTS, coc, infants as u32);
    }

    fn walk_events(&self, f: &mut dyn FnMut(DemoEvent)) {
        let stage_des: Vec<&String> = STAGE_ELEMENTS.iter().map(|(d, _)| &self.de[*d]).collect();
        for (mi, month) in self.months.iter().enumerate() {
            let si = self.malaria_slots[mi];
            for (fi, fac) in self.facilities.iter().enumerate() {
                if !fac.reports_cases || !fac.active(month) {
                    continue;
                }
                let mut rng = self.rng(fi, si, SUB_EVENTS);
                let cases = rng.gen_range(2..=6);
                let days_in_month = month.end.day() as i64;
                let mut occurred: Vec<Date> = (0..cases)
                    .map(|_| month.start + Duration::days(rng.gen_range(0..days_in_month)))
                    .collect();
                occurred.sort();
                // Villages around one facility repeat; a small pool per facility-month keeps that.
                let villages: Vec<String> = (0..3).map(|_| place_word(&mut rng)).collect();
                for day in occurred {
                    let uid = draw_uid(&mut rng);
                    let age = match rng.gen_range(0..100) {
                        0..=29 => rng.gen_range(0..=4),
                        30..=54 => rng.gen_range(5..=14),
                        _ => rng.gen_range(15..=75),
                    };
                    let sex = if rng.gen_bool(MALE_SHARE) { "M" } else { "F" };
                    let positive = rng.gen_bool(0.85);
                    let treated = if positive {
                        rng.gen_bool(0.93)
                    } else {
                        rng.gen_bool(0.03)
                    };
                    let village = &villages[rng.gen_range(0..villages.len())];
                    let delay = Duration::days(rng.gen_range(0..=3));
                    let created = working_hours(&mut rng, day + delay);
                    let values = [
                        age.to_string(),
                        sex.to_string(),
                        if positive { "POSITIVE" } else { "NEGATIVE" }.to_string(),
                        treated.to_string(),
                        village.clone(),
                    ];
                    f(DemoEvent {
                        uid,
                        program: self.program.clone(),
                        program_stage: self.stage.clone(),
                        org_unit: fac.uid.clone(),
                        occurred_at: day,
                        stored_by: fac.stored_by().to_string(),
                        created,
                        values: stage_des.iter().map(|d| (*d).clone()).zip(values).collect(),
                    });
                }
            }
        }
    }
}

/// Hospitals see referrals and walk-ins from beyond their catchment; dispensaries test fewer.
fn type_pull(t: FacilityType) -> f64 {
    match t {
        FacilityType::Hospital => 1.3,
        FacilityType::HealthCentre => 1.0,
        FacilityType::Dispensary => 0.9,
    }
}

/// A UTC instant during East African working hours (08:00–18:59 EAT = 05:00–15:59 UTC).
fn working_hours(rng: &mut impl Rng, day: Date) -> OffsetDateTime {
    day.with_hms_milli(
        rng.gen_range(5..16),
        rng.gen_range(0..60),
        rng.gen_range(0..60),
        rng.gen_range(0..1000),
    )
    .expect("valid time")
    .assume_utc()
}

struct Emitter<'a> {
    state: &'a State,
    fac: &'a Facility,
    period: &'a str,
    created: OffsetDateTime,
    f: &'a mut dyn FnMut(DemoDataValue),
}

impl Emitter<'_> {
    fn emit(&mut self, d: usize, coc: &str, value: String, comment: Option<&str>) {
        (self.f)(DemoDataValue {
            data_element: self.state.de[d].clone(),
            period: self.period.to_string(),
            org_unit: self.fac.uid.clone(),
            category_option_combo: coc.to_string(),
            attribute_option_combo: DEFAULT_CATEGORY_OPTION_COMBO.to_string(),
            value,
            stored_by: self.fac.stored_by().to_string(),
            created: self.created,
            comment: comment.map(str::to_string),
        });
    }

    fn count(&mut self, d: usize, coc: &str, v: u32) {
        self.count_with_comment_coc(d, coc, v, None);
    }

    fn count_with_comment(&mut self, d: usize, v: u32, comment: Option<&str>) {
        self.count_with_comment_coc(d, DEFAULT_CATEGORY_OPTION_COMBO, v, comment);
    }

    /// Zeros of elements whose zero is insignificant are not stored, as DHIS2 would not.
    fn count_with_comment_coc(&mut self, d: usize, coc: &str, v: u32, comment: Option<&str>) {
        if v == 0 && !DE_SPECS[d].zero_significant {
            return;
        }
        self.emit(d, coc, v.to_string(), comment);
    }

    fn text(&mut self, d: usize, v: &str) {
        self.emit(d, DEFAULT_CATEGORY_OPTION_COMBO, v.to_string(), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// (name, short name, code, numerator, numerator description, denominator, denominator
/// description, indicator type index, annualized)
type IndicatorRow = (
    &'static str,
    &'static str,
    &'static str,
    String,
    &'static str,
    String,
    &'static str,
    usize,
    bool,
);

fn r(id: &str) -> Value {
    json!({ "id": id })
}

fn refs<'a>(ids: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(ids.into_iter().map(|id| r(id)).collect())
}

struct Builder<'o> {
    opts: &'o DemoOptions,
    mint: UidMint,
    rng: ChaCha8Rng,
    used_names: HashSet<String>,
}

struct UserSpec {
    username: String,
    password: &'static str,
    first: String,
    surname: String,
    phone: Option<String>,
    role: usize,
    capture: String,
    capture_name: String,
    view: String,
}

impl<'o> Builder<'o> {
    fn new(opts: &'o DemoOptions) -> Self {
        let (_, m) = opts.end_period;
        assert!(
            (1..=12).contains(&m),
            "end_period month must be 1-12, got {m}"
        );
        assert!(
            opts.facilities <= 99_999,
            "at most 99,999 facilities (five-digit codes)"
        );
        Builder {
            opts,
            mint: UidMint::new(opts.seed),
            rng: stream(&derive_key(opts.seed, "country"), 0),
            used_names: HashSet::new(),
        }
    }

    fn build(mut self) -> DemoCountry {
        let (end_year, end_month) = self.opts.end_period;
        let first_index = end_year * 12 + end_month as i32 - 1 - (MONTHS_OF_DATA as i32 - 1);
        let months: Vec<Period> = (0..MONTHS_OF_DATA as i32)
            .map(|i| {
                let k = first_index + i;
                Period::month(k.div_euclid(12), (k.rem_euclid(12) + 1) as u8)
            })
            .collect();

        // ---- org units -------------------------------------------------------------------
        let national_uid = self.mint.mint(kind::ORG_UNIT, 0);
        let open_since = date(OPEN_SINCE.0, OPEN_SINCE.1, OPEN_SINCE.2);
        let mut org_units = Vec::with_capacity(self.opts.facilities + 21);
        org_units.push(json!({
            "id": national_uid,
            "name": COUNTRY_NAME,
            "shortName": COUNTRY_SHORT,
            "code": COUNTRY_CODE,
            "openingDate": iso_date(open_since),
            "geometry": rectangle(30.0, -4.0, 36.0, 2.0),
        }));

        let mut regions = Vec::with_capacity(4);
        for ri in 0..4usize {
            let uid = self.mint.mint(kind::ORG_UNIT, 1 + ri as u64);
            let name = format!(
                "{} Region",
                unique_place(&mut self.rng, &mut self.used_names)
            );
            // Regions are 2×2 blocks of the 4×4 district grid: NW, NE, SW, SE.
            let (col, row) = ((ri % 2) as f64 * 3.0, (ri / 2) as f64 * 3.0);
            org_units.push(json!({
                "id": uid,
                "name": name,
                "shortName": truncate_chars(&name, 50),
                "code": format!("{COUNTRY_CODE}_R{}", ri + 1),
                "openingDate": iso_date(open_since),
                "parent": r(&national_uid),
                "geometry": rectangle(30.0 + col, 2.0 - row - 3.0, 30.0 + col + 3.0, 2.0 - row),
            }));
            regions.push(uid);
        }

        let mut districts = Vec::with_capacity(16);
        let mut district_cells = Vec::with_capacity(16);
        for di in 0..16usize {
            let (ri, k) = (di / 4, di % 4);
            let uid = self.mint.mint(kind::ORG_UNIT, 5 + di as u64);
            let base = unique_place(&mut self.rng, &mut self.used_names);
            // A few two-word districts, as real countries split districts ("Upper X").
            let name = if self.rng.gen_bool(0.25) {
                let prefix = ["Upper", "Lower", "North", "South"][self.rng.gen_range(0..4)];
                format!("{prefix} {base}")
            } else {
                base
            };
            let col = 2 * (ri % 2) + k % 2;
            let row = 2 * (ri / 2) + k / 2;
            let west = 30.0 + col as f64 * 1.5;
            let north = 2.0 - row as f64 * 1.5;
            district_cells.push((west, north));
            org_units.push(json!({
                "id": uid,
                "name": name,
                "shortName": truncate_chars(&name, 50),
                "code": format!("{COUNTRY_CODE}_R{}_D{}", ri + 1, k + 1),
                "openingDate": iso_date(open_since),
                "parent": r(&regions[ri]),
                "geometry": rectangle(west, north - 1.5, west + 1.5, north),
            }));
            districts.push(District {
                uid,
                name,
                test_rate: uniform(&mut self.rng, 6.0, 16.0),
                positivity: uniform(&mut self.rng, 0.12, 0.5),
            });
        }

        // ---- facilities ------------------------------------------------------------------
        let per_district = self.allocate_facilities();
        let mut facilities: Vec<Facility> = Vec::with_capacity(self.opts.facilities);
        let mut facility_points = Vec::with_capacity(self.opts.facilities);
        for (di, &n) in per_district.iter().enumerate() {
            for j in 0..n {
                let fi = facilities.len();
                let ftype = if j == 0 {
                    FacilityType::Hospital
                } else {
                    match self.rng.gen_range(0..100) {
                        0..=2 => FacilityType::Hospital,
                        3..=29 => FacilityType::HealthCentre,
                        _ => FacilityType::Dispensary,
                    }
                };
                let name = if j == 0 {
                    // The district hospital carries the district's own name.
                    let base = districts[di]
                        .name
                        .rsplit(' ')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    format!("{base} District Hospital")
                } else {
                    let base = unique_place(&mut self.rng, &mut self.used_names);
                    format!("{base}{}", ftype.suffix())
                };
                let urban = self.rng.gen_bool(match ftype {
                    FacilityType::Hospital => 0.7,
                    FacilityType::HealthCentre => 0.35,
                    FacilityType::Dispensary => 0.1,
                });
                let population = match ftype {
                    FacilityType::Hospital => uniform(&mut self.rng, 40_000.0, 120_000.0),
                    FacilityType::HealthCentre => uniform(&mut self.rng, 8_000.0, 30_000.0),
                    FacilityType::Dispensary => uniform(&mut self.rng, 1_500.0, 8_000.0),
                };
                let malaria_factor =
                    uniform(&mut self.rng, 0.6, 1.4) * if urban { 0.6 } else { 1.0 };
                // Mean 8 %: some facilities are reliable, some are not.
                let miss_rate = uniform(&mut self.rng, 0.02, 0.14);
                let roll = self.rng.gen_range(0..1000);
                let (opening, closing) = if j == 0 {
                    (open_since, None)
                } else if roll < 20 {
                    let m = &months[self.rng.gen_range(2..=19)];
                    (m.start + Duration::days(self.rng.gen_range(0..28)), None)
                } else if roll < 30 {
                    let m = &months[self.rng.gen_range(6..=21)];
                    let c = m.start + Duration::days(self.rng.gen_range(0..28));
                    (open_since, Some(c))
                } else {
                    (open_since, None)
                };
                let reports_cases = self.rng.gen_bool(0.10);
                let (west, north) = district_cells[di];
                let (lon, lat) = if urban {
                    // Urban facilities cluster around the district town at the cell centre.
                    (
                        west + 0.75 + uniform(&mut self.rng, -0.2, 0.2),
                        north - 0.75 + uniform(&mut self.rng, -0.2, 0.2),
                    )
                } else {
                    (
                        west + uniform(&mut self.rng, 0.03, 1.47),
                        north - uniform(&mut self.rng, 0.03, 1.47),
                    )
                };
                facility_points.push((round5(lon), round5(lat)));
                facilities.push(Facility {
                    uid: self.mint.mint(kind::ORG_UNIT, 21 + fi as u64),
                    name,
                    district: di,
                    ftype,
                    urban,
                    population,
                    malaria_factor,
                    miss_rate,
                    opening,
                    closing,
                    reports_cases,
                    stored_by: None,
                });
            }
        }

        // ---- users (assigned before facility JSON so stored_by is known) ----------------
        let users = self.users(&national_uid, &districts, &mut facilities);

        for (fi, fac) in facilities.iter().enumerate() {
            let (lon, lat) = facility_points[fi];
            let mut o = serde_json::Map::new();
            o.insert("id".into(), fac.uid.clone().into());
            o.insert("name".into(), fac.name.clone().into());
            o.insert("shortName".into(), truncate_chars(&fac.name, 50).into());
            o.insert(
                "code".into(),
                format!("{COUNTRY_CODE}_F{:05}", fi + 1).into(),
            );
            o.insert("openingDate".into(), iso_date(fac.opening).into());
            if let Some(c) = fac.closing {
                o.insert("closedDate".into(), iso_date(c).into());
            }
            o.insert("parent".into(), r(&districts[fac.district].uid));
            o.insert(
                "geometry".into(),
                json!({ "type": "Point", "coordinates": [lon, lat] }),
            );
            org_units.push(Value::Object(o));
        }

        let levels: Vec<Value> = ["National", "Region", "District", "Facility"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({
                    "id": self.mint.mint(kind::OU_LEVEL, i as u64),
                    "name": name,
                    "level": i + 1,
                })
            })
            .collect();

        // ---- org unit groups -------------------------------------------------------------
        let by = |pred: &dyn Fn(&Facility) -> bool| -> Vec<&String> {
            facilities
                .iter()
                .filter(|f| pred(f))
                .map(|f| &f.uid)
                .collect()
        };
        let group_specs: [(&str, &str, &str, Vec<&String>); 5] = [
            (
                "Hospitals",
                "Hospitals",
                "OUG_HOSPITAL",
                by(&|f| f.name.ends_with(" Hospital")),
            ),
            (
                "Health centres",
                "Health centres",
                "OUG_HEALTH_CENTRE",
                by(&|f| f.name.ends_with(" Health Centre")),
            ),
            (
                "Dispensaries",
                "Dispensaries",
                "OUG_DISPENSARY",
                by(&|f| f.name.ends_with(" Dispensary")),
            ),
            ("Urban", "Urban", "OUG_URBAN", by(&|f| f.urban)),
            ("Rural", "Rural", "OUG_RURAL", by(&|f| !f.urban)),
        ];
        let group_uids: Vec<String> = (0..5).map(|i| self.mint.mint(kind::OU_GROUP, i)).collect();
        let groups: Vec<Value> = group_specs
            .iter()
            .zip(&group_uids)
            .map(|((name, short, code, members), uid)| {
                json!({
                    "id": uid,
                    "name": name,
                    "shortName": short,
                    "code": code,
                    "organisationUnits": refs(members.iter().copied()),
                })
            })
            .collect();
        let group_sets = vec![
            json!({
                "id": self.mint.mint(kind::OU_GROUP_SET, 0),
                "name": "Facility type",
                "shortName": "Facility type",
                "code": "OUGS_FACILITY_TYPE",
                "compulsory": true,
                "dataDimension": true,
                "organisationUnitGroups": refs(&group_uids[0..3]),
            }),
            json!({
                "id": self.mint.mint(kind::OU_GROUP_SET, 1),
                "name": "Location",
                "shortName": "Location",
                "code": "OUGS_LOCATION",
                "compulsory": true,
                "dataDimension": true,
                "organisationUnitGroups": refs(&group_uids[3..5]),
            }),
        ];

        // ---- category model --------------------------------------------------------------
        let co_uids: Vec<String> = (0..CATEGORY_OPTIONS.len())
            .map(|i| self.mint.mint(kind::CATEGORY_OPTION, i as u64))
            .collect();
        let category_options: Vec<Value> = CATEGORY_OPTIONS
            .iter()
            .zip(&co_uids)
            .map(|((name, code), uid)| {
                json!({ "id": uid, "name": name, "shortName": name, "code": code })
            })
            .collect();
        let cat_uids: Vec<String> = (0..CATEGORIES.len())
            .map(|i| self.mint.mint(kind::CATEGORY, i as u64))
            .collect();
        let categories: Vec<Value> = CATEGORIES
            .iter()
            .zip(&cat_uids)
            .map(|((name, code, opts), uid)| {
                json!({
                    "id": uid,
                    "name": name,
                    "shortName": name,
                    "code": code,
                    "dataDimensionType": "DISAGGREGATION",
                    "dataDimension": true,
                    "categoryOptions": refs(opts.iter().map(|&o| &co_uids[o])),
                })
            })
            .collect();
        let combo_uids: Vec<String> = (0..COMBOS.len())
            .map(|i| self.mint.mint(kind::CATEGORY_COMBO, i as u64))
            .collect();
        let mut combos = Vec::new();
        let mut cocs = Vec::new();
        let mut coc_by_combo: Vec<Vec<String>> = Vec::new();
        let mut coc_index = 0u64;
        for ((_, name, code, cats), combo_uid) in COMBOS.iter().zip(&combo_uids) {
            combos.push(json!({
                "id": combo_uid,
                "name": name,
                "code": code,
                "dataDimensionType": "DISAGGREGATION",
                "skipTotal": false,
                "categories": refs(cats.iter().map(|&c| &cat_uids[c])),
            }));
            // Cartesian product in category order, the first category varying slowest.
            let mut combos_of_options: Vec<Vec<usize>> = vec![vec![]];
            for &c in cats.iter() {
                combos_of_options = combos_of_options
                    .into_iter()
                    .flat_map(|prefix| {
                        CATEGORIES[c].2.iter().map(move |&o| {
                            let mut v = prefix.clone();
                            v.push(o);
                            v
                        })
                    })
                    .collect();
            }
            let mut these = Vec::new();
            for opts in combos_of_options {
                let uid = self.mint.mint(kind::COC, coc_index);
                coc_index += 1;
                let name = opts
                    .iter()
                    .map(|&o| CATEGORY_OPTIONS[o].0)
                    .collect::<Vec<_>>()
                    .join(", ");
                let code = opts
                    .iter()
                    .map(|&o| CATEGORY_OPTIONS[o].1)
                    .collect::<Vec<_>>()
                    .join("_");
                cocs.push(json!({
                    "id": uid,
                    "name": name,
                    "code": format!("COC_{code}"),
                    "categoryCombo": r(combo_uid),
                    "categoryOptions": refs(opts.iter().map(|&o| &co_uids[o])),
                    "ignoreApproval": false,
                }));
                these.push(uid);
            }
            coc_by_combo.push(these);
        }
        let combo_uid = |c: Combo| -> String {
            match c {
                Combo::Default => DEFAULT_CATEGORY_COMBO.to_string(),
                Combo::AgeSex => combo_uids[0].clone(),
                Combo::Location => combo_uids[1].clone(),
            }
        };

        // ---- option sets -----------------------------------------------------------------
        let os_uids: Vec<String> = (0..OPTION_SETS.len())
            .map(|i| self.mint.mint(kind::OPTION_SET, i as u64))
            .collect();
        let mut option_sets = Vec::new();
        let mut options = Vec::new();
        let mut option_index = 0u64;
        for (spec, os_uid) in OPTION_SETS.iter().zip(&os_uids) {
            let mut ids = Vec::new();
            for (i, (code, name)) in spec.options.iter().enumerate() {
                let uid = self.mint.mint(kind::OPTION, option_index);
                option_index += 1;
                options.push(json!({
                    "id": uid,
                    "name": name,
                    "code": code,
                    "sortOrder": i + 1,
                    "optionSet": r(os_uid),
                }));
                ids.push(uid);
            }
            option_sets.push(json!({
                "id": os_uid,
                "name": spec.name,
                "code": spec.code,
                "valueType": "TEXT",
                "options": refs(&ids),
            }));
        }

        // ---- data elements ---------------------------------------------------------------
        let de_uids: Vec<String> = (0..DE_SPECS.len())
            .map(|i| self.mint.mint(kind::DATA_ELEMENT, i as u64))
            .collect();
        let data_elements: Vec<Value> = DE_SPECS
            .iter()
            .zip(&de_uids)
            .map(|(s, uid)| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), uid.clone().into());
                o.insert("name".into(), s.name.into());
                o.insert("shortName".into(), s.short.into());
                o.insert("code".into(), s.code.into());
                o.insert("formName".into(), s.form.into());
                o.insert(
                    "domainType".into(),
                    match s.domain {
                        Domain::Aggregate => "AGGREGATE",
                        Domain::Tracker => "TRACKER",
                    }
                    .into(),
                );
                o.insert("valueType".into(), s.value_type.into());
                o.insert("aggregationType".into(), s.aggregation.into());
                o.insert("zeroIsSignificant".into(), s.zero_significant.into());
                o.insert("categoryCombo".into(), r(&combo_uid(s.combo)));
                if let Some(os) = s.option_set {
                    o.insert("optionSet".into(), r(&os_uids[os]));
                }
                Value::Object(o)
            })
            .collect();

        // ---- data sets and sections ------------------------------------------------------
        let facility_refs = refs(facilities.iter().map(|f| &f.uid));
        let ds_uids: Vec<String> = (0..DS_SPECS.len())
            .map(|i| self.mint.mint(kind::DATA_SET, i as u64))
            .collect();
        let mut data_sets = Vec::new();
        let mut sections = Vec::new();
        let mut section_index = 0u64;
        for (spec, ds_uid) in DS_SPECS.iter().zip(&ds_uids) {
            let elements: Vec<usize> = spec
                .sections
                .iter()
                .flat_map(|(_, d)| d.iter().copied())
                .collect();
            data_sets.push(json!({
                "id": ds_uid,
                "name": spec.name,
                "shortName": spec.short,
                "code": spec.code,
                "periodType": spec.period_type,
                "categoryCombo": r(DEFAULT_CATEGORY_COMBO),
                "expiryDays": spec.expiry_days,
                "timelyDays": spec.timely_days,
                "openFuturePeriods": spec.open_future_periods,
                "dataSetElements": elements.iter().map(|&d| json!({
                    "dataSet": r(ds_uid),
                    "dataElement": r(&de_uids[d]),
                })).collect::<Vec<_>>(),
                "organisationUnits": facility_refs.clone(),
            }));
            for (i, (name, des)) in spec.sections.iter().enumerate() {
                sections.push(json!({
                    "id": self.mint.mint(kind::SECTION, section_index),
                    "name": name,
                    "dataSet": r(ds_uid),
                    "sortOrder": i + 1,
                    "dataElements": refs(des.iter().map(|&d| &de_uids[d])),
                }));
                section_index += 1;
            }
        }

        // ---- indicators, constants, validation rules -------------------------------------
        let it_uids: Vec<String> = (0..3)
            .map(|i| self.mint.mint(kind::INDICATOR_TYPE, i))
            .collect();
        let indicator_types = vec![
            json!({ "id": it_uids[0], "name": "Percent", "factor": 100, "number": false }),
            json!({ "id": it_uids[1], "name": "Per 1000", "factor": 1000, "number": false }),
            json!({ "id": it_uids[2], "name": "Number", "factor": 1, "number": true }),
        ];
        let constant_uid = self.mint.mint(kind::CONSTANT, 0);
        let constants = vec![json!({
            "id": constant_uid,
            "name": "Under-1 share of population",
            "shortName": "Under-1 share",
            "code": "UNDER_1_SHARE",
            "value": 0.04,
        })];
        let e = |d: usize| format!("#{{{}}}", de_uids[d]);
        let eco = |d: usize, coc: &str| format!("#{{{}.{}}}", de_uids[d], coc);
        let u5_of = |d: usize| {
            format!(
                "{} + {}",
                eco(d, &coc_by_combo[0][0]),
                eco(d, &coc_by_combo[0][1])
            )
        };
        let indicator_specs: Vec<IndicatorRow> = vec![
            (
                "Malaria test positivity rate (%)",
                "Malaria test positivity",
                "IN_MAL_TPR",
                e(de::MAL_CONFIRMED),
                "Confirmed malaria cases",
                e(de::MAL_TESTED),
                "Suspected cases tested",
                0,
                false,
            ),
            (
                "Malaria test positivity, under 5 (%)",
                "Malaria test positivity <5",
                "IN_MAL_TPR_U5",
                u5_of(de::MAL_CONFIRMED),
                "Confirmed malaria cases under 5",
                u5_of(de::MAL_TESTED),
                "Suspected cases under 5 tested",
                0,
                false,
            ),
            (
                "ACT treatment rate (%)",
                "ACT treatment rate",
                "IN_MAL_ACT_RATE",
                e(de::MAL_TREATED),
                "Confirmed cases treated with ACT",
                e(de::MAL_CONFIRMED),
                "Confirmed malaria cases",
                0,
                false,
            ),
            (
                "Malaria deaths per 1000 confirmed",
                "Malaria deaths per 1000 cases",
                "IN_MAL_CFR",
                e(de::MAL_DEATHS),
                "Malaria deaths",
                e(de::MAL_CONFIRMED),
                "Confirmed malaria cases",
                1,
                false,
            ),
            (
                "Penta 3 coverage (%)",
                "Penta 3 coverage",
                "IN_EPI_PENTA3_COV",
                e(de::EPI_PENTA3),
                "Penta 3 doses given",
                e(de::POP_INFANTS),
                "Surviving infants",
                0,
                true,
            ),
            (
                "Penta 3 coverage, estimated infants (%)",
                "Penta 3 coverage (est. infants)",
                "IN_EPI_PENTA3_COV_EST",
                e(de::EPI_PENTA3),
                "Penta 3 doses given",
                format!("{} * C{{{constant_uid}}}", e(de::POP_TOTAL)),
                "Total population × under-1 share",
                0,
                true,
            ),
            (
                "Measles 1 coverage (%)",
                "Measles 1 coverage",
                "IN_EPI_MEASLES1_COV",
                e(de::EPI_MEASLES1),
                "Measles 1 doses given",
                e(de::POP_INFANTS),
                "Surviving infants",
                0,
                true,
            ),
            (
                "Penta 1 - Penta 3 dropout rate (%)",
                "Penta 1-3 dropout rate",
                "IN_EPI_PENTA_DROPOUT",
                format!("{} - {}", e(de::EPI_PENTA1), e(de::EPI_PENTA3)),
                "Penta 1 minus Penta 3 doses",
                e(de::EPI_PENTA1),
                "Penta 1 doses given",
                0,
                false,
            ),
            (
                "ANC 4 coverage (%)",
                "ANC 4 coverage",
                "IN_ANC4_COV",
                e(de::ANC_4),
                "ANC 4th visits",
                e(de::POP_PREGNANCIES),
                "Expected pregnancies",
                0,
                true,
            ),
        ];
        let indicators: Vec<Value> = indicator_specs
            .into_iter()
            .enumerate()
            .map(
                |(i, (name, short, code, num, num_d, den, den_d, it, annualized))| {
                    json!({
                        "id": self.mint.mint(kind::INDICATOR, i as u64),
                        "name": name,
                        "shortName": short,
                        "code": code,
                        "numerator": num,
                        "numeratorDescription": num_d,
                        "denominator": den,
                        "denominatorDescription": den_d,
                        "indicatorType": r(&it_uids[it]),
                        "annualized": annualized,
                        "decimals": 1,
                    })
                },
            )
            .collect();

        // (name, code, importance, left, left desc, right, right desc, group)
        let rule_specs = [
            (
                "Malaria positives ≤ tested",
                "VR_MAL_POS_LE_TESTED",
                "HIGH",
                de::MAL_CONFIRMED,
                "Confirmed malaria cases",
                de::MAL_TESTED,
                "Suspected cases tested",
                0,
            ),
            (
                "ACT treated ≤ positives",
                "VR_MAL_ACT_LE_POS",
                "MEDIUM",
                de::MAL_TREATED,
                "Cases treated with ACT",
                de::MAL_CONFIRMED,
                "Confirmed malaria cases",
                0,
            ),
            (
                "Penta 3 ≤ Penta 1",
                "VR_EPI_PENTA3_LE_PENTA1",
                "MEDIUM",
                de::EPI_PENTA3,
                "Penta 3 doses",
                de::EPI_PENTA1,
                "Penta 1 doses",
                1,
            ),
            (
                "ANC 4 ≤ ANC 1",
                "VR_ANC4_LE_ANC1",
                "MEDIUM",
                de::ANC_4,
                "ANC 4th visits",
                de::ANC_1,
                "ANC 1st visits",
                1,
            ),
            (
                "Fully immunized ≤ Measles 1",
                "VR_EPI_FULLY_LE_MEASLES1",
                "LOW",
                de::EPI_FULLY,
                "Children fully immunized",
                de::EPI_MEASLES1,
                "Measles 1 doses",
                1,
            ),
        ];
        let mut rule_groups: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        let validation_rules: Vec<Value> = rule_specs
            .iter()
            .enumerate()
            .map(|(i, (name, code, importance, l, ld, rt, rd, g))| {
                let uid = self.mint.mint(kind::VALIDATION_RULE, i as u64);
                rule_groups[*g].push(uid.clone());
                json!({
                    "id": uid,
                    "name": name,
                    "code": code,
                    "description": format!("{ld} must not exceed {}", rd.to_lowercase()),
                    "instruction": format!("Check the register: {} cannot be more than {}.", ld.to_lowercase(), rd.to_lowercase()),
                    "importance": importance,
                    "periodType": "Monthly",
                    "operator": "less_than_or_equal_to",
                    // The right side never skips, so a left side reported without its
                    // reference count is flagged rather than silently passing.
                    "leftSide": {
                        "expression": e(*l),
                        "description": ld,
                        "missingValueStrategy": "SKIP_IF_ALL_VALUES_MISSING",
                    },
                    "rightSide": {
                        "expression": e(*rt),
                        "description": rd,
                        "missingValueStrategy": "NEVER_SKIP",
                    },
                    "organisationUnitLevels": [4],
                })
            })
            .collect();
        let validation_rule_groups = vec![
            json!({
                "id": self.mint.mint(kind::VALIDATION_RULE_GROUP, 0),
                "name": "Malaria",
                "code": "VRG_MALARIA",
                "validationRules": refs(&rule_groups[0]),
            }),
            json!({
                "id": self.mint.mint(kind::VALIDATION_RULE_GROUP, 1),
                "name": "EPI/ANC",
                "code": "VRG_EPI_ANC",
                "validationRules": refs(&rule_groups[1]),
            }),
        ];

        // ---- event program ---------------------------------------------------------------
        let program_uid = self.mint.mint(kind::PROGRAM, 0);
        let stage_uid = self.mint.mint(kind::PROGRAM_STAGE, 0);
        let programs = vec![json!({
            "id": program_uid,
            "name": "Malaria case investigation",
            "shortName": "Malaria case investigation",
            "code": "MALARIA_CASE_INVESTIGATION",
            "programType": "WITHOUT_REGISTRATION",
            "categoryCombo": r(DEFAULT_CATEGORY_COMBO),
            "organisationUnits": facility_refs,
            "programStages": [r(&stage_uid)],
        })];
        let program_stages = vec![json!({
            "id": stage_uid,
            "name": "Malaria case",
            "program": r(&program_uid),
            "sortOrder": 1,
            "repeatable": false,
            "programStageDataElements": STAGE_ELEMENTS.iter().enumerate().map(|(i, (d, compulsory))| json!({
                "dataElement": r(&de_uids[*d]),
                "compulsory": compulsory,
                "sortOrder": i + 1,
            })).collect::<Vec<_>>(),
        })];

        // ---- roles and users -------------------------------------------------------------
        let role_uids: Vec<String> = (0..ROLES.len())
            .map(|i| self.mint.mint(kind::USER_ROLE, i as u64))
            .collect();
        let user_roles: Vec<Value> = ROLES
            .iter()
            .zip(&role_uids)
            .map(|((name, code, description, auths), uid)| {
                json!({
                    "id": uid,
                    "name": name,
                    "code": code,
                    "description": description,
                    "authorities": auths,
                })
            })
            .collect();
        let mut user_values = Vec::with_capacity(users.len());
        let mut logins = Vec::with_capacity(users.len());
        for (i, u) in users.iter().enumerate() {
            let mut o = serde_json::Map::new();
            o.insert("id".into(), self.mint.mint(kind::USER, i as u64).into());
            o.insert("username".into(), u.username.clone().into());
            o.insert("password".into(), u.password.into());
            o.insert("firstName".into(), u.first.clone().into());
            o.insert("surname".into(), u.surname.clone().into());
            o.insert(
                "email".into(),
                format!("{}@health.kuruma.example", u.username).into(),
            );
            if let Some(p) = &u.phone {
                o.insert("phoneNumber".into(), p.clone().into());
            }
            o.insert("userRoles".into(), json!([r(&role_uids[u.role])]));
            o.insert("organisationUnits".into(), json!([r(&u.capture)]));
            o.insert("dataViewOrganisationUnits".into(), json!([r(&u.view)]));
            user_values.push(Value::Object(o));
            logins.push(DemoLogin {
                username: u.username.clone(),
                password: u.password.to_string(),
                role: ROLES[u.role].0.to_string(),
                org_unit: u.capture_name.clone(),
                phone_number: u.phone.clone(),
            });
        }

        // ---- payload ---------------------------------------------------------------------
        let mut payload = serde_json::Map::new();
        let mut put = |k: &str, v: Vec<Value>| {
            payload.insert(k.to_string(), Value::Array(v));
        };
        put("organisationUnits", org_units);
        put("organisationUnitLevels", levels);
        put("organisationUnitGroups", groups);
        put("organisationUnitGroupSets", group_sets);
        put("categoryOptions", category_options);
        put("categories", categories);
        put("categoryCombos", combos);
        put("categoryOptionCombos", cocs);
        put("optionSets", option_sets);
        put("options", options);
        put("dataElements", data_elements);
        put("dataSets", data_sets);
        put("sections", sections);
        put("indicatorTypes", indicator_types);
        put("indicators", indicators);
        put("constants", constants);
        put("validationRules", validation_rules);
        put("validationRuleGroups", validation_rule_groups);
        put("programs", programs);
        put("programStages", program_stages);
        put("userRoles", user_roles);
        put("users", user_values);
        // Facility reporters send the ANC form by SMS: `anc a1=12|a4=5|ip=7|hiv=10`.
        let anc_codes = [
            ("a1", de::ANC_1),
            ("a4", de::ANC_4),
            ("ip", de::ANC_IPTP2),
            ("hiv", de::ANC_HIV),
        ];
        put(
            "smsCommands",
            vec![json!({
                "id": self.mint.mint(kind::SMS_COMMAND, 0),
                "name": "anc",
                "parserType": "KEY_VALUE_PARSER",
                "separator": "=",
                "dataset": r(&ds_uids[Ds::Anc as usize]),
                "completenessMethod": "AT_LEAST_ONE_DATAVALUE",
                "smsCodes": anc_codes.iter().map(|(code, d)| json!({
                    "code": code,
                    "dataElement": r(&de_uids[*d]),
                    "optionId": r(DEFAULT_CATEGORY_OPTION_COMBO),
                })).collect::<Vec<_>>(),
            })],
        );

        // ---- report slots ----------------------------------------------------------------
        let mut slots: Vec<Slot> = Vec::new();
        for y in months[0].start.year()..=end_year {
            slots.push(Slot {
                period: Period::year(y),
                ds: Ds::Population,
            });
        }
        for m in &months {
            for ds in DATA_SETS.iter().filter(|d| **d != Ds::Population) {
                slots.push(Slot {
                    period: m.clone(),
                    ds: *ds,
                });
            }
        }
        // A year's population estimates precede that year's first monthly reports.
        slots.sort_by_key(|a| (a.period.start, a.ds));
        let malaria_slots = months
            .iter()
            .map(|m| {
                slots
                    .iter()
                    .position(|s| s.ds == Ds::Malaria && s.period.iso == m.iso)
                    .expect("every month has a malaria slot")
            })
            .collect();

        let state = State {
            data_key: derive_key(self.opts.seed, "data"),
            end_year,
            facilities,
            districts,
            slots,
            months,
            malaria_slots,
            de: de_uids,
            coc_age_sex: coc_by_combo[0].clone(),
            coc_location: coc_by_combo[1].clone(),
            data_sets: ds_uids,
            program: program_uid,
            stage: stage_uid,
        };
        DemoCountry {
            metadata: Value::Object(payload),
            logins,
            state,
        }
    }

    /// Uneven facility counts per district (weights 0.5–2.0); every district gets at least one
    /// facility when there are enough to go round.
    fn allocate_facilities(&mut self) -> [usize; 16] {
        let n = self.opts.facilities;
        let weights: Vec<f64> = (0..16).map(|_| uniform(&mut self.rng, 0.5, 2.0)).collect();
        let mut counts = [0usize; 16];
        if n < 16 {
            let mut order: Vec<usize> = (0..16).collect();
            order.shuffle(&mut self.rng);
            for &d in order.iter().take(n) {
                counts[d] = 1;
            }
            return counts;
        }
        let rest = (n - 16) as f64;
        let total: f64 = weights.iter().sum();
        let mut remainders = Vec::with_capacity(16);
        let mut assigned = 0;
        for d in 0..16 {
            let share = rest * weights[d] / total;
            let whole = share.floor() as usize;
            counts[d] = 1 + whole;
            assigned += 1 + whole;
            remainders.push((share - whole as f64, d));
        }
        remainders.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, d) in remainders.iter().take(n - assigned) {
            counts[d] += 1;
        }
        counts
    }

    /// The ~100 demo users. Workers and reporters go to facilities that stay open for the whole
    /// window, one facility each while there are enough, so each facility has one data enterer.
    fn users(
        &mut self,
        national_uid: &str,
        districts: &[District],
        facilities: &mut [Facility],
    ) -> Vec<UserSpec> {
        let mut rng = stream(&derive_key(self.opts.seed, "people"), 0);
        let person = |rng: &mut ChaCha8Rng| {
            (
                FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())].to_string(),
                place_word(rng),
            )
        };
        // Ofcom's drama range (+44 7700 900000–900999) is reserved for fiction, so a demo that is
        // wired to a real SMS gateway cannot text a real person.
        let mut phone_pool: Vec<u32> = (0..1000).collect();
        phone_pool.shuffle(&mut rng);
        let mut phones = phone_pool.into_iter().map(|n| format!("+447700900{n:03}"));

        let mut users = vec![
            UserSpec {
                username: ADMIN_USERNAME.into(),
                password: "district",
                first: "System".into(),
                surname: "Administrator".into(),
                phone: None,
                role: ROLE_SUPERUSER,
                capture: national_uid.into(),
                capture_name: COUNTRY_NAME.into(),
                view: national_uid.into(),
            },
            {
                let (first, surname) = person(&mut rng);
                UserSpec {
                    username: "manager".into(),
                    password: "Manager123!",
                    first,
                    surname,
                    phone: None,
                    role: ROLE_DATA_MANAGER,
                    capture: national_uid.into(),
                    capture_name: COUNTRY_NAME.into(),
                    view: national_uid.into(),
                }
            },
        ];
        for (di, d) in districts.iter().enumerate() {
            let slug = username_part(&d.name);
            let (first, surname) = person(&mut rng);
            users.push(UserSpec {
                username: format!("sup.{slug}"),
                password: "Supervisor123!",
                first,
                surname,
                phone: None,
                role: ROLE_SUPERVISOR,
                capture: d.uid.clone(),
                capture_name: d.name.clone(),
                view: d.uid.clone(),
            });
            let in_district: Vec<usize> = (0..facilities.len())
                .filter(|&i| facilities[i].district == di)
                .collect();
            if in_district.is_empty() {
                continue;
            }
            let stable: Vec<usize> = in_district
                .iter()
                .copied()
                .filter(|&i| {
                    facilities[i].closing.is_none() && facilities[i].opening < self.window_floor()
                })
                .collect();
            let pool = if stable.is_empty() {
                in_district
            } else {
                stable
            };
            let accounts = [
                ("chw", 1, "Worker123!", ROLE_HEALTH_WORKER),
                ("chw", 2, "Worker123!", ROLE_HEALTH_WORKER),
                ("chw", 3, "Worker123!", ROLE_HEALTH_WORKER),
                ("fac", 1, "Reporter123!", ROLE_REPORTER),
                ("fac", 2, "Reporter123!", ROLE_REPORTER),
            ];
            for (k, (prefix, n, password, role)) in accounts.into_iter().enumerate() {
                let fi = pool[k % pool.len()];
                let username = format!("{prefix}.{slug}.{n}");
                if facilities[fi].stored_by.is_none() {
                    facilities[fi].stored_by = Some(username.clone());
                }
                let (first, surname) = person(&mut rng);
                users.push(UserSpec {
                    username,
                    password,
                    first,
                    surname,
                    phone: phones.next(),
                    role,
                    capture: facilities[fi].uid.clone(),
                    capture_name: facilities[fi].name.clone(),
                    view: facilities[fi].uid.clone(),
                });
            }
        }
        users
    }

    /// Facilities opened before this date were open for the whole data window.
    fn window_floor(&self) -> Date {
        let (y, m) = self.opts.end_period;
        let k = y * 12 + m as i32 - 1 - (MONTHS_OF_DATA as i32 - 1);
        date(k.div_euclid(12), (k.rem_euclid(12) + 1) as u8, 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    fn opts(facilities: usize) -> DemoOptions {
        DemoOptions {
            facilities,
            end_period: (2024, 6),
            seed: 7,
        }
    }

    fn is_uid(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 11
            && b[0].is_ascii_alphabetic()
            && b[1..].iter().all(|c| c.is_ascii_alphanumeric())
    }

    fn arr<'a>(m: &'a Value, key: &str) -> &'a Vec<Value> {
        m[key].as_array().unwrap_or_else(|| panic!("{key} missing"))
    }

    fn all_ids(m: &Value) -> Vec<String> {
        m.as_object()
            .unwrap()
            .values()
            .flat_map(|v| v.as_array().unwrap())
            .filter_map(|o| o["id"].as_str().map(str::to_string))
            .collect()
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.len() == 1 {
                    if let Some(Value::String(id)) = o.get("id") {
                        out.push(id.clone());
                        return;
                    }
                }
                o.values().for_each(|x| collect_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }

    fn first_values(c: &DemoCountry, n: usize) -> Vec<DemoDataValue> {
        let mut v = Vec::new();
        c.for_each_data_value(|x| {
            if v.len() < n {
                v.push(x)
            }
        });
        v
    }

    #[test]
    fn same_inputs_give_identical_output() {
        let a = generate(&opts(120));
        let b = generate(&opts(120));
        assert_eq!(
            serde_json::to_string(&a.metadata).unwrap(),
            serde_json::to_string(&b.metadata).unwrap()
        );
        assert_eq!(a.logins, b.logins);
        assert_eq!(first_values(&a, 1000), first_values(&b, 1000));
        assert_eq!(first_values(&a, 1000).len(), 1000);
        let events = |c: &DemoCountry| {
            let mut v = Vec::new();
            c.for_each_event(|e| v.push(e));
            v
        };
        assert_eq!(events(&a), events(&b));
        let completions = |c: &DemoCountry| {
            let mut v = Vec::new();
            c.for_each_completion(|e| v.push(e));
            v
        };
        assert_eq!(completions(&a), completions(&b));

        let other = generate(&DemoOptions {
            seed: 8,
            ..opts(120)
        });
        assert_ne!(a.metadata, other.metadata);
    }

    #[test]
    fn uids_are_valid_and_unique() {
        let c = generate(&opts(500));
        let ids = all_ids(&c.metadata);
        let mut seen = HashSet::new();
        for id in &ids {
            assert!(is_uid(id), "invalid uid {id}");
            assert!(
                !DEFAULT_UIDS.contains(&id.as_str()),
                "default uid reused: {id}"
            );
            assert!(seen.insert(id.clone()), "duplicate uid {id}");
        }
        // Every object in every type array carries an id.
        for (k, v) in c.metadata.as_object().unwrap() {
            for o in v.as_array().unwrap() {
                assert!(o["id"].is_string(), "object without id in {k}");
            }
        }
        let mut event_ids = HashSet::new();
        c.for_each_event(|e| {
            assert!(is_uid(&e.uid));
            assert!(!seen.contains(&e.uid));
            assert!(event_ids.insert(e.uid));
        });
        assert!(!event_ids.is_empty());
    }

    #[test]
    fn references_resolve() {
        let c = generate(&opts(200));
        let ids: HashSet<String> = all_ids(&c.metadata).into_iter().collect();
        let mut refs = Vec::new();
        for v in c.metadata.as_object().unwrap().values() {
            for o in v.as_array().unwrap() {
                for (k, x) in o.as_object().unwrap() {
                    if k != "id" {
                        collect_refs(x, &mut refs);
                    }
                }
            }
        }
        assert!(refs.len() > 1000);
        for id in &refs {
            assert!(
                ids.contains(id) || DEFAULT_UIDS.contains(&id.as_str()),
                "dangling reference {id}"
            );
        }
        // Expressions refer to existing data elements, option combos and constants.
        let mut expressions = Vec::new();
        for i in arr(&c.metadata, "indicators") {
            expressions.push(i["numerator"].as_str().unwrap().to_string());
            expressions.push(i["denominator"].as_str().unwrap().to_string());
        }
        for vr in arr(&c.metadata, "validationRules") {
            expressions.push(vr["leftSide"]["expression"].as_str().unwrap().to_string());
            expressions.push(vr["rightSide"]["expression"].as_str().unwrap().to_string());
        }
        for ex in expressions {
            for part in ex.split(['{', '}', '.']) {
                if part.len() == 11 && is_uid(part) {
                    assert!(ids.contains(part), "expression {ex} names unknown {part}");
                }
            }
            assert!(ex.contains('{'));
        }
    }

    #[test]
    fn category_option_combos_cover_every_combination() {
        let c = generate(&opts(20));
        let m = &c.metadata;
        let cats: HashMap<&str, &Value> = arr(m, "categories")
            .iter()
            .map(|x| (x["id"].as_str().unwrap(), x))
            .collect();
        let opt_names: HashMap<&str, &str> = arr(m, "categoryOptions")
            .iter()
            .map(|x| (x["id"].as_str().unwrap(), x["name"].as_str().unwrap()))
            .collect();
        let opt_names = &opt_names;
        for combo in arr(m, "categoryCombos") {
            let cid = combo["id"].as_str().unwrap();
            let mut expected = vec![String::new()];
            for cat in combo["categories"].as_array().unwrap() {
                let cat = cats[cat["id"].as_str().unwrap()];
                expected = expected
                    .iter()
                    .flat_map(|p| {
                        cat["categoryOptions"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(move |o| {
                                let n = opt_names[o["id"].as_str().unwrap()];
                                if p.is_empty() {
                                    n.to_string()
                                } else {
                                    format!("{p}, {n}")
                                }
                            })
                    })
                    .collect();
            }
            let actual: Vec<String> = arr(m, "categoryOptionCombos")
                .iter()
                .filter(|x| x["categoryCombo"]["id"] == cid)
                .map(|x| x["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(actual, expected);
        }
        assert_eq!(arr(m, "categoryOptionCombos").len(), 8);
    }

    #[test]
    fn facility_count_follows_options() {
        for n in [50usize, 15000] {
            let started = std::time::Instant::now();
            let c = generate(&opts(n));
            let elapsed = started.elapsed();
            let m = &c.metadata;
            let ous = arr(m, "organisationUnits");
            assert_eq!(ous.len(), 1 + 4 + 16 + n);
            let facility_codes = ous
                .iter()
                .filter(|o| o["code"].as_str().unwrap().starts_with("KU_F"))
                .count();
            assert_eq!(facility_codes, n);
            for ds in arr(m, "dataSets") {
                assert_eq!(ds["organisationUnits"].as_array().unwrap().len(), n);
            }
            assert_eq!(
                arr(m, "programs")[0]["organisationUnits"]
                    .as_array()
                    .unwrap()
                    .len(),
                n
            );
            let users = arr(m, "users").len();
            assert!((90..=100).contains(&users), "{users} users");
            if n == 15000 {
                // Generous for unoptimised test builds; release builds take a fraction of this.
                assert!(elapsed.as_secs_f64() < 10.0, "took {elapsed:?}");
                let names: HashSet<&str> =
                    ous.iter().map(|o| o["name"].as_str().unwrap()).collect();
                assert_eq!(names.len(), ous.len(), "org unit names are globally unique");
            }
        }
        // Fewer facilities than districts still works; empty districts just have no workers.
        let tiny = generate(&opts(5));
        assert_eq!(arr(&tiny.metadata, "organisationUnits").len(), 26);
    }

    #[test]
    fn org_unit_structure() {
        let c = generate(&opts(400));
        let ous = arr(&c.metadata, "organisationUnits");
        let by_id: HashMap<&str, &Value> =
            ous.iter().map(|o| (o["id"].as_str().unwrap(), o)).collect();
        let level = |o: &Value| {
            let mut l = 1;
            let mut cur = o;
            while let Some(p) = cur["parent"]["id"].as_str() {
                cur = by_id[p];
                l += 1;
            }
            l
        };
        let mut per_level = [0usize; 5];
        let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut district_sizes: BTreeMap<String, usize> = BTreeMap::new();
        for o in ous {
            let l = level(o);
            per_level[l] += 1;
            let name = o["name"].as_str().unwrap();
            assert!(o["shortName"].as_str().unwrap().chars().count() <= 50);
            let parent = o["parent"]["id"].as_str().unwrap_or("").to_string();
            assert!(
                siblings
                    .entry(parent.clone())
                    .or_default()
                    .insert(name.to_string()),
                "duplicate sibling name {name}"
            );
            let geometry_type = o["geometry"]["type"].as_str().unwrap();
            assert_eq!(geometry_type, if l == 4 { "Point" } else { "Polygon" });
            if l == 4 {
                *district_sizes.entry(parent.clone()).or_default() += 1;
                // The point lies inside the parent's rectangle.
                let p = &o["geometry"]["coordinates"];
                let ring = &by_id[parent.as_str()]["geometry"]["coordinates"][0];
                let (w, s) = (ring[0][0].as_f64().unwrap(), ring[0][1].as_f64().unwrap());
                let (e, n) = (ring[2][0].as_f64().unwrap(), ring[2][1].as_f64().unwrap());
                let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                assert!(
                    x > w && x < e && y > s && y < n,
                    "{name} outside its district"
                );
                let suffix_ok = ["Hospital", "Health Centre", "Dispensary"]
                    .iter()
                    .any(|s| name.ends_with(s));
                assert!(suffix_ok, "{name}");
            }
        }
        assert_eq!(per_level, [0, 1, 4, 16, 400]);
        let sizes: BTreeSet<usize> = district_sizes.values().copied().collect();
        assert!(
            sizes.len() > 4,
            "district sizes should be uneven: {sizes:?}"
        );
        let opened = ous
            .iter()
            .filter(|o| o["openingDate"].as_str().unwrap() != "1990-01-01")
            .count();
        let closed = ous.iter().filter(|o| o.get("closedDate").is_some()).count();
        assert!(opened > 0 && opened < 40, "{opened}");
        assert!(closed > 0 && closed < 20, "{closed}");
        // Group membership agrees with the name suffix and covers every facility exactly once.
        let groups = arr(&c.metadata, "organisationUnitGroups");
        let members = |i: usize| groups[i]["organisationUnits"].as_array().unwrap().len();
        assert_eq!(members(0) + members(1) + members(2), 400);
        assert_eq!(members(3) + members(4), 400);
        for g in &groups[0..3] {
            let suffix = match g["name"].as_str().unwrap() {
                "Hospitals" => " Hospital",
                "Health centres" => " Health Centre",
                _ => " Dispensary",
            };
            for m in g["organisationUnits"].as_array().unwrap() {
                assert!(by_id[m["id"].as_str().unwrap()]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with(suffix));
            }
        }
    }

    struct Index {
        facilities: HashMap<String, (Date, Option<Date>)>,
        /// data element → (value type, zero significant, option codes, allowed COCs)
        elements: HashMap<String, (String, bool, Vec<String>, HashSet<String>)>,
        /// (data set, org unit) assignment and the elements of each set
        ds_elements: HashMap<String, HashSet<String>>,
        ds_orgunits: HashMap<String, HashSet<String>>,
        ds_period_type: HashMap<String, String>,
        codes: HashMap<String, String>,
    }

    fn parse_date(s: &str) -> Date {
        let p: Vec<u32> = s.split('-').map(|x| x.parse().unwrap()).collect();
        date(p[0] as i32, p[1] as u8, p[2] as u8)
    }

    fn index(m: &Value) -> Index {
        let mut facilities = HashMap::new();
        for o in arr(m, "organisationUnits") {
            if o["code"].as_str().unwrap().starts_with("KU_F") {
                facilities.insert(
                    o["id"].as_str().unwrap().to_string(),
                    (
                        parse_date(o["openingDate"].as_str().unwrap()),
                        o.get("closedDate").map(|d| parse_date(d.as_str().unwrap())),
                    ),
                );
            }
        }
        let mut combo_cocs: HashMap<String, HashSet<String>> = HashMap::new();
        combo_cocs.insert(
            DEFAULT_CATEGORY_COMBO.into(),
            [DEFAULT_CATEGORY_OPTION_COMBO.to_string()]
                .into_iter()
                .collect(),
        );
        for coc in arr(m, "categoryOptionCombos") {
            combo_cocs
                .entry(coc["categoryCombo"]["id"].as_str().unwrap().into())
                .or_default()
                .insert(coc["id"].as_str().unwrap().into());
        }
        let mut option_codes: HashMap<String, Vec<String>> = HashMap::new();
        for o in arr(m, "options") {
            option_codes
                .entry(o["optionSet"]["id"].as_str().unwrap().into())
                .or_default()
                .push(o["code"].as_str().unwrap().into());
        }
        let mut elements = HashMap::new();
        let mut codes = HashMap::new();
        for d in arr(m, "dataElements") {
            let id = d["id"].as_str().unwrap().to_string();
            codes.insert(id.clone(), d["code"].as_str().unwrap().to_string());
            elements.insert(
                id,
                (
                    d["valueType"].as_str().unwrap().to_string(),
                    d["zeroIsSignificant"].as_bool().unwrap(),
                    d["optionSet"]["id"]
                        .as_str()
                        .map(|os| option_codes[os].clone())
                        .unwrap_or_default(),
                    combo_cocs[d["categoryCombo"]["id"].as_str().unwrap()].clone(),
                ),
            );
        }
        let mut ds_elements = HashMap::new();
        let mut ds_orgunits = HashMap::new();
        let mut ds_period_type = HashMap::new();
        for ds in arr(m, "dataSets") {
            let id = ds["id"].as_str().unwrap().to_string();
            ds_elements.insert(
                id.clone(),
                ds["dataSetElements"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["dataElement"]["id"].as_str().unwrap().to_string())
                    .collect(),
            );
            ds_orgunits.insert(
                id.clone(),
                ds["organisationUnits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["id"].as_str().unwrap().to_string())
                    .collect(),
            );
            ds_period_type.insert(id, ds["periodType"].as_str().unwrap().to_string());
        }
        Index {
            facilities,
            elements,
            ds_elements,
            ds_orgunits,
            ds_period_type,
            codes,
        }
    }

    fn period_bounds(p: &str) -> (Date, Date) {
        let y: i32 = p[0..4].parse().unwrap();
        if p.len() == 4 {
            (date(y, 1, 1), date(y, 12, 31))
        } else {
            let m: u8 = p[4..6].parse().unwrap();
            (date(y, m, 1), month_end(y, m))
        }
    }

    fn valid_for_type(value_type: &str, v: &str) -> bool {
        match value_type {
            "INTEGER_ZERO_OR_POSITIVE" => {
                v == "0"
                    || (!v.starts_with('0')
                        && !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_digit()))
            }
            "BOOLEAN" => v == "true" || v == "false",
            "TEXT" | "LONG_TEXT" => !v.trim().is_empty(),
            _ => false,
        }
    }

    #[test]
    fn data_values_are_consistent_with_metadata() {
        let c = generate(&opts(300));
        let ix = index(&c.metadata);
        let usernames: HashSet<String> = c.logins.iter().map(|l| l.username.clone()).collect();
        let mut count = 0usize;
        let mut keys = HashSet::new();
        let mut totals: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        let mut reports: BTreeMap<(String, String, String), OffsetDateTime> = BTreeMap::new();
        let (mut late, mut texts, mut stock, mut comments) = (0usize, 0usize, 0usize, 0usize);
        let mut periods = BTreeSet::new();
        c.for_each_data_value(|v| {
            count += 1;
            let (opening, closing) = ix
                .facilities
                .get(&v.org_unit)
                .copied()
                .expect("value on a non-facility");
            let (vt, zero_sig, codes, cocs) = &ix.elements[&v.data_element];
            assert!(
                cocs.contains(&v.category_option_combo),
                "COC not in element's combo"
            );
            assert_eq!(v.attribute_option_combo, DEFAULT_CATEGORY_OPTION_COMBO);
            assert!(valid_for_type(vt, &v.value), "{vt} {}", v.value);
            if !codes.is_empty() {
                assert!(codes.contains(&v.value));
                stock += 1;
            }
            if vt == "LONG_TEXT" {
                texts += 1;
            }
            if v.comment.is_some() {
                comments += 1;
            }
            if !zero_sig && vt.starts_with("INTEGER") {
                assert_ne!(v.value, "0", "insignificant zero stored");
            }
            let ds = ix
                .ds_elements
                .iter()
                .filter(|(_, des)| des.contains(&v.data_element))
                .map(|(ds, _)| ds.clone())
                .find(|ds| ix.ds_orgunits[ds].contains(&v.org_unit))
                .expect("element not in a data set assigned to the org unit");
            let (start, end) = period_bounds(&v.period);
            periods.insert(v.period.clone());
            assert_eq!(ix.ds_period_type[&ds] == "Yearly", v.period.len() == 4);
            assert!(end >= opening, "value before opening");
            if v.period.len() == 6 {
                assert!(start >= opening, "monthly value before opening");
                let after = (v.created.date() - end).whole_days();
                assert!(
                    (1..=40).contains(&after),
                    "created {after} days after period end"
                );
                if after > 10 {
                    late += 1;
                }
            }
            if let Some(cl) = closing {
                // A year counts when the facility was open during part of it (as DHIS2 judges an org
                // unit open for a period); a month only when it was open throughout.
                let last_day = if v.period.len() == 4 { start } else { end };
                assert!(last_day < cl, "value after closing");
                assert!(v.created.date() < cl, "value created after closing");
            }
            assert!(v.stored_by == "admin" || usernames.contains(&v.stored_by));
            assert!(
                keys.insert((
                    v.data_element.clone(),
                    v.period.clone(),
                    v.org_unit.clone(),
                    v.category_option_combo.clone()
                )),
                "duplicate key"
            );
            let key = (ds.clone(), v.period.clone(), v.org_unit.clone());
            let created = *reports.entry(key).or_insert(v.created);
            assert_eq!(created, v.created);
            let code = &ix.codes[&v.data_element];
            if code == "MAL_TESTED"
                || code == "MAL_CONFIRMED"
                || code == "EPI_PENTA1"
                || code == "EPI_PENTA3"
            {
                *totals
                    .entry((code.clone(), v.period.clone(), v.org_unit.clone()))
                    .or_default() += v.value.parse::<u64>().unwrap();
            }
        });
        assert!(count > 100_000, "{count}");
        assert_eq!(periods.len(), 24 + 3);
        assert!(texts > 0 && stock > 0 && comments > 0);
        let monthly_reports = reports.keys().filter(|k| k.1.len() == 6).count();
        let late_share = late as f64 / count as f64;
        assert!(
            (0.07..0.18).contains(&late_share),
            "late share {late_share}"
        );

        let violations = |left: &str, right: &str| {
            totals
                .iter()
                .filter(|((code, pe, ou), v)| {
                    code == left
                        && **v
                            > totals
                                .get(&(right.to_string(), pe.clone(), ou.clone()))
                                .copied()
                                .unwrap_or(0)
                })
                .count()
        };
        let mal = violations("MAL_CONFIRMED", "MAL_TESTED");
        let epi = violations("EPI_PENTA3", "EPI_PENTA1");
        assert!(mal >= 1, "no positives > tested violation");
        assert!(epi >= 1, "no Penta 3 > Penta 1 violation");
        assert!(
            ((mal + epi) as f64) < monthly_reports as f64 * 0.01,
            "too many violations: {mal} {epi}"
        );

        // Reporting gaps: roughly 8 % of expected facility-months are missing per data set.
        let mal_ds = ix
            .ds_period_type
            .iter()
            .find(|(_, t)| *t == "Monthly")
            .map(|(d, _)| d.clone())
            .unwrap();
        let reported = reports.keys().filter(|k| k.0 == mal_ds).count();
        let expected = 300.0 * 24.0;
        let gap = 1.0 - reported as f64 / expected;
        assert!((0.05..0.13).contains(&gap), "gap {gap}");

        // One completion per report, at the report's time.
        let mut completions = BTreeMap::new();
        c.for_each_completion(|k| {
            assert!(usernames.contains(&k.completed_by) || k.completed_by == "admin");
            assert!(completions
                .insert((k.data_set, k.period, k.org_unit), k.completed_at)
                .is_none());
        });
        for (k, t) in &reports {
            assert_eq!(completions.get(k), Some(t), "report without completion");
        }
        assert!(completions.len() >= reports.len());
    }

    #[test]
    fn events_are_plausible() {
        let c = generate(&opts(300));
        let ix = index(&c.metadata);
        let program = &arr(&c.metadata, "programs")[0];
        let stage = &arr(&c.metadata, "programStages")[0];
        let stage_des: Vec<&str> = stage["programStageDataElements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["dataElement"]["id"].as_str().unwrap())
            .collect();
        let program_ous: HashSet<&str> = program["organisationUnits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        let mut per_ou_month: BTreeMap<(String, (i32, u8)), usize> = BTreeMap::new();
        c.for_each_event(|e| {
            assert_eq!(e.program, program["id"].as_str().unwrap());
            assert_eq!(e.program_stage, stage["id"].as_str().unwrap());
            assert!(program_ous.contains(e.org_unit.as_str()));
            let (opening, closing) = ix.facilities[&e.org_unit];
            assert!(e.occurred_at >= opening && closing.is_none_or(|c| e.created.date() < c));
            assert!(e.created.date() >= e.occurred_at);
            let ids: Vec<&str> = e.values.iter().map(|(d, _)| d.as_str()).collect();
            assert_eq!(ids, stage_des);
            for (d, v) in &e.values {
                let (vt, _, codes, _) = &ix.elements[d];
                assert!(valid_for_type(vt, v), "{vt} {v}");
                assert!(codes.is_empty() || codes.contains(v));
            }
            *per_ou_month
                .entry((
                    e.org_unit.clone(),
                    (e.occurred_at.year(), e.occurred_at.month() as u8),
                ))
                .or_default() += 1;
        });
        assert!(per_ou_month.values().all(|n| (2..=6).contains(n)));
        let facilities: BTreeSet<&String> = per_ou_month.keys().map(|k| &k.0).collect();
        assert!(
            (10..=60).contains(&facilities.len()),
            "{} facilities report cases",
            facilities.len()
        );
        let first = per_ou_month.keys().map(|k| k.1).min().unwrap();
        let last = per_ou_month.keys().map(|k| k.1).max().unwrap();
        assert_eq!((first, last), ((2022, 7), (2024, 6)));
    }

    #[test]
    fn users_and_logins() {
        let c = generate(&opts(200));
        let m = &c.metadata;
        let users = arr(m, "users");
        assert_eq!(users.len(), c.logins.len());
        assert_eq!(users.len(), 2 + 16 * 6);
        let usernames: BTreeSet<&str> = c.logins.iter().map(|l| l.username.as_str()).collect();
        assert_eq!(usernames.len(), c.logins.len());
        let admin = &c.logins[0];
        assert_eq!(
            (
                admin.username.as_str(),
                admin.password.as_str(),
                admin.role.as_str()
            ),
            ("admin", "district", "Superuser")
        );
        assert_eq!(c.logins[1].username, "manager");
        let ou_names: HashMap<&str, &str> = arr(m, "organisationUnits")
            .iter()
            .map(|o| (o["id"].as_str().unwrap(), o["name"].as_str().unwrap()))
            .collect();
        let mut phones = BTreeSet::new();
        for (u, l) in users.iter().zip(&c.logins) {
            assert_eq!(u["username"], l.username.as_str());
            assert_eq!(u["password"], l.password.as_str());
            assert_eq!(
                ou_names[u["organisationUnits"][0]["id"].as_str().unwrap()],
                l.org_unit
            );
            assert!(
                l.username.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'.'
                    || b == b'_'),
                "{}",
                l.username
            );
            let worker = l.username.starts_with("chw.") || l.username.starts_with("fac.");
            assert_eq!(worker, l.phone_number.is_some());
            if let Some(p) = &l.phone_number {
                assert!(
                    p.starts_with('+')
                        && p.len() == 13
                        && p[1..].bytes().all(|b| b.is_ascii_digit())
                );
                assert!(phones.insert(p.clone()), "duplicate phone {p}");
                assert_eq!(u["phoneNumber"], p.as_str());
            }
        }
        let roles: BTreeMap<&str, usize> = c.logins.iter().fold(BTreeMap::new(), |mut acc, l| {
            *acc.entry(l.role.as_str()).or_default() += 1;
            acc
        });
        assert_eq!(roles["District supervisor"], 16);
        assert_eq!(roles["Health worker"], 48);
        assert_eq!(roles["Facility reporter"], 32);
        // With enough facilities every worker and reporter has their own facility.
        let fac_users: BTreeSet<&str> = c
            .logins
            .iter()
            .filter(|l| l.phone_number.is_some())
            .map(|l| l.org_unit.as_str())
            .collect();
        assert_eq!(fac_users.len(), 80);
    }

    #[test]
    fn invented_names_avoid_blocked_words() {
        let c = generate(&opts(15000));
        let mut names: Vec<String> = arr(&c.metadata, "organisationUnits")
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_lowercase())
            .collect();
        names.extend(
            arr(&c.metadata, "users")
                .iter()
                .map(|u| u["surname"].as_str().unwrap().to_lowercase()),
        );
        for n in &names {
            assert!(!BLOCKED_SUBSTRINGS.iter().any(|b| n.contains(b)), "{n}");
        }
    }

    #[test]
    fn periods_and_years_follow_end_period() {
        let c = generate(&DemoOptions {
            facilities: 30,
            end_period: (2025, 12),
            seed: 1,
        });
        let mut periods = BTreeSet::new();
        c.for_each_completion(|k| {
            periods.insert(k.period);
        });
        let years: Vec<&String> = periods.iter().filter(|p| p.len() == 4).collect();
        assert_eq!(years, ["2024", "2025"]);
        assert_eq!(periods.iter().filter(|p| p.len() == 6).count(), 24);
        assert_eq!(periods.iter().find(|p| p.len() == 6).unwrap(), "202401");
        let o = DemoOptions::default().ending_before(date(2026, 1, 15));
        assert_eq!(o.end_period, (2025, 12));
    }
}
