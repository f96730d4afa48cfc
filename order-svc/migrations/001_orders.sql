-- order-svc owns orders: the tables. The functions that change them are in R_orders_functions.sql.
CREATE TABLE orders (
    id                    text PRIMARY KEY,
    idempotency_key       text NOT NULL UNIQUE,             -- the PlaceOrder's key
    customer_id           text NOT NULL,
    items                 jsonb NOT NULL,                   -- the lines as given, in order
    request_hash          text NOT NULL,                    -- vx_msg_order_hash of the PlaceOrder
    status                text NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    reason                text,
    product_id            text,                             -- the product a rejection is about
    cancel_requested      boolean NOT NULL DEFAULT false,   -- cancelled while PENDING: acted on at the answer
    correlation_id        text,                             -- the PlaceOrder's correlation-id header
    cancel_key            text,                             -- the CancelOrder that cancelled it (or asked to)
    cancel_correlation_id text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_latest ON orders (created_at DESC, id DESC); -- GET /orders: ORDER BY created_at DESC LIMIT n

-- One row per status change, the initial PENDING included.
CREATE TABLE order_history (
    id       bigserial PRIMARY KEY,
    order_id text NOT NULL REFERENCES orders (id),
    status   text NOT NULL,
    reason   text,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_history_order ON order_history (order_id, id);

-- What ord_apply_batch returns: the outbox rows to publish (the columns vx_outbox_publish reads,
-- out_id .. out_headers) and, for the service's log, one outcome per input (out_note .. out_status),
-- carried by the first row the input produced or, when it produced none, by a row whose out_id is NULL.
CREATE TYPE ord_out AS (
    out_id      bigint,
    out_topic   text,
    out_key     text,
    out_payload text,
    out_cid     text,
    out_headers jsonb,
    out_note    text,
    out_order   text,
    out_ikey    text,
    out_status  text
);
