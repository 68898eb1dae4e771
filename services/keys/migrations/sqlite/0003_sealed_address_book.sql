-- Address books sealed at rest (issue 18, item 10): each entry sealed whole with the carrier
-- secret, found by a keyed digest of (account, address). The keys service moves the rows of
-- `contacts` and `contact_introducers` here at start and erases them there; the two tables stay,
-- empty, for carriers upgrading from earlier versions.
CREATE TABLE address_book (
    contact_id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    address_key TEXT NOT NULL,
    sealed BLOB NOT NULL,
    UNIQUE (account_id, address_key)
);
