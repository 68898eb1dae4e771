-- How an account's address book takes what arrives in mail (AddressBookPolicy). No row: the
-- default (introduced contacts are added at once).
CREATE TABLE address_book_policies (
    account_id TEXT PRIMARY KEY NOT NULL,
    -- 1: a contact introduced in mail waits, held, for the account's confirmation.
    confirm_introductions INTEGER NOT NULL DEFAULT 0
);
