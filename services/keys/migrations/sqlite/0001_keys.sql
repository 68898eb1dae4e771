-- Identity keys: one row per identity, kept after revocation (the secret gone) so a revoked
-- identity id or address never comes back.
CREATE TABLE identity_keys (
    identity_id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    public_key BLOB NOT NULL,
    -- The TSK sealed with the carrier secret; NULL for client custody and after revocation.
    sealed_secret BLOB,
    custody TEXT NOT NULL,
    preferred_carriers TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    revocation BLOB
);
CREATE INDEX identity_keys_account ON identity_keys (account_id);

-- Address books: one row per (account, address).
CREATE TABLE contacts (
    contact_id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    address TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    public_key BLOB,
    key_source TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    designated_carriers TEXT NOT NULL DEFAULT '',
    preferred_carriers TEXT NOT NULL DEFAULT '',
    held_fingerprint TEXT,
    held_public_key BLOB,
    held_source TEXT,
    held_reason TEXT,
    held_seen_at_ms INTEGER,
    autocrypt_date_ms INTEGER,
    first_seen_at_ms INTEGER NOT NULL,
    last_seen_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    UNIQUE (account_id, address)
);

CREATE TABLE contact_introducers (
    contact_id TEXT NOT NULL REFERENCES contacts (contact_id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    introduced_at_ms INTEGER NOT NULL,
    PRIMARY KEY (contact_id, fingerprint)
);
