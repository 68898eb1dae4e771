-- An identity's preferred carriers as it signed them (an onionpost-carrier-list), served over
-- its onion next to its key and carried in its mail. NULL until the identity names carriers.
ALTER TABLE identity_keys ADD COLUMN carrier_list BYTEA;
-- When the contact signed the preferred carriers held for it (seconds): an older list never
-- replaces a newer one.
ALTER TABLE contacts ADD COLUMN preferred_carriers_signed_at BIGINT;
