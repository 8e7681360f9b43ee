-- SMS: every inbound message stored raw before processing, with its state;
-- outbound messages with their delivery state; gateway configurations;
-- parts of multipart messages waiting for the rest. Times are milliseconds
-- since the epoch.
CREATE TABLE sms_inbound (
    uid           TEXT    PRIMARY KEY,
    gateway       TEXT    NOT NULL,
    provider_id   TEXT,
    sender_raw    TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    content_hash  TEXT    NOT NULL,
    sent_at       INTEGER,
    received_at   INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    format        TEXT,
    reason        TEXT,
    user_uid      TEXT,
    device_uid    TEXT,
    processed_at  INTEGER
);
CREATE UNIQUE INDEX sms_inbound_provider ON sms_inbound (gateway, provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX sms_inbound_sender ON sms_inbound (sender, received_at);
CREATE INDEX sms_inbound_received ON sms_inbound (received_at);
CREATE INDEX sms_inbound_state ON sms_inbound (state, received_at);

CREATE TABLE sms_part (
    sender        TEXT    NOT NULL,
    reference     INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    inbound_uid   TEXT    NOT NULL,
    chunk         BLOB    NOT NULL,
    received_at   INTEGER NOT NULL,
    PRIMARY KEY (sender, reference, total, idx)
);
CREATE INDEX sms_part_received ON sms_part (received_at);

CREATE TABLE sms_outbound (
    uid             TEXT    PRIMARY KEY,
    gateway         TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    inbound_uid     TEXT,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    -- When it was first handed to a phone or provider: the pacing window.
    handed_at       INTEGER,
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX sms_outbound_queue ON sms_outbound (gateway, state, next_attempt_at);
CREATE INDEX sms_outbound_handed ON sms_outbound (gateway, handed_at);
CREATE INDEX sms_outbound_created ON sms_outbound (created_at);

CREATE TABLE sms_gateway (
    uid         TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    is_default  BOOLEAN NOT NULL DEFAULT FALSE,
    config      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Phones enrolled by their users. The device secret is stored hashed; the
-- SMS key must be usable to check a MAC, so it is stored as issued.
CREATE TABLE device (
    uid             TEXT    PRIMARY KEY,
    user_uid        TEXT    NOT NULL,
    name            TEXT,
    model           TEXT,
    app_version     TEXT,
    secret_hash     TEXT    NOT NULL,
    sms_key_id      INTEGER NOT NULL UNIQUE,
    sms_key         BLOB    NOT NULL,
    replay_highest  INTEGER NOT NULL DEFAULT 0,
    replay_seen     INTEGER NOT NULL DEFAULT 0,
    enrolled_at     INTEGER NOT NULL,
    last_seen_at    INTEGER,
    revoked_at      INTEGER
);
CREATE INDEX device_user ON device (user_uid);
