-- Validation rule violations found by an analysis run with `persist`, kept
-- for follow-up. One row per rule, org unit, period and attribute option
-- combo: a later run refreshes the values and keeps the follow-up flag.
CREATE TABLE validation_result (
    uid                     TEXT    PRIMARY KEY,
    validation_rule         TEXT    NOT NULL,
    org_unit                TEXT    NOT NULL,
    period                  TEXT    NOT NULL,
    attribute_option_combo  TEXT    NOT NULL,
    importance              TEXT    NOT NULL,
    left_value              DOUBLE PRECISION,
    right_value             DOUBLE PRECISION,
    created_at              BIGINT NOT NULL,
    follow_up               BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (validation_rule, org_unit, period, attribute_option_combo)
);
CREATE INDEX validation_result_period ON validation_result (period, org_unit);
