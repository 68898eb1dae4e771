CREATE TABLE notes (
    id BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notes_owner ON notes (owner);
