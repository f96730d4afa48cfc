-- inv_apply_batch as in 001, plus one optional member of a batch entry: "h", an object of Kafka
-- headers for what the command produces (the latency gremlin's chaos-delay-ms, vx_chaos.h). They are
-- stored with the outbox row, and merged into the recorded row's when a duplicate replays it.
CREATE OR REPLACE FUNCTION inv_apply_batch(cmds jsonb)
RETURNS TABLE (out_id bigint, out_topic text, out_key text, out_payload text, out_cid text, out_headers jsonb,
               out_type text, out_ikey text, out_reason text)
LANGUAGE plpgsql AS $$
DECLARE
    n int := jsonb_array_length(cmds);
    ts text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    pids text[];        -- every product the batch touches, in id order, locked
    st bigint[];        -- their stock, updated as the commands apply
    nm text[];          -- their names
    pidx jsonb;         -- product id -> index into the arrays above
    seen jsonb;         -- idempotency keys already recorded -> true
    rel jsonb;          -- orders already released -> true
    held jsonb;         -- order id -> {product id: quantity held} for the orders released here
    ids bigint[];       -- outbox ids, one per command
    o_ids bigint[] := '{}'; o_keys text[] := '{}'; o_mkeys text[] := '{}';
    o_cids text[] := '{}'; o_payloads text[] := '{}'; o_types text[] := '{}'; o_reasons text[] := '{}';
    o_hdrs jsonb[] := '{}'; d_keys text[] := '{}'; d_cids text[] := '{}'; d_hdrs jsonb[] := '{}';
    h_ord text[] := '{}'; h_pid text[] := '{}'; h_qty bigint[] := '{}';
    freed text[] := '{}';
    e jsonb; c jsonb; items jsonb; ev jsonb; given jsonb;
    k text; o text; typ text; pid text; bad text; hk text; hq text;
    i int; j int; x int; nl int; q bigint; need bigint;
BEGIN
    -- Products a Restock names exist before the locks, created in id order.
    INSERT INTO products (id, name, stock)
    SELECT DISTINCT ON (x.e->'c'->>'product_id') x.e->'c'->>'product_id',
           coalesce(x.e->'c'->>'name', x.e->'c'->>'product_id'), 0
      FROM jsonb_array_elements(cmds) AS x(e)
     WHERE x.e->'c'->>'type' = 'Restock'
     ORDER BY x.e->'c'->>'product_id'
        ON CONFLICT (id) DO NOTHING;

    -- Every product the batch touches is locked now, in one global order, so concurrent batches
    -- (other instances, other partitions) can never deadlock whatever the order of their commands.
    SELECT coalesce(array_agg(s.id ORDER BY s.id), '{}'), coalesce(array_agg(s.stock ORDER BY s.id), '{}'),
           coalesce(array_agg(s.name ORDER BY s.id), '{}')
      INTO pids, st, nm
      FROM (SELECT p.id, p.stock, p.name FROM products p WHERE p.id IN (
                SELECT l->>'product_id' FROM jsonb_array_elements(cmds) AS x(e),
                       jsonb_array_elements(x.e->'c'->'items') AS l
                 WHERE x.e->'c'->>'type' = 'ReserveStock'
                UNION
                SELECT x.e->'c'->>'product_id' FROM jsonb_array_elements(cmds) AS x(e)
                 WHERE x.e->'c'->>'type' = 'Restock'
                UNION
                SELECT h.product_id FROM holds h WHERE h.order_id IN (
                    SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e)
                     WHERE x.e->'c'->>'type' = 'ReleaseStock'))
             ORDER BY p.id FOR UPDATE) s;
    SELECT coalesce(jsonb_object_agg(pids[g], g), '{}') INTO pidx FROM generate_subscripts(pids, 1) AS g;
    SELECT coalesce(jsonb_object_agg(dedup_key, true), '{}') INTO seen FROM outbox
     WHERE dedup_key IN (SELECT x.e->'c'->>'idempotency_key' FROM jsonb_array_elements(cmds) AS x(e));
    SELECT coalesce(jsonb_object_agg(order_id, true), '{}') INTO rel FROM released_orders
     WHERE order_id IN (SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e));
    SELECT coalesce(jsonb_object_agg(s.order_id, s.h), '{}') INTO held
      FROM (SELECT h.order_id, jsonb_object_agg(h.product_id, h.quantity) AS h FROM holds h
             WHERE h.order_id IN (SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e)
                                   WHERE x.e->'c'->>'type' = 'ReleaseStock')
             GROUP BY h.order_id) s;
    SELECT array_agg(nextval('outbox_id_seq')) INTO ids FROM generate_series(1, n);

    i := -1;
    FOR e IN SELECT value FROM jsonb_array_elements(cmds) LOOP
        i := i + 1;
        c := e->'c';
        k := c->>'idempotency_key';
        typ := c->>'type';
        o := c->>'order_id';
        IF seen ? k THEN -- seen before: change nothing, publish the recorded event again
            d_keys := d_keys || k;
            d_cids := d_cids || (e->>'cid');
            d_hdrs := d_hdrs || (e->'h');
            CONTINUE;
        END IF;

        IF typ = 'ReserveStock' THEN
            items := c->'items';
            nl := jsonb_array_length(items);
            bad := NULL;
            IF rel ? o THEN
                ev := jsonb_build_object('type', 'StockRejected', 'order_id', o, 'items', items,
                                         'reason', 'order_released');
            ELSE
                FOR j IN 0 .. nl - 1 LOOP
                    IF NOT pidx ? (items->j->>'product_id') THEN
                        bad := items->j->>'product_id';
                        EXIT;
                    END IF;
                END LOOP;
                IF bad IS NOT NULL THEN
                    ev := jsonb_build_object('type', 'StockRejected', 'order_id', o, 'items', items,
                                             'reason', 'unknown_product', 'product_id', bad);
                ELSE
                    -- take line by line (a product listed twice takes twice); on a shortfall give
                    -- back what this command took and refuse it whole
                    j := 0;
                    WHILE j < nl LOOP
                        x := (pidx->>(items->j->>'product_id'))::int;
                        q := (items->j->>'quantity')::bigint;
                        IF st[x] < q THEN
                            bad := pids[x];
                            EXIT;
                        END IF;
                        st[x] := st[x] - q;
                        j := j + 1;
                    END LOOP;
                    IF bad IS NOT NULL THEN
                        FOR jj IN 0 .. j - 1 LOOP
                            x := (pidx->>(items->jj->>'product_id'))::int;
                            st[x] := st[x] + (items->jj->>'quantity')::bigint;
                        END LOOP;
                        need := 0;
                        FOR jj IN 0 .. nl - 1 LOOP
                            IF items->jj->>'product_id' = bad THEN
                                need := need + (items->jj->>'quantity')::bigint;
                            END IF;
                        END LOOP;
                        ev := jsonb_build_object('type', 'StockRejected', 'order_id', o, 'items', items,
                                                 'reason', 'insufficient_stock', 'product_id', bad,
                                                 'requested', need, 'available', st[(pidx->>bad)::int]);
                    ELSE
                        FOR jj IN 0 .. nl - 1 LOOP
                            h_ord := h_ord || o;
                            h_pid := h_pid || (items->jj->>'product_id');
                            h_qty := h_qty || (items->jj->>'quantity')::bigint;
                        END LOOP;
                        ev := jsonb_build_object('type', 'StockReserved', 'order_id', o, 'items', items);
                    END IF;
                END IF;
            END IF;
        ELSIF typ = 'ReleaseStock' THEN
            given := '[]';
            IF held ? o THEN
                FOR hk, hq IN SELECT key, value FROM jsonb_each_text(held->o) ORDER BY key LOOP
                    x := (pidx->>hk)::int;
                    st[x] := st[x] + hq::bigint;
                    given := given || jsonb_build_object('product_id', hk, 'quantity', hq::bigint);
                END LOOP;
            END IF;
            freed := freed || o;
            ev := jsonb_build_object('type', 'StockReleased', 'order_id', o, 'items', given);
        ELSE -- Restock
            pid := c->>'product_id';
            q := (c->>'quantity')::bigint;
            x := (pidx->>pid)::int;
            st[x] := st[x] + q;
            ev := jsonb_build_object('type', 'Restocked', 'product_id', pid, 'name', nm[x], 'quantity', q,
                                     'stock', st[x],
                                     'items', jsonb_build_array(jsonb_build_object('product_id', pid, 'quantity', q)));
        END IF;

        o_ids := o_ids || ids[i + 1];
        o_keys := o_keys || k;
        o_mkeys := o_mkeys || coalesce(e->>'k', k);
        o_cids := o_cids || (e->>'cid');
        o_hdrs := o_hdrs || (e->'h');
        o_types := o_types || (ev->>'type');
        o_reasons := o_reasons || (ev->>'reason');
        o_payloads := o_payloads || (ev || jsonb_build_object('idempotency_key', k,
                                                              'event_id', 'inventory-' || ids[i + 1],
                                                              'occurred_at', ts))::text;
    END LOOP;

    UPDATE products p SET stock = u.s, updated_at = now()
      FROM unnest(pids, st) AS u(id, s) WHERE p.id = u.id AND p.stock <> u.s;
    INSERT INTO holds (order_id, product_id, quantity)
    SELECT h.o, h.p, sum(h.q) FROM unnest(h_ord, h_pid, h_qty) AS h(o, p, q) GROUP BY h.o, h.p
        ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = holds.quantity + EXCLUDED.quantity;
    DELETE FROM holds WHERE order_id = ANY (freed);
    INSERT INTO released_orders (order_id) SELECT DISTINCT f FROM unnest(freed) AS f ON CONFLICT DO NOTHING;
    -- A concurrent twin of a command (same key, another partition or instance) makes this insert
    -- fail with unique_violation once the twin commits; the service retries the batch, which then
    -- finds the key recorded.
    INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
    SELECT u.id, u.k, 'events', u.mk, u.cid, u.h, u.p
      FROM unnest(o_ids, o_keys, o_mkeys, o_cids, o_hdrs, o_payloads) AS u(id, k, mk, cid, h, p);

    RETURN QUERY SELECT u.id, 'events'::text, u.mk, u.p, u.cid, u.h, u.t, u.k, u.r
                   FROM unnest(o_ids, o_keys, o_mkeys, o_payloads, o_cids, o_hdrs, o_types, o_reasons)
                     AS u(id, k, mk, p, cid, h, t, r);
    RETURN QUERY UPDATE outbox ob SET published_at = NULL, correlation_id = coalesce(d.cid, ob.correlation_id),
                                      headers = CASE WHEN d.h IS NULL THEN ob.headers
                                                     ELSE coalesce(ob.headers, '{}'::jsonb) || d.h END
                   FROM unnest(d_keys, d_cids, d_hdrs) AS d(k, cid, h)
                  WHERE ob.dedup_key = d.k
              RETURNING ob.id, ob.topic, ob.msg_key, ob.payload, ob.correlation_id, ob.headers,
                        ob.payload::jsonb->>'type', ob.dedup_key, ob.payload::jsonb->>'reason';
END $$;
