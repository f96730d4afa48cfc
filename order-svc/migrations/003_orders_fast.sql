-- Two fast paths in front of ord_apply_batch (002), for the two kinds of call that carry almost every
-- order: a call of PlaceOrders for new orders, and a call of inventory answers to orders that wait for
-- them. order-svc sends commands and inventory events in separate calls, so that both stay whole.
--
-- Each fast path writes what 002 would write for such a call (the same order rows, history rows,
-- outbox rows and returned rows, in input order) in three or four set-based statements instead of
-- ten statements and a loop over the entries: a call of one entry costs about 0.7 ms instead of 1.2,
-- a call of 1,000 about 37 ms instead of 58 (psql on this machine). A call that is not all of one
-- such kind goes to 002's general code, which is left as it is (renamed ord_apply_general).
--
-- Every function here plans its statements once per connection (plan_cache_mode): their parameter is
-- one jsonb array, whose contents no custom plan could estimate better, and a custom plan per call
-- cost about 0.1 ms per statement.

ALTER FUNCTION ord_apply_batch(jsonb) RENAME TO ord_apply_general;
ALTER FUNCTION ord_apply_general(jsonb) SET plan_cache_mode = force_generic_plan;

-- ord_result_body was declared IMMUTABLE over a STABLE body (jsonb_build_object), which PostgreSQL
-- refuses to inline: every call ran as a query of its own, some 30 us per OrderResult. STABLE, as its
-- body is, it is inlined into the statements that call it, 002's loop included.
ALTER FUNCTION ord_result_body(orders) STABLE;

