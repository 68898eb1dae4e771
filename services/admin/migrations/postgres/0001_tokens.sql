-- API bearer tokens. Only the SHA-256 of each token is kept: the token itself is shown once, at
-- creation, so a copy of this database cannot be used to call the API.
CREATE TABLE tokens (
    token_id      TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    -- 'read' or 'write' (write implies read).
    scope         TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);
