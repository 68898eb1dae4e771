-- App passwords: one per mail client or device, revocable, each opening IMAP and SMTP for its
-- account (never the portal). Only the SHA-256 of each code is kept: a code is 120 random bits,
-- so there is nothing to guess and no slow hash is needed.
CREATE TABLE app_passwords (
    app_password_id TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    password_hash   BLOB NOT NULL UNIQUE,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX app_passwords_by_account ON app_passwords (account_id);
