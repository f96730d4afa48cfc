-- order-svc owns orders. ord_apply_batch applies a batch of commands (PlaceOrder, CancelOrder) and
-- inventory events (StockReserved, StockRejected) in one transaction; every status change is made
-- there together with its history row and its outbox rows (common/migrations/000_outbox.sql), so
-- an order's state, its history and what it tells the world can never disagree.
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

-- RFC 3339 in UTC, as every Valerix timestamp is written.
CREATE FUNCTION ord_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The dedup key of an order's OrderResult for a status: one result per order and final status,
-- so an order's latest result is always found from its current status alone.
CREATE FUNCTION ord_result_key(o orders) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'order:' || o.id || ':result:' || o.status
$$;

-- Writes one outbox row (ON CONFLICT: a row already there is not written twice) and returns it.
-- An OrderResult gets its event_id and occurred_at here, from the row id.
CREATE FUNCTION ord_emit(dedup text, topic text, msg_key text, cid text, payload jsonb, headers jsonb)
RETURNS ord_out LANGUAGE plpgsql AS $$
DECLARE
    r ord_out;
BEGIN
    r.out_id := nextval('outbox_id_seq');
    IF payload->>'type' = 'OrderResult' THEN
        payload := payload || jsonb_build_object('event_id', 'orders-' || r.out_id, 'occurred_at', ord_ts(now()));
    END IF;
    INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
    VALUES (r.out_id, dedup, topic, msg_key, cid, headers, payload::text)
        ON CONFLICT (dedup_key) DO NOTHING;
    IF NOT FOUND THEN
        r.out_id := NULL; -- nothing new to publish
        RETURN r;
    END IF;
    r.out_topic := topic;
    r.out_key := msg_key;
    r.out_payload := payload::text;
    r.out_cid := cid;
    r.out_headers := headers;
    RETURN r;
END $$;

-- The OrderResult of an order in its current (final) status. It answers the command that decided
-- it: the CancelOrder for CANCELLED, the PlaceOrder otherwise.
CREATE FUNCTION ord_result(o orders, cid text, headers jsonb) RETURNS ord_out LANGUAGE plpgsql AS $$
BEGIN
    RETURN ord_emit(ord_result_key(o), 'orders.results', o.id, cid,
        jsonb_build_object('type', 'OrderResult', 'order_id', o.id,
            'idempotency_key', CASE WHEN o.status = 'CANCELLED' THEN coalesce(o.cancel_key, o.idempotency_key)
                                    ELSE o.idempotency_key END,
            'customer_id', o.customer_id, 'status', o.status, 'reason', o.reason, 'items', o.items,
            'request_hash', o.request_hash)
        || CASE WHEN o.product_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('product_id', o.product_id) END,
        headers);
END $$;

-- Sends an order's latest result again (to a requester who asked again) and changes nothing else.
-- The row is claimed now so that the sweep does not send it a second time while this one is on its
-- way. A row pruned from the outbox is written again from the order.
CREATE FUNCTION ord_replay(o orders, cid text) RETURNS ord_out LANGUAGE plpgsql AS $$
DECLARE
    r ord_out;
BEGIN
    UPDATE outbox b SET published_at = NULL, claimed_at = now(), correlation_id = coalesce(cid, b.correlation_id),
                        headers = coalesce(b.headers, '{}'::jsonb) || '{"idempotent-replayed":"true"}'::jsonb
     WHERE b.dedup_key = ord_result_key(o)
    RETURNING b.id, b.topic, b.msg_key, b.payload, b.correlation_id, b.headers
         INTO r.out_id, r.out_topic, r.out_key, r.out_payload, r.out_cid, r.out_headers;
    IF FOUND THEN
        RETURN r;
    END IF;
    RETURN ord_result(o, coalesce(cid, CASE WHEN o.status = 'CANCELLED' THEN o.cancel_correlation_id END,
                                  o.correlation_id),
                      '{"idempotent-replayed":"true"}'::jsonb);
END $$;

-- Moves an order to a status, with its history row. Returns the order as it is now.
CREATE FUNCTION ord_set_status(oid text, st text, why text, pid text) RETURNS orders LANGUAGE plpgsql AS $$
DECLARE
    o orders;
BEGIN
    UPDATE orders SET status = st, reason = why, product_id = pid, updated_at = now() WHERE id = oid RETURNING * INTO o;
    INSERT INTO order_history (order_id, status, reason) VALUES (oid, st, why);
    RETURN o;
END $$;

