-- buttress webhook dispatcher, PostgreSQL: messages, their deliveries (one per
-- endpoint), the attempt log and the endpoints' health. Times are Unix seconds
-- (double precision), as on SQLite, so both stores share their SQL; read them with
-- to_timestamp(). {{messages}}, {{deliveries}}, {{attempts}}, {{endpoints}} are the
-- quoted, schema-qualified tables, {{index_prefix}} the bare prefix of index names.

CREATE TABLE {{messages}} (
    id          text PRIMARY KEY,
    event_type  text NOT NULL,
    key         text,
    body        bytea NOT NULL,
    created_at  double precision NOT NULL
);

CREATE TABLE {{deliveries}} (
    -- Per ordering key, the send order.
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      text    NOT NULL,
    endpoint_id     text    NOT NULL,
    -- NULL: no order constraint; else the endpoint (and message key) to order by.
    order_key       text,
    status          text    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL,
    -- The lease: a dispatcher owns a claimed delivery until claimed_until; after
    -- that (a crashed dispatcher) it can be claimed again.
    claimed_by      text,
    claimed_until   double precision,
    last_status     integer,
    last_error      text,
    created_at      double precision NOT NULL,
    done_at         double precision,
    -- The on-exhausted hook: 0 none, 1 to run, 2 ran.
    hook_state      smallint NOT NULL DEFAULT 0,
    UNIQUE (message_id, endpoint_id)
);

-- The claim: due pending deliveries, soonest first.
CREATE INDEX {{index_prefix}}_due_idx ON {{deliveries}} (next_attempt_at, seq)
    WHERE status = 'pending';
-- Ordered delivery: "is an earlier delivery with this order key still pending?"
CREATE INDEX {{index_prefix}}_order_idx ON {{deliveries}} (order_key, seq)
    WHERE status = 'pending' AND order_key IS NOT NULL;
-- Retention of delivered rows; dead letters (list, replay, purge); hooks to run.
CREATE INDEX {{index_prefix}}_done_idx ON {{deliveries}} (done_at) WHERE status = 'delivered';
CREATE INDEX {{index_prefix}}_dead_idx ON {{deliveries}} (seq) WHERE status = 'dead';
CREATE INDEX {{index_prefix}}_hook_idx ON {{deliveries}} (seq) WHERE hook_state = 1;

CREATE TABLE {{attempts}} (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_seq     bigint  NOT NULL,
    attempt          integer NOT NULL,
    at               double precision NOT NULL,
    status           integer,
    latency          double precision NOT NULL,
    response_headers text,
    response_body    text,
    error            text
);

CREATE INDEX {{index_prefix}}_attempts_delivery_idx ON {{attempts}} (delivery_seq, id);

CREATE TABLE {{endpoints}} (
    endpoint_id     text PRIMARY KEY,
    disabled_at     double precision,
    disabled_reason text,
    failing_since   double precision
);
