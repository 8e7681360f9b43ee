//! Authorities: DHIS2's names where DHIS2 has one, so that roles imported
//! from a DHIS2 export keep their meaning.

/// Superuser: every authority, every org unit.
pub const ALL: &str = "ALL";
pub const METADATA_IMPORT: &str = "F_METADATA_IMPORT";
pub const METADATA_EXPORT: &str = "F_METADATA_EXPORT";
pub const DATAVALUE_ADD: &str = "F_DATAVALUE_ADD";
pub const DATAVALUE_DELETE: &str = "F_DATAVALUE_DELETE";
pub const USER_ADD: &str = "F_USER_ADD";
pub const USER_DELETE: &str = "F_USER_DELETE";
pub const USER_VIEW: &str = "F_USER_VIEW";
pub const USERROLE_ADD: &str = "F_USERROLE_PUBLIC_ADD";
pub const SYSTEM_SETTING: &str = "F_SYSTEM_SETTING";
pub const APPROVE_DATA: &str = "F_APPROVE_DATA";
pub const EDIT_EXPIRED: &str = "F_EDIT_EXPIRED";
pub const MOBILE_SYNC: &str = "F_MOBILE_SYNC";
pub const MOBILE_SMS: &str = "F_MOBILE_SMS";
/// Configure SMS gateways and commands, relay inbound SMS, manage devices.
pub const MOBILE_SETTINGS: &str = "F_MOBILE_SETTINGS";
/// Send SMS and read the SMS lists.
pub const MOBILE_SENDSMS: &str = "F_MOBILE_SENDSMS";
