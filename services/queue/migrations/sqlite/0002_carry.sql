-- Carry agreements: the identities this carrier holds mail for while they are offline, each
-- recorded from a carry request signed by the identity's own key (issue #7). Times are
-- milliseconds since the Unix epoch.
CREATE TABLE carry_agreements (
    agreement_id TEXT PRIMARY KEY,
    -- The identity carried for, in lower case (`local@<56 base32>.onion`).
    address TEXT NOT NULL,
    -- The key that signed the request.
    fingerprint TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Unset: until revoked.
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT,
    -- Caps that keep one recipient from filling the carrier.
    max_held_bytes BIGINT NOT NULL,
    max_messages_per_day INTEGER NOT NULL
);

CREATE INDEX carry_agreements_address ON carry_agreements (address);
CREATE INDEX recipients_address ON recipients (address);
