-- The carrier onion a carry request named: carried mail for the identity is accepted on that
-- onion's MX only, so no other onion of this carrier shows that it shares the agreement (issue
-- 18: an RCPT on any onion would otherwise tell which onions share a carrier). Agreements of
-- earlier versions did not keep it; they hold on no onion until the identity asks again.
ALTER TABLE carry_agreements ADD COLUMN carrier TEXT NOT NULL DEFAULT '';
