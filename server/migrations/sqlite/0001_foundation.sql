-- Metadata objects are kept as their DHIS2 JSON so that fields Hisa does not
-- model survive; the columns beside the body are what queries and sync need.
CREATE TABLE metadata_object (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    uid           TEXT    NOT NULL UNIQUE,
    type          TEXT    NOT NULL,
    code          TEXT,
    name          TEXT,
    body          TEXT    NOT NULL,
    created       TEXT    NOT NULL,
    last_updated  TEXT    NOT NULL,
    deleted       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX metadata_object_type_updated ON metadata_object (type, last_updated);

-- One row; bumped by every metadata change so that each server instance
-- knows when its in-memory snapshot is stale.
CREATE TABLE metadata_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO metadata_version (id, version) VALUES (1, 0);

-- The org unit tree. `path` is '/rootUid/…/selfUid', so a subtree is the
-- range [path, path || '0'): one index scan whatever its depth.
CREATE TABLE organisation_unit (
    object_id     INTEGER PRIMARY KEY REFERENCES metadata_object (id),
    uid           TEXT    NOT NULL UNIQUE,
    parent_id     INTEGER REFERENCES organisation_unit (object_id),
    path          TEXT    NOT NULL,
    level         INTEGER NOT NULL,
    opening_date  TEXT,
    closed_date   TEXT
);
CREATE INDEX organisation_unit_path ON organisation_unit (path);
CREATE INDEX organisation_unit_parent ON organisation_unit (parent_id);

-- Secrets stay out of the metadata body.
CREATE TABLE user_credential (
    user_id        INTEGER PRIMARY KEY REFERENCES metadata_object (id),
    username       TEXT    NOT NULL,
    username_key   TEXT    NOT NULL UNIQUE,
    password_hash  TEXT,
    disabled       INTEGER NOT NULL DEFAULT 0,
    last_login     TEXT,
    password_last_updated TEXT
);

CREATE TABLE api_token (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    uid          TEXT    NOT NULL UNIQUE,
    user_id      INTEGER NOT NULL REFERENCES metadata_object (id),
    token_hash   TEXT    NOT NULL UNIQUE,
    expires_at   TEXT,
    created      TEXT    NOT NULL,
    last_used    TEXT
);

CREATE TABLE user_session (
    id_hash      TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES metadata_object (id),
    csrf_token   TEXT    NOT NULL,
    created      TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL
);

CREATE TABLE period (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    iso          TEXT    NOT NULL UNIQUE,
    period_type  TEXT    NOT NULL,
    start_date   TEXT    NOT NULL,
    end_date     TEXT    NOT NULL
);
CREATE INDEX period_dates ON period (start_date, end_date);

-- The key of a data value is DHIS2's: data element × period × org unit ×
-- category option combo × attribute option combo. Deletion is soft.
CREATE TABLE data_value (
    data_element_id            INTEGER NOT NULL REFERENCES metadata_object (id),
    period_id                  INTEGER NOT NULL REFERENCES period (id),
    org_unit_id                INTEGER NOT NULL REFERENCES organisation_unit (object_id),
    category_option_combo_id   INTEGER NOT NULL REFERENCES metadata_object (id),
    attribute_option_combo_id  INTEGER NOT NULL REFERENCES metadata_object (id),
    value          TEXT,
    comment        TEXT,
    follow_up      INTEGER NOT NULL DEFAULT 0,
    stored_by      TEXT,
    created        TEXT    NOT NULL,
    last_updated   TEXT    NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    -- Org unit and period first: a form (one unit, one period) is written
    -- and read together, and a subtree query walks org units.
    PRIMARY KEY (org_unit_id, period_id, data_element_id, category_option_combo_id, attribute_option_combo_id)
) WITHOUT ROWID;
CREATE INDEX data_value_element_period ON data_value (data_element_id, period_id);
CREATE INDEX data_value_last_updated ON data_value (last_updated);

CREATE TABLE complete_registration (
    data_set_id                INTEGER NOT NULL REFERENCES metadata_object (id),
    period_id                  INTEGER NOT NULL REFERENCES period (id),
    org_unit_id                INTEGER NOT NULL REFERENCES organisation_unit (object_id),
    attribute_option_combo_id  INTEGER NOT NULL REFERENCES metadata_object (id),
    completed      INTEGER NOT NULL DEFAULT 1,
    completed_by   TEXT,
    completed_at   TEXT    NOT NULL,
    last_updated   TEXT    NOT NULL,
    PRIMARY KEY (data_set_id, period_id, org_unit_id, attribute_option_combo_id)
) WITHOUT ROWID;

CREATE TABLE event (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    uid            TEXT    NOT NULL UNIQUE,
    program_id     INTEGER NOT NULL REFERENCES metadata_object (id),
    program_stage_id INTEGER NOT NULL REFERENCES metadata_object (id),
    org_unit_id    INTEGER NOT NULL REFERENCES organisation_unit (object_id),
    attribute_option_combo_id INTEGER NOT NULL REFERENCES metadata_object (id),
    occurred_at    TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    stored_by      TEXT,
    data_values    TEXT    NOT NULL,
    created        TEXT    NOT NULL,
    last_updated   TEXT    NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX event_org_unit_occurred ON event (org_unit_id, occurred_at);
CREATE INDEX event_last_updated ON event (last_updated);
