-- Every change to a data value, completion or event, with who, when, what
-- it was before and after, and the channel it came through.
CREATE TABLE data_value_audit (
    id                         BIGSERIAL PRIMARY KEY,
    data_element_id            BIGINT NOT NULL,
    period_id                  BIGINT NOT NULL,
    org_unit_id                BIGINT NOT NULL,
    category_option_combo_id   BIGINT NOT NULL,
    attribute_option_combo_id  BIGINT NOT NULL,
    previous_value  TEXT,
    value           TEXT,
    audit_type      TEXT NOT NULL,
    modified_by     TEXT,
    created         TIMESTAMPTZ NOT NULL,
    channel         TEXT NOT NULL,
    device          TEXT
);
CREATE INDEX data_value_audit_key ON data_value_audit (org_unit_id, period_id, data_element_id);
CREATE INDEX data_value_audit_created ON data_value_audit (created);

CREATE TABLE completion_audit (
    id                         BIGSERIAL PRIMARY KEY,
    data_set_id                BIGINT NOT NULL,
    period_id                  BIGINT NOT NULL,
    org_unit_id                BIGINT NOT NULL,
    attribute_option_combo_id  BIGINT NOT NULL,
    audit_type      TEXT NOT NULL,
    modified_by     TEXT,
    created         TIMESTAMPTZ NOT NULL,
    channel         TEXT NOT NULL,
    device          TEXT
);

CREATE TABLE event_audit (
    id              BIGSERIAL PRIMARY KEY,
    event_uid       VARCHAR(11) NOT NULL,
    audit_type      TEXT NOT NULL,
    previous        TEXT,
    modified_by     TEXT,
    created         TIMESTAMPTZ NOT NULL,
    channel         TEXT NOT NULL,
    device          TEXT
);
CREATE INDEX event_audit_event ON event_audit (event_uid);
