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
CREATE TABLE holds (
    order_id   text NOT NULL,
    product_id text NOT NULL REFERENCES products (id),
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

-- The lines of a command, one row per product with the quantities of repeated lines summed.
CREATE FUNCTION inv_lines(c jsonb) RETURNS TABLE (product_id text, quantity bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT l->>'product_id', sum((l->>'quantity')::bigint)
      FROM jsonb_array_elements(c->'items') AS l GROUP BY 1
$$;

CREATE FUNCTION inv_reserve(c jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    o text := c->>'order_id';
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM released_orders WHERE order_id = o) THEN
        RETURN jsonb_build_object('type', 'StockRejected', 'order_id', o, 'items', c->'items',
                                  'reason', 'order_released');
    END IF;
    FOR r IN SELECT l.product_id, l.quantity, p.stock, p.id IS NULL AS unknown
               FROM inv_lines(c) l LEFT JOIN products p ON p.id = l.product_id
              ORDER BY l.product_id LOOP
        IF r.unknown THEN
            RETURN jsonb_build_object('type', 'StockRejected', 'order_id', o, 'items', c->'items',
                                      'reason', 'unknown_product', 'product_id', r.product_id);
        ELSIF r.stock < r.quantity THEN
            RETURN jsonb_build_object('type', 'StockRejected', 'order_id', o, 'items', c->'items',
                                      'reason', 'insufficient_stock', 'product_id', r.product_id,
                                      'requested', r.quantity, 'available', r.stock);
        END IF;
    END LOOP;
    UPDATE products p SET stock = p.stock - l.quantity, updated_at = now()
      FROM inv_lines(c) l WHERE p.id = l.product_id;
    INSERT INTO holds (order_id, product_id, quantity)
    SELECT o, l.product_id, l.quantity FROM inv_lines(c) l
        ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = holds.quantity + EXCLUDED.quantity;
    RETURN jsonb_build_object('type', 'StockReserved', 'order_id', o, 'items', c->'items');
END $$;

CREATE FUNCTION inv_release(c jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    o text := c->>'order_id';
    given jsonb;
BEGIN
    WITH freed AS (DELETE FROM holds WHERE order_id = o RETURNING product_id, quantity),
         back AS (UPDATE products p SET stock = p.stock + f.quantity, updated_at = now()
                    FROM freed f WHERE p.id = f.product_id)
    SELECT coalesce(jsonb_agg(jsonb_build_object('product_id', product_id, 'quantity', quantity)
                              ORDER BY product_id), '[]'::jsonb)
      INTO given FROM freed;
    INSERT INTO released_orders (order_id) VALUES (o) ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object('type', 'StockReleased', 'order_id', o, 'items', given);
END $$;

CREATE FUNCTION inv_restock(c jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    q bigint := (c->>'quantity')::bigint;
    r record;
BEGIN
    UPDATE products SET stock = stock + q, updated_at = now()
     WHERE id = c->>'product_id' RETURNING id, name, stock INTO r;
    RETURN jsonb_build_object('type', 'Restocked', 'product_id', r.id, 'name', r.name, 'quantity', q,
                              'stock', r.stock,
                              'items', jsonb_build_array(jsonb_build_object('product_id', r.id, 'quantity', q)));
END $$;

-- Applies a batch: cmds is a JSON array of {"c": command, "k": Kafka key, "cid": correlation id},
-- commands already validated by the service. One round trip and one transaction for the whole
-- batch; a rejection is an ordinary outcome, so it never undoes its neighbours. Returns the outbox
-- rows to publish, in command order, as (id, topic, msg_key, payload, correlation_id).
CREATE FUNCTION inv_apply_batch(cmds jsonb)
RETURNS TABLE (out_id bigint, out_topic text, out_key text, out_payload text, out_cid text)
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    c jsonb;
    k text;
    ev jsonb;
BEGIN
    -- Products a Restock names exist before the locks below, created in id order.
    INSERT INTO products (id, name, stock)
    SELECT DISTINCT ON (x.e->'c'->>'product_id') x.e->'c'->>'product_id',
           coalesce(x.e->'c'->>'name', x.e->'c'->>'product_id'), 0
      FROM jsonb_array_elements(cmds) AS x(e)
     WHERE x.e->'c'->>'type' = 'Restock'
     ORDER BY x.e->'c'->>'product_id'
        ON CONFLICT (id) DO NOTHING;

    -- Every product the batch touches is locked now, in one global order, so concurrent batches
    -- (other instances, other partitions) can never deadlock whatever the order of their commands.
    PERFORM 1 FROM products p WHERE p.id IN (
            SELECT l.product_id FROM jsonb_array_elements(cmds) AS x(e), inv_lines(x.e->'c') l
             WHERE x.e->'c'->>'type' = 'ReserveStock'
            UNION
            SELECT x.e->'c'->>'product_id' FROM jsonb_array_elements(cmds) AS x(e)
             WHERE x.e->'c'->>'type' = 'Restock'
            UNION
            SELECT h.product_id FROM holds h WHERE h.order_id IN (
                SELECT x.e->'c'->>'order_id' FROM jsonb_array_elements(cmds) AS x(e)
                 WHERE x.e->'c'->>'type' = 'ReleaseStock'))
     ORDER BY p.id FOR UPDATE;

    FOR e IN SELECT value FROM jsonb_array_elements(cmds) LOOP
        c := e->'c';
        k := c->>'idempotency_key';
        -- Seen before: change nothing, publish the recorded event again (to the new requester).
        RETURN QUERY
            UPDATE outbox o SET published_at = NULL, correlation_id = coalesce(e->>'cid', o.correlation_id)
             WHERE o.dedup_key = k
         RETURNING o.id, o.topic, o.msg_key, o.payload, o.correlation_id;
        IF FOUND THEN
            CONTINUE;
        END IF;
        out_id := nextval('outbox_id_seq');
        ev := CASE c->>'type'
                  WHEN 'ReserveStock' THEN inv_reserve(c)
                  WHEN 'ReleaseStock' THEN inv_release(c)
                  ELSE inv_restock(c)
              END;
        ev := ev || jsonb_build_object('idempotency_key', k, 'event_id', 'inventory-' || out_id,
                  'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
        out_topic := 'events';
        out_key := coalesce(e->>'k', k);
        out_payload := ev::text;
        out_cid := e->>'cid';
        -- A concurrent twin of this command (same key, other partition) makes this insert fail with
        -- unique_violation after the twin commits; the service retries the batch, which then finds it.
        INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, payload)
        VALUES (out_id, k, out_topic, out_key, out_cid, out_payload);
        RETURN NEXT;
    END LOOP;
END $$;