-- The OrderResult payload of an order in a final status, with the event id of its outbox row.
CREATE FUNCTION ord_result_payload(o orders, outbox_id bigint, ts text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT (ord_result_body(o) || jsonb_build_object('event_id', 'orders-' || outbox_id, 'occurred_at', ts))::text
$$;

CREATE FUNCTION ord_apply_batch(cmds jsonb) RETURNS SETOF ord_out LANGUAGE plpgsql
SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n int := jsonb_array_length(cmds);
    kinds text[];   -- the distinct types of the call's commands
    placed int;     -- orders the PlaceOrders created
    ready int;      -- events that answer a waiting order
BEGIN
    SELECT array_agg(DISTINCT x.e->'c'->>'type') INTO kinds FROM jsonb_array_elements(cmds) AS x(e);

    IF kinds = '{PlaceOrder}' THEN
        -- New orders. When every entry made one (so no two of them share a key or an order id, and
        -- none existed), each gets its PENDING history row and its ReserveStock, as in 002; otherwise
        -- the inserts are undone (the block is a subtransaction) and 002 applies the call from the start.
        BEGIN
            WITH ins AS (
                INSERT INTO orders (id, idempotency_key, customer_id, items, request_hash, status, correlation_id)
                SELECT x.e->>'oid', x.e->'c'->>'idempotency_key', x.e->'c'->>'customer_id', x.e->'c'->'items',
                       x.e->>'hash', 'PENDING', x.e->>'cid'
                  FROM jsonb_array_elements(cmds) AS x(e) ORDER BY x.e->>'oid'
                    ON CONFLICT DO NOTHING
                RETURNING id)
            SELECT count(*) INTO placed FROM ins;
            IF placed < n THEN
                RAISE EXCEPTION USING ERRCODE = 'VX001'; -- not all new: undo, and on to 002
            END IF;
            INSERT INTO order_history (order_id, status)
            SELECT x.e->>'oid', 'PENDING' FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n) ORDER BY x.n;
            RETURN QUERY
            WITH e AS (
                SELECT x.e, x.n, nextval('outbox_id_seq') AS id, 'order:' || (x.e->>'oid') || ':reserve' AS dk
                  FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n)),
            ins AS (
                INSERT INTO outbox AS b (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
                SELECT e.id, e.dk, 'inventory.commands', e.e->>'oid', e.e->>'cid', e.e->'h',
                       jsonb_build_object('type', 'ReserveStock', 'idempotency_key', e.dk, 'order_id', e.e->>'oid',
                                          'items', e.e->'c'->'items')::text
                  FROM e ORDER BY e.n
                    ON CONFLICT (dedup_key) DO NOTHING
                RETURNING b.id, b.topic, b.msg_key, b.payload, b.correlation_id, b.headers)
            SELECT ins.id, ins.topic, ins.msg_key, ins.payload, e.e->>'cid', ins.headers, 'order_placed',
                   e.e->>'oid', e.e->'c'->>'idempotency_key', 'PENDING'
              FROM e LEFT JOIN ins ON ins.id = e.id
             ORDER BY e.n;
            RETURN;
        EXCEPTION WHEN SQLSTATE 'VX001' THEN
            NULL;
        END;

    ELSIF kinds <@ '{StockReserved,StockRejected}' AND NOT cmds @? '$[*] ? (@.fresh == true)' THEN
        -- Inventory's answers: when every one is the answer to its order's own ReserveStock and the
        -- order waits for it with no cancellation asked, each order is decided here: CONFIRMED or
        -- REJECTED, a history row, an OrderResult with the PlaceOrder's correlation id. The orders
        -- are locked in id order first, as 002 locks them.
        PERFORM 1 FROM orders b WHERE b.id IN (SELECT x.e->>'oid' FROM jsonb_array_elements(cmds) AS x(e))
          ORDER BY b.id FOR UPDATE;
        SELECT count(DISTINCT b.id) INTO ready
          FROM jsonb_array_elements(cmds) AS x(e) JOIN orders b ON b.id = x.e->>'oid'
         WHERE b.status = 'PENDING' AND NOT b.cancel_requested
           AND coalesce(x.e->'c'->>'idempotency_key', 'order:' || b.id || ':reserve') = 'order:' || b.id || ':reserve';
        IF ready = n THEN
            RETURN QUERY
            WITH e AS (
                SELECT x.e, x.n, x.e->>'oid' AS oid, x.e->'c'->>'type' = 'StockReserved' AS ok
                  FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n)),
            upd AS (
                UPDATE orders b SET status = CASE WHEN e.ok THEN 'CONFIRMED' ELSE 'REJECTED' END,
                                    reason = CASE WHEN e.ok THEN NULL ELSE coalesce(e.e->'c'->>'reason', 'rejected') END,
                                    product_id = CASE WHEN e.ok THEN NULL ELSE e.e->'c'->>'product_id' END,
                                    updated_at = now()
                  FROM e WHERE b.id = e.oid
                RETURNING b AS o),
            hist AS (
                INSERT INTO order_history (order_id, status, reason)
                SELECT (u.o).id, (u.o).status, (u.o).reason FROM upd u JOIN e ON e.oid = (u.o).id ORDER BY e.n),
            res AS ( -- outbox ids in input order, as 002 gives them
                SELECT s.n, s.o, nextval('outbox_id_seq') AS id
                  FROM (SELECT e.n, u.o FROM e JOIN upd u ON (u.o).id = e.oid ORDER BY e.n) s),
            ins AS (
                INSERT INTO outbox AS b (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
                SELECT r.id, ord_result_key(r.o), 'orders.results', (r.o).id, (r.o).correlation_id, e.e->'h',
                       ord_result_payload(r.o, r.id, ord_ts(now()))
                  FROM res r JOIN e ON e.n = r.n ORDER BY r.n
                    ON CONFLICT (dedup_key) DO NOTHING
                RETURNING b.id, b.topic, b.msg_key, b.payload, b.correlation_id, b.headers)
            SELECT ins.id, ins.topic, ins.msg_key, ins.payload,
                   CASE WHEN ins.id IS NOT NULL THEN ins.correlation_id ELSE e.e->>'cid' END,
                   ins.headers, CASE WHEN (r.o).status = 'CONFIRMED' THEN 'order_confirmed' ELSE 'order_rejected' END,
                   (r.o).id, e.e->'c'->>'idempotency_key', (r.o).status
              FROM e JOIN res r ON r.n = e.n LEFT JOIN ins ON ins.id = r.id
             ORDER BY e.n;
            RETURN;
        END IF;
    END IF;

    RETURN QUERY SELECT * FROM ord_apply_general(cmds);
END $$;
