-- The sign-in's optional second factor (RFC 6238 TOTP), one per account. The secret is sealed
-- with the carrier secret (purpose "portal-totp", the account id as associated data), so a copy
-- of this database yields no codes. `confirmed` is 0 until the account holder has entered a
-- first code from their app; `last_step` is the highest time step accepted, so a code is never
-- taken twice.
CREATE TABLE second_factors (
    account_id    TEXT PRIMARY KEY,
    sealed_secret BLOB NOT NULL,
    confirmed     INTEGER NOT NULL,
    last_step     INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
