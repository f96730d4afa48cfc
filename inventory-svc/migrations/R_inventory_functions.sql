-- inventory-svc's functions, as they are now. This file is repeatable (R_, vx_pg.h): vx_pg_migrate
-- applies it again whenever it changes, so a function is changed here, in place, and the diff shows
-- what changed. The tables are in the numbered files.
--
-- inv_apply_batch(cmds) applies a call of commands in one transaction. The call's format, which
-- inventory-svc/main.c (decode) builds and vx_apply (common/) completes:
--   cmds  a JSON array of entries, in the order they are to be applied; each entry is
--     "c"    the command, validated by the service (common/vx_msg.c), in canonical form: "type"
--            (ReserveStock, ReleaseStock, Restock), "idempotency_key", and per type "order_id",
--            "items" [{"product_id", "quantity"}], "product_id", "quantity", "name";
--     "k"    the Kafka key of the command (absent when it had none): the key of its event;
--     "cid"  the correlation-id header of the command (absent when none): copied onto its event;
--     "h"    {"name": "value", ...} (absent when none): Kafka headers for what the command produces,
--            the latency gremlin's chaos-delay-ms (vx_chaos.h): stored with the outbox row, and
--            merged into the recorded row's when a duplicate replays it.
--   The caller guarantees that no idempotency key and no order id appears twice in one call.
-- Every command is applied in the same transaction as its outbox row, whose unique dedup_key is the
-- command's idempotency key: a command seen before changes nothing and its recorded event is sent
-- again. An event's event_id is 'inventory:' and that key, never the outbox row's id: the id comes
-- from a sequence that a restored database hands out again, the key is the same at every replay. A rejection is an ordinary outcome, so it never undoes its neighbours. It returns SETOF
-- inv_out (002_inventory_out.sql), one row per command: the outbox row to publish and the outcome.
-- Every product lock waits at most the session's lock_timeout (set by inventory-svc): a call that
-- waits longer fails with lock_not_available and the service sets the entry at fault aside.
--
-- inv_apply_batch has a fast path for the call that carries almost every order: new ReserveStock
-- commands whose lines all fit in the stock, taken together, written in four set-based statements.
-- Any other call (a Restock, a ReleaseStock, a key seen before, a released order, an unknown product,
-- a product that cannot serve every command of the call) goes to inv_apply_general, which loads and
-- locks everything the batch touches in a handful of set-based statements, applies the commands one
-- after another on in-memory arrays and writes the results back. tests/it/it_sql.c applies hundreds
-- of random calls both ways and expects the same rows and tables.
--
-- How their statements are planned: as order-svc's functions are, for the same measured reasons (see
-- order-svc/migrations/R_orders_functions.sql): once per connection (plan_cache_mode), tables reached
-- by key arrays (key = ANY (ARRAY(...)): a semi-join planned on a small outbox read the whole table at
-- every call once it grew, 60,000 rows for one ReleaseStock at 20,000 orders), no sequential scans,
-- no nested loops, no JIT.

