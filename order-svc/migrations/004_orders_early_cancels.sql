-- CancelOrders that came for an order not placed yet. A CancelOrder on another partition than its
-- PlaceOrder (or both replayed after a restore) may be applied first: it is answered not_found, as
-- before, and remembered here, so that the PlaceOrder of that order id, when it comes, ends the order
-- CANCELLED at once with nothing reserved (R_orders_functions.sql). Kept as long as the outbox keeps
-- idempotency keys (VX_OUTBOX_RETENTION_S), as inventory-svc keeps released_orders.
CREATE TABLE early_cancels (
    order_id       text PRIMARY KEY,
    cancel_key     text NOT NULL,                  -- the first such CancelOrder's idempotency key
    correlation_id text,                           -- and its correlation-id header
    cancelled_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX early_cancels_at ON early_cancels (cancelled_at);
