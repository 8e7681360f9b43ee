-- Device sync: what each device reported, wipe requests, every submission
-- id a device sent (applied at most once), policies, one-time enrolment
-- codes and the device audit trail. Times are milliseconds since the epoch.
ALTER TABLE device ADD COLUMN wipe_requested_at BIGINT;
ALTER TABLE device ADD COLUMN wiped_at BIGINT;
ALTER TABLE device ADD COLUMN pending_reported BIGINT NOT NULL DEFAULT 0;
ALTER TABLE device ADD COLUMN clock_skew_ms BIGINT;

CREATE TABLE sync_submission (
    id            TEXT    PRIMARY KEY,
    device_uid    TEXT    NOT NULL,
    user_uid      TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    received_at   BIGINT NOT NULL,
    device_time   TEXT,
    captured_at   TEXT,
    future_dated  BOOLEAN NOT NULL DEFAULT FALSE,
    result        TEXT,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX sync_submission_device ON sync_submission (device_uid, received_at);

-- scope: DEFAULT (target empty), ROLE, ORG_UNIT or DEVICE (target = its uid).
CREATE TABLE device_policy (
    uid         TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    rules       TEXT    NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (scope, target)
);

CREATE TABLE enrolment_code (
    code_hash   TEXT    PRIMARY KEY,
    user_uid    TEXT    NOT NULL,
    created_by  TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    device_uid  TEXT
);

CREATE TABLE device_audit (
    id          BIGSERIAL PRIMARY KEY,
    device_uid  TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    by_user     TEXT,
    at          BIGINT NOT NULL,
    detail      TEXT
);
CREATE INDEX device_audit_device ON device_audit (device_uid, at);