-- The outcome of an event type, for the log and the metrics.
CREATE OR REPLACE FUNCTION inv_note(event_type text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE event_type WHEN 'StockReserved' THEN 'stock_reserved' WHEN 'StockRejected' THEN 'stock_rejected'
                           WHEN 'StockReleased' THEN 'stock_released' ELSE 'restocked' END
$$;

-- The StockReserved the fast path writes, as jsonb prints the general code's (vx_js): built piece by
-- piece.
CREATE OR REPLACE FUNCTION inv_reserved_text(oid text, items jsonb, ikey text, occurred_at text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT '{"type": "StockReserved", "items": ' || coalesce(items::text, 'null') || ', "event_id": '
           || vx_js('inventory:' || ikey) || ', "order_id": ' || vx_js(oid) || ', "occurred_at": ' || vx_js(occurred_at)
           || ', "idempotency_key": ' || vx_js(ikey) || '}'
$$;

-- The general code: any call.
CREATE OR REPLACE FUNCTION inv_apply_general(cmds jsonb) RETURNS SETOF inv_out
LANGUAGE plpgsql SET enable_seqscan = off SET enable_nestloop = off SET jit = off SET plan_cache_mode = force_generic_plan AS $$
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
    o_orders text[] := '{}';
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
      FROM (SELECT p.id, p.stock, p.name FROM products p WHERE p.id = ANY (ARRAY(
                SELECT l->>'product_id' FROM jsonb_array_elements(cmds) AS x(e),
                       jsonb_array_elements(x.e->'c'->'items') AS l
                 WHERE x.e->'c'->>'type' = 'ReserveStock'
                UNION ALL
                SELECT x.e->'c'->>'product_id' FROM jsonb_array_elements(cmds) AS x(e)
                 WHERE x.e->'c'->>'type' = 'Restock'
                UNION ALL
                SELECT h.product_id FROM holds h WHERE h.order_id = ANY (ARRAY(
                    SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e)
                     WHERE x.e->'c'->>'type' = 'ReleaseStock'))))
             ORDER BY p.id FOR UPDATE) s;
    SELECT coalesce(jsonb_object_agg(pids[g], g), '{}') INTO pidx FROM generate_subscripts(pids, 1) AS g;
    SELECT coalesce(jsonb_object_agg(dedup_key, true), '{}') INTO seen FROM outbox
     WHERE dedup_key = ANY (ARRAY(SELECT x.e->'c'->>'idempotency_key' FROM jsonb_array_elements(cmds) AS x(e)));
    SELECT coalesce(jsonb_object_agg(order_id, true), '{}') INTO rel FROM released_orders
     WHERE order_id = ANY (ARRAY(SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e)));
    SELECT coalesce(jsonb_object_agg(s.order_id, s.h), '{}') INTO held
      FROM (SELECT h.order_id, jsonb_object_agg(h.product_id, h.quantity) AS h FROM holds h
             WHERE h.order_id = ANY (ARRAY(SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e)
                                            WHERE x.e->'c'->>'type' = 'ReleaseStock'))
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
        o_orders := o_orders || o;
        o_payloads := o_payloads || (ev || jsonb_build_object('idempotency_key', k,
                                                              'event_id', 'inventory:' || k,
                                                              'occurred_at', ts))::text;
    END LOOP;

    UPDATE products p SET stock = u.s, updated_at = now()
      FROM unnest(pids, st) AS u(id, s) WHERE p.id = u.id AND p.id = ANY (pids) AND p.stock <> u.s;
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

    RETURN QUERY SELECT u.id, 'events'::text, u.mk, u.p, u.cid, u.h, inv_note(u.t), u.t, u.k, u.o, u.r
                   FROM unnest(o_ids, o_keys, o_mkeys, o_payloads, o_cids, o_hdrs, o_types, o_reasons, o_orders)
                     AS u(id, k, mk, p, cid, h, t, r, o);
    RETURN QUERY UPDATE outbox ob SET published_at = NULL, correlation_id = coalesce(d.cid, ob.correlation_id),
                                      headers = CASE WHEN d.h IS NULL THEN ob.headers
                                                     ELSE coalesce(ob.headers, '{}'::jsonb) || d.h END
                   FROM unnest(d_keys, d_cids, d_hdrs) AS d(k, cid, h)
                  WHERE ob.dedup_key = d.k AND ob.dedup_key = ANY (d_keys)
              RETURNING ob.id, ob.topic, ob.msg_key, ob.payload, ob.correlation_id, ob.headers,
                        'command_duplicate'::text, ob.payload::jsonb->>'type', ob.dedup_key,
                        ob.payload::jsonb->>'order_id', ob.payload::jsonb->>'reason';
END $$;

-- The fast path, then the general code for any other call.
CREATE OR REPLACE FUNCTION inv_apply_batch(cmds jsonb) RETURNS SETOF inv_out
LANGUAGE plpgsql SET enable_seqscan = off SET enable_nestloop = off SET jit = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n int := jsonb_array_length(cmds);
    ts text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    fits boolean;
    outs inv_out[]; -- what the fast path wrote
