-- The queue: one row per message (its body sealed, stored once) and one per recipient, which
-- carries the delivery state. Times are milliseconds since the Unix epoch.
CREATE TABLE messages (
    queue_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sender_identity_id TEXT NOT NULL,
    reverse_path TEXT NOT NULL,
    message_id TEXT NOT NULL,
    envelope_id TEXT NOT NULL,
    dsn_return TEXT NOT NULL,
    fan_out_immediately BOOLEAN NOT NULL,
    body BYTEA NOT NULL,
    body_digest TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    held BOOLEAN NOT NULL DEFAULT FALSE,
    enqueued_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX messages_enqueued ON messages (enqueued_at_ms, queue_id);

CREATE TABLE recipients (
    queue_id TEXT NOT NULL REFERENCES messages (queue_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    address TEXT NOT NULL,
    -- The address's domain in lower case: the destination onion, for Flush (ETRN) and filters.
    domain TEXT NOT NULL,
    state TEXT NOT NULL,
    notify TEXT NOT NULL,
    orcpt TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at_ms BIGINT,
    next_attempt_at_ms BIGINT,
    reply_code INTEGER,
    reply_enhanced TEXT,
    reply_text TEXT,
    handed_to_carriers TEXT NOT NULL DEFAULT '',
    -- A worker's lease on the recipient while it delivers; an expired lease is free again.
    claimed_by TEXT,
    claimed_until_ms BIGINT,
    PRIMARY KEY (queue_id, idx)
);

CREATE INDEX recipients_due ON recipients (next_attempt_at_ms)
    WHERE state IN ('scheduled', 'temporary_failure');
CREATE INDEX recipients_domain ON recipients (domain);
