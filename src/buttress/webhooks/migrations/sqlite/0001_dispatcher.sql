-- buttress webhook dispatcher, SQLite: messages, their deliveries (one per endpoint),
-- the attempt log and the endpoints' health. Times are Unix seconds (REAL).
-- {{messages}}, {{deliveries}}, {{attempts}}, {{endpoints}} are the quoted tables,
-- {{index_prefix}} the (schema-qualified) prefix of index names, {{bare_deliveries}}
-- and {{bare_attempts}} the quoted bare names (SQLite indexes live in the table's schema).

CREATE TABLE {{messages}} (
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    key         TEXT,
    body        BLOB NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE {{deliveries}} (
    -- AUTOINCREMENT: a seq is never reused. Per ordering key, the send order.
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT    NOT NULL,
    endpoint_id     TEXT    NOT NULL,
    -- NULL: no order constraint; else the endpoint (and message key) to order by.
    order_key       TEXT,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    claimed_by      TEXT,
    claimed_until   REAL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    done_at         REAL,
    -- The on-exhausted hook: 0 none, 1 to run, 2 ran.
    hook_state      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (message_id, endpoint_id)
);

-- The claim: due pending deliveries, soonest first.
CREATE INDEX {{index_prefix}}_due_idx ON {{bare_deliveries}} (next_attempt_at, seq)
    WHERE status = 'pending';
-- Ordered delivery: "is an earlier delivery with this order key still pending?"
CREATE INDEX {{index_prefix}}_order_idx ON {{bare_deliveries}} (order_key, seq)
    WHERE status = 'pending' AND order_key IS NOT NULL;
-- Retention of delivered rows; dead letters (list, replay, purge); hooks to run.
CREATE INDEX {{index_prefix}}_done_idx ON {{bare_deliveries}} (done_at)
    WHERE status = 'delivered';
CREATE INDEX {{index_prefix}}_dead_idx ON {{bare_deliveries}} (seq) WHERE status = 'dead';
CREATE INDEX {{index_prefix}}_hook_idx ON {{bare_deliveries}} (seq) WHERE hook_state = 1;

CREATE TABLE {{attempts}} (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_seq     INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    at               REAL    NOT NULL,
    status           INTEGER,
    latency          REAL    NOT NULL,
    response_headers TEXT,
    response_body    TEXT,
    error            TEXT
);

CREATE INDEX {{index_prefix}}_attempts_delivery_idx ON {{bare_attempts}} (delivery_seq, id);

CREATE TABLE {{endpoints}} (
    endpoint_id     TEXT PRIMARY KEY,
    disabled_at     REAL,
    disabled_reason TEXT,
    failing_since   REAL
);
