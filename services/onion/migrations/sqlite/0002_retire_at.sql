-- When a revoked identity's onion is to go: it stays published until then so that its WKD path
-- serves the revocation to peers (RevokeOnion with serve_revocation). NULL: not scheduled.
ALTER TABLE onions ADD COLUMN retire_at_ms INTEGER;
