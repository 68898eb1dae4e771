-- Keys an identity replaced (RotateIdentityKey), each TSK sealed with the carrier secret like
-- identity_keys.sealed_secret: they only open mail that was already on its way to the old key.
-- Erased when the identity is revoked.
CREATE TABLE previous_identity_keys (
    identity_id TEXT NOT NULL REFERENCES identity_keys (identity_id),
    fingerprint TEXT NOT NULL,
    sealed_secret BYTEA NOT NULL,
    replaced_at_ms BIGINT NOT NULL,
    PRIMARY KEY (identity_id, fingerprint)
);
