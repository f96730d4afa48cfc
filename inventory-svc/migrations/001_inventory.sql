-- inventory-svc owns stock. Every command is applied by inv_apply_batch in the same transaction as
-- its outbox row (common/migrations/000_outbox.sql), whose unique dedup_key is the command's
-- idempotency key: a command seen before changes nothing and its recorded event is sent again.
CREATE TABLE products (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    stock      bigint NOT NULL CHECK (stock >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What each order holds right now; a release gives all of it back and deletes the rows.
-- (No foreign key to products: rows are written only for products just locked and checked.)
CREATE TABLE holds (
    order_id   text NOT NULL,
    product_id text NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, product_id)
);

-- Orders released, even before any reservation arrived: a reservation that comes after its
-- release is refused, so a release that overtakes it cannot leave stock held for ever.
CREATE TABLE released_orders (
    order_id    text PRIMARY KEY,
    released_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX released_orders_at ON released_orders (released_at);

-- Applies a batch: cmds is a JSON array of {"c": command, "k": Kafka key, "cid": correlation id},
-- commands already validated by the service, which also guarantees that no idempotency key and no
-- order id appears twice in one batch. One round trip and one transaction for the whole batch; a
-- rejection is an ordinary outcome, so it never undoes its neighbours.
--
-- Shape, for speed: a handful of set-based statements load and lock everything the batch touches,
-- the commands are then applied one after another on in-memory arrays (no statement per command),
-- and a handful of set-based statements write the results back. Returns the outbox rows to
-- publish as (id, topic, msg_key, payload, correlation_id, headers), then for the service's log
-- the event's type, idempotency key and reason.
CREATE FUNCTION inv_apply_batch(cmds jsonb)
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
    d_keys text[] := '{}'; d_cids text[] := '{}';
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
    INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, payload)
    SELECT u.id, u.k, 'events', u.mk, u.cid, u.p FROM unnest(o_ids, o_keys, o_mkeys, o_cids, o_payloads) AS u(id, k, mk, cid, p);

    RETURN QUERY SELECT u.id, 'events'::text, u.mk, u.p, u.cid, NULL::jsonb, u.t, u.k, u.r
                   FROM unnest(o_ids, o_keys, o_mkeys, o_payloads, o_cids, o_types, o_reasons)
                     AS u(id, k, mk, p, cid, t, r);
    RETURN QUERY UPDATE outbox ob SET published_at = NULL, correlation_id = coalesce(d.cid, ob.correlation_id)
                   FROM unnest(d_keys, d_cids) AS d(k, cid)
                  WHERE ob.dedup_key = d.k
              RETURNING ob.id, ob.topic, ob.msg_key, ob.payload, ob.correlation_id, ob.headers,
                        ob.payload::jsonb->>'type', ob.dedup_key, ob.payload::jsonb->>'reason';
END $$;
