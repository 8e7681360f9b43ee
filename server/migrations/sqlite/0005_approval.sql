-- Data approval: one row per approved (workflow, period, org unit,
-- attribute option combo); its audit trail; messages to users (a returned
-- form's comment reaches whoever submitted it). Times in ms since the epoch.
CREATE TABLE data_approval (
    workflow                TEXT    NOT NULL,
    period                  TEXT    NOT NULL,
    org_unit                TEXT    NOT NULL,
    attribute_option_combo  TEXT    NOT NULL,
    level                   TEXT    NOT NULL,
    accepted                BOOLEAN NOT NULL DEFAULT FALSE,
    approved_by             TEXT    NOT NULL,
    approved_at             INTEGER NOT NULL,
    accepted_by             TEXT,
    accepted_at             INTEGER,
    PRIMARY KEY (workflow, period, org_unit, attribute_option_combo)
);

CREATE TABLE data_approval_audit (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow                TEXT    NOT NULL,
    period                  TEXT    NOT NULL,
    org_unit                TEXT    NOT NULL,
    attribute_option_combo  TEXT    NOT NULL,
    action                  TEXT    NOT NULL,
    by_user                 TEXT    NOT NULL,
    at                      INTEGER NOT NULL,
    comment                 TEXT
);
CREATE INDEX data_approval_audit_key ON data_approval_audit (workflow, period, org_unit);

CREATE TABLE user_message (
    uid         TEXT    PRIMARY KEY,
    recipient   TEXT    NOT NULL,
    sender      TEXT,
    subject     TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    context     TEXT,
    created_at  INTEGER NOT NULL,
    read_at     INTEGER
);
CREATE INDEX user_message_recipient ON user_message (recipient, created_at);
