-- The transactional outbox every service shares (each in its own database).
-- A row is written in the same transaction as the state change it reports; dedup_key is the
-- idempotency key of what caused it, so a redelivered command finds its row instead of acting again.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    dedup_key      text        NOT NULL UNIQUE,
    topic          text        NOT NULL,            -- logical topic, mapped to a real one by the relay
    msg_key        text,
    correlation_id text,
    headers        jsonb,                           -- extra Kafka headers, {"name": "value"}
    payload        text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    claimed_at     timestamptz,                     -- last time a sweeper took the row
    published_at   timestamptz
);
-- The relay looks rows up by "not yet published", never by "id above the last one seen".
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_created ON outbox (created_at);
