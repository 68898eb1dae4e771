-- Carry statements that arrived in mail at postmaster@<onion> (SubmitCarryStatement): kept
-- before smtp-in answers 250, verified after against the key the identity's onion serves, then
-- applied by the operator's policy. Times are milliseconds since the Unix epoch.
CREATE TABLE carry_requests (
    request_id TEXT PRIMARY KEY,
    -- The onion whose MX it arrived on; the statement must name it.
    onion TEXT NOT NULL,
    -- The statement as it came, sealed with the carrier secret (bound to request_id).
    statement BLOB NOT NULL,
    -- verifying, pending, accepted or refused.
    state TEXT NOT NULL,
    -- From the verified statement: the identity, its key, request or withdraw, expiry.
    address TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    expires_at_ms BIGINT,
    detail TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at_ms BIGINT NOT NULL,
    -- While verifying: when to try next (the identity's onion may be offline a while).
    next_attempt_at_ms BIGINT,
    decided_at_ms BIGINT,
    agreement_id TEXT NOT NULL DEFAULT ''
);

CREATE INDEX carry_requests_due ON carry_requests (state, next_attempt_at_ms);
