-- buttress inbox, PostgreSQL: the ids of the messages each consumer has handled.
-- {{table}} is the (schema-qualified, quoted) table, {{name}} its bare name.
-- A handler records the id in its own transaction (INSERT ... ON CONFLICT DO
-- NOTHING, which never aborts that transaction); a second delivery of the same
-- message finds the id and skips the handler's effect.

CREATE TABLE {{table}} (
    -- The consumer's name: one table serves every consumer of the database, and
    -- two consumers of one message each handle it once.
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- prune(): the oldest ids of a consumer first, in small batches.
CREATE INDEX {{name}}_seen_idx ON {{table}} (consumer, seen_at);
