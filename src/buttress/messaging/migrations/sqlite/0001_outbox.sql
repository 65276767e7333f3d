-- buttress outbox, SQLite: the table and its indexes. Times are Unix seconds (REAL).
-- {{table}} is the (schema-qualified, quoted) table, {{bare}} its quoted bare name,
-- {{index_prefix}} the (schema-qualified) prefix of index names.
-- The relay claims rows in a write transaction (BEGIN IMMEDIATE); there is no
-- NOTIFY in SQLite, so it polls.

CREATE TABLE {{table}} (
    -- AUTOINCREMENT: a seq is never reused, even after retention deletes the
    -- newest rows. Per key, the key's commit order (see the PostgreSQL migration).
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    source          TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    subject         TEXT,
    envelope        TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'published', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    claimed_by      TEXT,
    claimed_until   REAL,
    last_error      TEXT,
    created_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    published_at    REAL
);

CREATE INDEX {{index_prefix}}_pending_idx ON {{bare}} (seq) WHERE status = 'pending';
CREATE INDEX {{index_prefix}}_key_idx ON {{bare}} (subject, seq) WHERE status = 'pending';
CREATE INDEX {{index_prefix}}_published_idx ON {{bare}} (published_at) WHERE status = 'published';
CREATE INDEX {{index_prefix}}_dead_idx ON {{bare}} (seq) WHERE status = 'dead';
