-- Bearer tokens of the admin API. Only the SHA-256 of a token is stored: the token itself is
-- shown once, when it is created. Keep alike with migrations/postgres/0002_api_tokens.sql.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT   NOT NULL UNIQUE,
    token_sha256 TEXT   NOT NULL UNIQUE,
    scope        TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);

-- Listing filters: devices by the expiry of their installed certificate.
CREATE INDEX certificates_by_state_expiry ON certificates (state, not_after);
