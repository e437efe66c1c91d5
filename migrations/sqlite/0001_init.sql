-- capf schema, SQLite flavour. Keep it statement for statement alike with
-- migrations/postgres/0001_init.sql: the same tables, columns, constraints and indexes,
-- differing only in how an auto-generated id is spelled and in the PostgreSQL-only
-- text_pattern_ops index.
--
-- Timestamps are Unix milliseconds (BIGINT). Enums are stored as their `as_str()` text and
-- are deliberately not CHECK-constrained: adding a variant would otherwise need a table
-- rebuild on SQLite; the Rust side rejects unknown text as a corrupt row instead.
-- AUTOINCREMENT makes ids strictly increasing and never reused, as an identity column is on
-- PostgreSQL, so an id is a safe cursor.

CREATE TABLE devices (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT    NOT NULL UNIQUE,
    require_sudi         BOOLEAN NOT NULL DEFAULT FALSE,
    failed_auth_count    BIGINT  NOT NULL DEFAULT 0 CHECK (failed_auth_count >= 0),
    locked_until         BIGINT,
    last_attempt_at      BIGINT,
    last_attempt_source  TEXT,
    last_attempt_outcome TEXT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);
-- Name prefix searches (`name >= 'SEP0011' AND name < 'SEP0012'`, or GLOB 'SEP0011*') use
-- the index behind UNIQUE (name): SQLite compares TEXT with BINARY collation by default.

CREATE TABLE operations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id        BIGINT  NOT NULL REFERENCES devices (id),
    kind             TEXT    NOT NULL,
    auth_mode        TEXT    NOT NULL,
    -- Needed to compare with what the phone sends; cleared once the operation has ended.
    auth_string      TEXT,
    key_spec         TEXT    NOT NULL,
    completes_by     BIGINT  NOT NULL,
    status           TEXT    NOT NULL,
    cause            TEXT,
    keygen_attempts  BIGINT  NOT NULL DEFAULT 0 CHECK (keygen_attempts >= 0),
    claimed_by       TEXT,
    claim_expires_at BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
-- At most one pending operation per device, enforced by the database itself.
CREATE UNIQUE INDEX operations_one_pending_per_device
    ON operations (device_id) WHERE status = 'pending';
CREATE INDEX operations_by_device ON operations (device_id, id);
-- The sweeper: pending operations whose deadline passed.
CREATE INDEX operations_by_status_deadline ON operations (status, completes_by);

CREATE TABLE certificates (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id          BIGINT NOT NULL REFERENCES devices (id),
    operation_id       BIGINT REFERENCES operations (id),
    serial_hex         TEXT   NOT NULL,
    subject            TEXT   NOT NULL,
    issuer             TEXT   NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    fingerprint_sha256 TEXT   NOT NULL,
    pem                TEXT   NOT NULL,
    state              TEXT   NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
-- A device has at most one installed certificate.
CREATE UNIQUE INDEX certificates_one_installed_per_device
    ON certificates (device_id) WHERE state = 'installed';
CREATE INDEX certificates_by_device ON certificates (device_id, id);
CREATE INDEX certificates_by_fingerprint ON certificates (fingerprint_sha256);
CREATE INDEX certificates_by_operation ON certificates (operation_id);

-- Attempts and events are logs. They name the device by text, without a foreign key, so
-- that connections and audit records about names capf does not know (a phone announcing an
-- unknown device) are kept too.
CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device_name  TEXT   NOT NULL,
    operation_id BIGINT REFERENCES operations (id),
    session_id   BIGINT NOT NULL,
    source_addr  TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT NOT NULL,
    outcome      TEXT   NOT NULL,
    detail       TEXT   NOT NULL
);
CREATE INDEX attempts_by_device ON attempts (device_name, id);

-- The audit trail. operation_id has no foreign key either: an audit record must never be
-- refused because of what it points at.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    device_name  TEXT,
    operation_id BIGINT,
    kind         TEXT   NOT NULL,
    source_addr  TEXT,
    detail       TEXT   NOT NULL
);
CREATE INDEX events_by_device ON events (device_name, id);
CREATE INDEX events_by_time ON events (at);
