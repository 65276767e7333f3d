-- buttress inbox, SQLite: the ids of the messages each consumer has handled.
-- Times are Unix seconds (REAL). {{table}} is the (schema-qualified, quoted) table,
-- {{bare}} its quoted bare name, {{index_prefix}} the (schema-qualified) prefix of
-- index names. See the PostgreSQL migration.

CREATE TABLE {{table}} (
    consumer    TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    seen_at     REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (consumer, message_id)
) WITHOUT ROWID;

CREATE INDEX {{index_prefix}}_seen_idx ON {{bare}} (consumer, seen_at);
