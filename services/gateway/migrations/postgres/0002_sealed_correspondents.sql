-- Correspondents sealed at rest (issue 18, item 10): `correspondent` holds a keyed digest of
-- (identity, correspondent), which the live-alias index and lookups use, and
-- `correspondent_sealed` the address sealed with the carrier secret. The gateway seals the rows
-- of earlier versions (no sealed column yet) at start and erases their clear text.
ALTER TABLE aliases ADD COLUMN correspondent_sealed BYTEA;
