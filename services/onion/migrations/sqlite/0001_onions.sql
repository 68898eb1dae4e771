-- One row per identity onion service, kept after revocation as a tombstone so neither the
-- identity id nor the address can ever be used again.
CREATE TABLE onions (
    identity_id TEXT PRIMARY KEY NOT NULL,
    -- The 56-character v3 service id (the onion address without `.onion`).
    service_id TEXT NOT NULL UNIQUE,
    -- tor's ED25519-V3 key blob sealed with the carrier secret; NULL once revoked.
    sealed_key BLOB,
    -- Picks the identity's block of target ports; NULL once revoked (the ports are free again).
    slot INTEGER UNIQUE,
    -- Comma-separated port purposes: smtp, wkd, imap, submission.
    purposes TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