-- Cancels an order whose stock is held: CANCELLED, ReleaseStock to inventory, OrderResult.
-- Returns the two outbox rows, the first with the outcome for the log (ikey: the input's key).
-- cid: the CancelOrder's correlation id.
CREATE FUNCTION ord_cancel_held(oid text, cid text, ikey text) RETURNS SETOF ord_out LANGUAGE plpgsql AS $$
DECLARE
    o orders;
    r ord_out;
BEGIN
    o := ord_set_status(oid, 'CANCELLED', 'cancelled', NULL);
    r := ord_emit('order:' || oid || ':release', 'inventory.commands', oid, cid,
        jsonb_build_object('type', 'ReleaseStock', 'idempotency_key', 'order:' || oid || ':release', 'order_id', oid),
        NULL);
    r.out_note := 'order_cancelled';
    r.out_order := oid;
    r.out_ikey := ikey;
    r.out_status := 'CANCELLED';
    IF r.out_id IS NULL THEN
        r.out_cid := cid;
    END IF;
    RETURN NEXT r;
    r := ord_result(o, cid, NULL);
    IF r.out_id IS NOT NULL THEN
        RETURN NEXT r;
    END IF;
END $$;

-- Applies a batch: cmds is a JSON array of entries {"c": what, "oid": order id, "cid": correlation
-- id, "hash": request hash (PlaceOrder)}, where "what" is a validated command in canonical form or
-- an inventory event {type, order_id, idempotency_key, reason, product_id, items}. One round trip
-- and one transaction for the whole batch. Returns ord_out rows, in input order.
CREATE FUNCTION ord_apply_batch(cmds jsonb) RETURNS SETOF ord_out LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    c jsonb;
    n bigint;
    t text;
    k text;
    oid text;
    cid text;
    o orders;
    r ord_out;
    fresh jsonb; -- {order id: ordinal of the PlaceOrder that created it in this batch}
BEGIN
    -- New orders first, in id order. Among PlaceOrders of this batch sharing a key or an order id the
    -- earliest wins; an order that exists already (same id or same key) is left as it is.
    WITH p AS (
        SELECT x.e, x.n FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n)
         WHERE x.e->'c'->>'type' = 'PlaceOrder'),
    by_key AS (
        SELECT DISTINCT ON (p.e->'c'->>'idempotency_key') p.e, p.n FROM p
         ORDER BY p.e->'c'->>'idempotency_key', p.n),
    win AS (
        SELECT DISTINCT ON (b.e->>'oid') b.e, b.n FROM by_key b ORDER BY b.e->>'oid', b.n),
    ins AS (
        INSERT INTO orders (id, idempotency_key, customer_id, items, request_hash, status, correlation_id)
        SELECT w.e->>'oid', w.e->'c'->>'idempotency_key', w.e->'c'->>'customer_id', w.e->'c'->'items',
               w.e->>'hash', 'PENDING', w.e->>'cid'
          FROM win w ORDER BY w.e->>'oid'
            ON CONFLICT DO NOTHING
        RETURNING id)
    SELECT coalesce(jsonb_object_agg(ins.id, w.n), '{}') INTO fresh FROM win w JOIN ins ON ins.id = w.e->>'oid';

    -- Every order the batch touches is locked now, in one global order: the orders named by id, and
    -- those a PlaceOrder's key belongs to under another id. (A UNION of index lookups: an OR here
    -- would read the whole table at every batch.)
    PERFORM 1 FROM orders
      WHERE id IN (SELECT x.e->>'oid' FROM jsonb_array_elements(cmds) AS x(e)
                   UNION
                   SELECT k.id FROM jsonb_array_elements(cmds) AS x(e)
                     JOIN orders k ON k.idempotency_key = x.e->'c'->>'idempotency_key'
                    WHERE x.e->'c'->>'type' = 'PlaceOrder')
      ORDER BY id FOR UPDATE;

    FOR e, n IN SELECT x.e, x.n FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n) LOOP
        c := e->'c';
        t := c->>'type';
        k := c->>'idempotency_key';
        oid := e->>'oid';
        cid := e->>'cid';
        r := NULL;
        SELECT * INTO o FROM orders WHERE id = oid;

        IF t = 'PlaceOrder' AND (fresh->>oid)::bigint = n THEN
            INSERT INTO order_history (order_id, status) VALUES (oid, 'PENDING');
            r := ord_emit('order:' || oid || ':reserve', 'inventory.commands', oid, cid,
                jsonb_build_object('type', 'ReserveStock', 'idempotency_key', 'order:' || oid || ':reserve',
                                   'order_id', oid, 'items', c->'items'),
                NULL);
            r.out_note := 'order_placed';

        ELSIF t = 'PlaceOrder' THEN
            -- Seen before, by order id or by key: nothing changes. A decided order's result is sent
            -- again; a pending one's comes when inventory answers.
            IF o.id IS NULL THEN
                SELECT * INTO o FROM orders WHERE idempotency_key = k;
            END IF;
            IF o.status <> 'PENDING' THEN
                r := ord_replay(o, cid);
            END IF;
            r.out_note := 'order_duplicate';

        ELSIF t = 'CancelOrder' THEN
            IF EXISTS (SELECT 1 FROM outbox WHERE dedup_key = 'cancel:' || k) THEN
                -- This very CancelOrder was answered not_found before: the same answer again.
                UPDATE outbox b SET published_at = NULL, claimed_at = now(),
                                    correlation_id = coalesce(cid, b.correlation_id),
                                    headers = coalesce(b.headers, '{}'::jsonb) || '{"idempotent-replayed":"true"}'::jsonb
                 WHERE b.dedup_key = 'cancel:' || k
                RETURNING b.id, b.topic, b.msg_key, b.payload, b.correlation_id, b.headers
                     INTO r.out_id, r.out_topic, r.out_key, r.out_payload, r.out_cid, r.out_headers;
                r.out_note := 'cancel_duplicate';
                o := NULL;
                o.status := 'REJECTED';
            ELSIF o.id IS NULL OR (fresh->>oid)::bigint > n THEN -- unknown, or placed later in this batch
                r := ord_emit('cancel:' || k, 'orders.results', oid, cid,
                    jsonb_build_object('type', 'OrderResult', 'order_id', oid, 'idempotency_key', k,
                                       'status', 'REJECTED', 'reason', 'not_found', 'items', '[]'::jsonb),
                    NULL);
                r.out_note := 'cancel_not_found';
                o := NULL;
                o.status := 'REJECTED';
            ELSIF o.status = 'PENDING' THEN
                -- Inventory has not answered yet: the cancellation is carried out when it does.
                UPDATE orders SET cancel_requested = true, cancel_key = coalesce(cancel_key, k),
                                  cancel_correlation_id = coalesce(cancel_correlation_id, cid), updated_at = now()
                 WHERE id = oid;
                r.out_note := 'cancel_requested';
            ELSIF o.status = 'CONFIRMED' THEN
                UPDATE orders SET cancel_key = k, cancel_correlation_id = cid WHERE id = oid;
                RETURN QUERY SELECT * FROM ord_cancel_held(oid, cid, k);
                CONTINUE;
            ELSIF k = o.cancel_key THEN -- this very CancelOrder again: the same answer again
                r := ord_replay(o, cid);
                r.out_note := 'cancel_duplicate';
            ELSE
                -- Another CancelOrder of a decided order: nothing changes, and it is answered under
                -- its own key, so whoever sent it can match the answer.
                r := ord_emit('cancel:' || k, 'orders.results', oid, cid,
                    jsonb_build_object('type', 'OrderResult', 'order_id', o.id, 'idempotency_key', k,
                                       'customer_id', o.customer_id, 'status', o.status, 'reason', o.reason,
                                       'items', o.items, 'request_hash', o.request_hash)
                    || CASE WHEN o.product_id IS NULL THEN '{}'::jsonb
                            ELSE jsonb_build_object('product_id', o.product_id) END,
                    '{"idempotent-replayed":"true"}'::jsonb);
                r.out_note := 'cancel_duplicate';
            END IF;

        ELSE
            -- An inventory event. Only the answer to this order's own ReserveStock counts, and only
            -- while the order waits for it; anything else (a redelivery, an order created in this very
            -- batch, someone else's reservation under the same order id) changes nothing.
            IF o.id IS NULL OR o.status <> 'PENDING' OR fresh ? oid
               OR coalesce(k, 'order:' || oid || ':reserve') <> 'order:' || oid || ':reserve' THEN
                r.out_note := 'event_ignored';
            ELSIF t = 'StockReserved' AND o.cancel_requested THEN
                RETURN QUERY SELECT * FROM ord_cancel_held(oid, o.cancel_correlation_id, k);
                CONTINUE;
            ELSIF t = 'StockReserved' THEN
                o := ord_set_status(oid, 'CONFIRMED', NULL, NULL);
                r := ord_result(o, o.correlation_id, NULL);
                r.out_note := 'order_confirmed';
            ELSIF o.cancel_requested THEN -- StockRejected: nothing is held, nothing to release
                o := ord_set_status(oid, 'CANCELLED', 'cancelled', NULL);
                r := ord_result(o, o.cancel_correlation_id, NULL);
                r.out_note := 'order_cancelled';
            ELSE
                o := ord_set_status(oid, 'REJECTED', coalesce(c->>'reason', 'rejected'), c->>'product_id');
                r := ord_result(o, o.correlation_id, NULL);
                r.out_note := 'order_rejected';
            END IF;
        END IF;
        r.out_order := coalesce(o.id, oid);
        r.out_ikey := k;
        r.out_status := o.status;
        IF r.out_id IS NULL THEN
            r.out_cid := cid; -- a row only for the log: the input's correlation id
        END IF;
        RETURN NEXT r;
    END LOOP;
END $$;
