-- Carried messages accepted per identity and UTC day (`day` = milliseconds since the epoch
-- divided by 86,400,000), for an agreement's daily cap. Counted when a message is accepted, so
-- mail the identity picks up at once still counts. Rows before yesterday are dropped as new
-- ones come.
CREATE TABLE carry_intake (
    address TEXT NOT NULL,
    day BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    PRIMARY KEY (address, day)
);