BEGIN
    IF n > 0 AND NOT cmds @? '$[*] ? (@.c.type != "ReserveStock")'
       AND NOT EXISTS (SELECT 1 FROM released_orders r WHERE r.order_id = ANY (ARRAY(
                           SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e))))
       AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.dedup_key = ANY (ARRAY(
                           SELECT x.e->'c'->>'idempotency_key' FROM jsonb_array_elements(cmds) AS x(e)))) THEN
        -- New reservations (no key recorded) of orders not released, taken whole when every product
        -- the call names can serve all of the call's lines. The products are not read first: the
        -- update takes only those that have the stock, locking them as it goes (by the primary key,
        -- in id order, as inv_apply_general locks them), and the holds are plain inserts whose primary
        -- key refuses an order that holds that product already (so no speculative insert, whose
        -- confirm record the WAL would carry). When the update took fewer products than the call
        -- needs (a shortfall, an unknown product, a concurrent change) or an insert met its key, the
        -- block (a subtransaction) is undone and inv_apply_general takes the call. The outbox ids are
        -- drawn last, so that a call the general code takes finds the sequence as it was, unless a
        -- concurrent twin of a command (same key, another partition or instance) commits first: the
        -- outbox insert then fails with unique_violation, and the general code finds the key.
        -- (Reading the products and the holds first probed their indexes twice; locking the
        -- products first, FOR UPDATE, wrote a WAL record per product.)
        BEGIN
            WITH l AS (
                SELECT i->>'product_id' AS pid, (i->>'quantity')::bigint AS q
                  FROM jsonb_array_elements(cmds) AS x(e), jsonb_array_elements(x.e->'c'->'items') AS i),
            t AS (
                SELECT l.pid, sum(l.q) AS q FROM l GROUP BY l.pid HAVING sum(l.q) <> 0),
            upd AS (
                UPDATE products p SET stock = p.stock - t.q, updated_at = now()
                  FROM t WHERE p.id = t.pid AND p.id = ANY (ARRAY(SELECT t2.pid FROM t AS t2)) AND p.stock >= t.q
                RETURNING p.id)
            SELECT (SELECT count(*) FROM upd) = (SELECT count(*) FROM t) INTO fits;
            IF NOT fits THEN
                RAISE SQLSTATE 'VX001' USING MESSAGE = 'inv_apply_batch: the stock cannot serve the whole call';
            END IF;
            INSERT INTO holds (order_id, product_id, quantity)
            SELECT x.e->'c'->>'order_id', i->>'product_id', sum((i->>'quantity')::bigint)
              FROM jsonb_array_elements(cmds) AS x(e), jsonb_array_elements(x.e->'c'->'items') AS i
             GROUP BY 1, 2;
            WITH e AS (
                SELECT x.n, nextval('outbox_id_seq') AS id, x.c->>'idempotency_key' AS ikey, x.c->>'order_id' AS oid,
                       coalesce(x.k, x.c->>'idempotency_key') AS mk, x.cid, x.h,
                       inv_reserved_text(x.c->>'order_id', x.c->'items', x.c->>'idempotency_key', ts) AS pay
                  FROM ROWS FROM (jsonb_to_recordset(cmds) AS (c jsonb, k text, cid text, h jsonb)) WITH ORDINALITY AS x(c, k, cid, h, n)),
            ins AS (
                INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
                SELECT e.id, e.ikey, 'events', e.mk, e.cid, e.h, e.pay FROM e ORDER BY e.n)
            SELECT array_agg(ROW(e.id, 'events', e.mk, e.pay, e.cid, e.h, 'stock_reserved', 'StockReserved', e.ikey,
                                 e.oid, NULL)::inv_out ORDER BY e.n)
              INTO outs FROM e;
            RETURN QUERY SELECT * FROM unnest(outs);
            RETURN;
        EXCEPTION WHEN unique_violation OR SQLSTATE 'VX001' THEN
            NULL; -- not every reservation fits, or one was seen before: the general code below
        END;
    END IF;
    RETURN QUERY SELECT * FROM inv_apply_general(cmds);
END $$;
