-- Aliases: one identity as one clearnet correspondent knows it. The local part is random, so
-- the only way back from an alias to an identity is this table.
CREATE TABLE aliases (
    local_part      TEXT PRIMARY KEY NOT NULL,
    identity_id     TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    correspondent   TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    revoked_at_ms   BIGINT
);
-- At most one live alias per identity and correspondent; a revoked one stays for the record.
CREATE UNIQUE INDEX aliases_live ON aliases (identity_id, correspondent) WHERE revoked_at_ms IS NULL;
CREATE INDEX aliases_account ON aliases (account_id);

-- Clearnet recipients each account sent to, per UTC day, for the daily cap.
CREATE TABLE account_days (
    account_id TEXT NOT NULL,
    day        TEXT NOT NULL,
    recipients BIGINT NOT NULL,
    PRIMARY KEY (account_id, day)
);

-- Gateway traffic counters per UTC day (GatewayStats).
CREATE TABLE counters (
    day   TEXT NOT NULL,
    name  TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (day, name)
);
