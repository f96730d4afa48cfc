-- What inv_apply_batch returns, one row per command of the call, as a named type (order-svc's
-- ord_out likewise), so that the service finds its columns by name at start (vx_apply.h): the
-- outbox row to publish (out_id .. out_headers, the columns vx_outbox_publish reads), then the
-- outcome: out_note (stock_reserved, stock_rejected, stock_released, restocked, command_duplicate),
-- the event's type, the command's idempotency key, the order and the reason of a rejection.
CREATE TYPE inv_out AS (
    out_id      bigint,
    out_topic   text,
    out_key     text,
    out_payload text,
    out_cid     text,
    out_headers jsonb,
    out_note    text,
    out_type    text,
    out_ikey    text,
    out_order   text,
    out_reason  text
);
-- The functions returned a table of their own before; R_inventory_functions.sql creates them anew.
DROP FUNCTION IF EXISTS inv_apply_batch(jsonb);
DROP FUNCTION IF EXISTS inv_apply_general(jsonb);
