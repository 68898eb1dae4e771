-- Which tor of the carrier's pool an identity's onion is placed on (tor.control's order, or
-- tor child N); NULL: not placed yet (rows from before pools), placed at the next start.
ALTER TABLE onions ADD COLUMN tor_instance INTEGER;
