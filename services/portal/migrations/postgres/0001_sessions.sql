-- Portal sessions, browser and API alike. Only the SHA-256 of each session token is kept: the
-- token lives in the account holder's cookie (or script), so a copy of this database signs
-- nobody in. Expired rows are deleted by the portal's sweep.
CREATE TABLE sessions (
    session_hash  TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_account ON sessions (account_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);
