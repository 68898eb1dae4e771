-- Plans: operator-defined; accounts see a plan's change at once (they join it).
CREATE TABLE plans (
    plan_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    quota_bytes BIGINT NOT NULL,
    identities_allowed BIGINT NOT NULL,
    gateway_allowed BIGINT NOT NULL DEFAULT 0,
    gateway_daily_limit BIGINT NOT NULL DEFAULT 0
);

-- Accounts. `sealed_key` is the account's data key sealed with the carrier secret (aad: the
-- account id); deleting the row destroys every way to read the account's bodies. The counters
-- are kept here so that quota and identity limits are checked by one conditional UPDATE, which
-- also serialises an account's writers on both backends.
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY NOT NULL,
    login TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    plan_id TEXT NOT NULL REFERENCES plans (plan_id),
    paid_until_ms BIGINT NOT NULL,
    suspended BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    used_bytes BIGINT NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    identity_count BIGINT NOT NULL DEFAULT 0,
    write_seq BIGINT NOT NULL DEFAULT 0
);

-- Vouchers: only the SHA-256 of each code is kept, so a copy of the database redeems nothing.
CREATE TABLE vouchers (
    code_hash BLOB PRIMARY KEY NOT NULL,
    batch_id TEXT NOT NULL,
    plan_id TEXT NOT NULL REFERENCES plans (plan_id),
    days BIGINT NOT NULL,
    expires_at_ms BIGINT,
    minted_at_ms BIGINT NOT NULL,
    redeemed_at_ms BIGINT,
    redeemed_by TEXT
);
CREATE INDEX vouchers_batch ON vouchers (batch_id);

-- Identities an account owns (allocated by admin, shared with the onion and keys services).
CREATE TABLE identities (
    identity_id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    address TEXT NOT NULL UNIQUE,
    onion TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX identities_account ON identities (account_id);
CREATE INDEX identities_onion ON identities (onion);

-- Mailboxes; ids are never reused (AUTOINCREMENT), so a session's id stays meaningful.
CREATE TABLE mailboxes (
    mailbox_id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    name TEXT NOT NULL,
    special_use TEXT,
    uid_validity BIGINT NOT NULL,
    uid_next BIGINT NOT NULL DEFAULT 1,
    version BIGINT NOT NULL DEFAULT 1,
    subscribed BIGINT NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);

-- Message bodies, one per distinct message per account, sealed with the account key. The
-- dedup key is an HMAC under that key, never a plain digest of the plaintext.
CREATE TABLE blobs (
    blob_id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    dedup_key BLOB NOT NULL,
    size BIGINT NOT NULL,
    header_sealed BLOB NOT NULL,
    full_sealed BLOB NOT NULL,
    refcount BIGINT NOT NULL,
    UNIQUE (account_id, dedup_key)
);

-- A message in a mailbox.
CREATE TABLE messages (
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (mailbox_id),
    uid BIGINT NOT NULL,
    blob_id BIGINT NOT NULL REFERENCES blobs (blob_id),
    flags TEXT NOT NULL DEFAULT '',
    internal_date_ms BIGINT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_blob ON messages (blob_id);

-- Deliveries already made, by a keyed hash of Message-ID and body, so a message delivered twice
-- is stored once; also counts mail delivered per day.
CREATE TABLE deliveries (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    delivery_key BLOB NOT NULL,
    mailbox_id BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    delivered_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, delivery_key)
);
CREATE INDEX deliveries_time ON deliveries (delivered_at_ms);
