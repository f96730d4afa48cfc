-- floor.sql: the data of make bench's stage D (tests/bench/bench.sh), which measures PostgreSQL's time
-- per order two ways on scratch databases: through the services' own SQL calls (ord_apply_batch,
-- inv_apply_batch, the relay's mark), and as the bare writes the contract cannot do without. Loaded
-- into a database the services' migrations made (vxbench migrate); `bare` holds the bare tables.
--
-- Everything a timed run reads is made here first, so the clock sees the calls and nothing else:
-- floor_calls holds each batch's JSON arguments exactly as the services send them, floor_ids the
-- ids and keys the bare writes use.

-- Batch b of n orders: order ids, PlaceOrder keys and the product each takes (one line, one unit).
CREATE TABLE floor_ids AS
SELECT b, i, md5(b || '-' || i) AS oid, 'floor-' || b || '-' || i AS k, 'SKU-' || (i % 50 + 1) AS pid
  FROM generate_series(1, :batches) AS b, generate_series(1, :n) AS i;
CREATE INDEX ON floor_ids (b, i);

-- The arguments of the services' calls for each batch: order-svc's PlaceOrders and inventory's
-- answers (ord_apply_batch), inventory-svc's ReserveStocks (inv_apply_batch).
CREATE TABLE floor_calls AS
SELECT f.b, 'place' AS kind,
       jsonb_agg(jsonb_build_object('c', jsonb_build_object('type', 'PlaceOrder', 'idempotency_key', f.k,
                     'customer_id', 'cust-1', 'items', jsonb_build_array(jsonb_build_object('product_id', f.pid, 'quantity', 1))),
                 'oid', f.oid, 'cid', 'cid-' || f.i, 'hash', '0123456789abcdef') ORDER BY f.i)::text AS body
  FROM floor_ids f GROUP BY f.b
UNION ALL
SELECT f.b, 'reserve',
       jsonb_agg(jsonb_build_object('c', jsonb_build_object('type', 'ReserveStock', 'idempotency_key', 'order:' || f.oid || ':reserve',
                     'order_id', f.oid, 'items', jsonb_build_array(jsonb_build_object('product_id', f.pid, 'quantity', 1))),
                 'k', f.oid, 'cid', 'cid-' || f.i) ORDER BY f.i)::text
  FROM floor_ids f GROUP BY f.b
UNION ALL
SELECT f.b, 'decide',
       jsonb_agg(jsonb_build_object('c', jsonb_build_object('type', 'StockReserved', 'order_id', f.oid,
                     'idempotency_key', 'order:' || f.oid || ':reserve'),
                 'oid', f.oid, 'cid', 'cid-' || f.i) ORDER BY f.i)::text
  FROM floor_ids f GROUP BY f.b;
CREATE INDEX ON floor_calls (b, kind);
-- A service's fast path (common/vx_fast.h) takes its call as text arrays, one per path into the
-- entries ("c.items"): floor_arg builds one from a call's arguments as vx_fast does (a string as it is,
-- any other value as JSON text, a missing one NULL); bench.sh stores them in floor_args for the kinds
-- that have a fast path, so that the harness fetches them as it fetches a call's body.
CREATE FUNCTION floor_arg(body text, path text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN NULL
                          WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' ELSE v::text END ORDER BY n)::text
      FROM jsonb_array_elements(body::jsonb) WITH ORDINALITY AS e(x, n), LATERAL (SELECT x #> string_to_array(path, '.')) AS l(v)
$$;
CREATE TABLE floor_args (b int NOT NULL, kind text NOT NULL, arg text NOT NULL, v text, PRIMARY KEY (b, kind, arg));
CREATE SEQUENCE floor_batch;
CREATE SEQUENCE floor_harness; -- the harness's own statements, measured alone (bench.sh floor_harness)

-- The bare writes: the rows the contract names and nothing else. An order with its unique key and
-- its ReserveStock outbox row (unique dedup key); a hold, the stock and the StockReserved row; the
-- order's new status and its OrderResult row. Same columns, keys (bytewise, COLLATE "C"), and
-- fillfactor as the services' tables; no history, no delivery state, no checks, no JSON taken apart.
CREATE SCHEMA bare;
CREATE TABLE bare.orders (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (id),
                          UNIQUE (idempotency_key)) WITH (fillfactor = 50);
CREATE TABLE bare.outbox (id bigserial PRIMARY KEY, dedup_key text COLLATE "C" NOT NULL UNIQUE, topic text NOT NULL,
                          msg_key text, correlation_id text, headers jsonb, payload text NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bare.products (id text COLLATE "C" PRIMARY KEY, name text NOT NULL, stock bigint NOT NULL,
                            updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bare.holds (order_id text COLLATE "C" NOT NULL, product_id text COLLATE "C" NOT NULL, quantity bigint NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (order_id, product_id));
INSERT INTO bare.products (id, name, stock) SELECT 'SKU-' || i, 'floor', 1000000000 FROM generate_series(1, 50) AS i;

-- The bare writes of batch `batch` of one kind: the transaction one service's call makes (place,
-- reserve, decide), a statement of its own (CALL), as a service's call is: each of the three pays a
-- round trip and a commit.
CREATE PROCEDURE floor_bare(batch int, kind text) LANGUAGE plpgsql AS $$
BEGIN
    IF kind = 'place' THEN
        INSERT INTO bare.orders (id, idempotency_key, customer_id, items, request_hash, status, correlation_id)
        SELECT f.oid, f.k, 'cust-1', jsonb_build_array(jsonb_build_object('product_id', f.pid, 'quantity', 1)),
               '0123456789abcdef', 'PENDING', 'cid-' || f.i
          FROM floor_ids f WHERE f.b = batch;
        INSERT INTO bare.outbox (dedup_key, topic, msg_key, correlation_id, payload)
        SELECT 'order:' || f.oid || ':reserve', 'inventory.commands', f.oid, 'cid-' || f.i,
               '{"type":"ReserveStock","idempotency_key":"order:' || f.oid || ':reserve","order_id":"' || f.oid
               || '","items":[{"product_id":"' || f.pid || '","quantity":1}]}'
          FROM floor_ids f WHERE f.b = batch;
    ELSIF kind = 'reserve' THEN
        UPDATE bare.products p SET stock = p.stock - t.q, updated_at = now()
          FROM (SELECT f.pid, count(*) AS q FROM floor_ids f WHERE f.b = batch GROUP BY f.pid) t WHERE p.id = t.pid;
        INSERT INTO bare.holds (order_id, product_id, quantity) SELECT f.oid, f.pid, 1 FROM floor_ids f WHERE f.b = batch;
        INSERT INTO bare.outbox (dedup_key, topic, msg_key, correlation_id, payload)
        SELECT 'inv:order:' || f.oid || ':reserve', 'inventory.events', f.oid, 'cid-' || f.i,
               '{"type":"StockReserved","idempotency_key":"order:' || f.oid || ':reserve","order_id":"' || f.oid
               || '","items":[{"product_id":"' || f.pid || '","quantity":1}],"event_id":"inventory-1",'
               || '"occurred_at":"2026-01-01T00:00:00.000000Z"}'
          FROM floor_ids f WHERE f.b = batch;
    ELSE
        UPDATE bare.orders SET status = 'CONFIRMED', updated_at = now()
         WHERE id = ANY (ARRAY(SELECT f.oid FROM floor_ids f WHERE f.b = batch));
        INSERT INTO bare.outbox (dedup_key, topic, msg_key, correlation_id, payload)
        SELECT 'order:' || f.oid || ':result:CONFIRMED', 'orders.results', f.oid, 'cid-' || f.i,
               '{"type":"OrderResult","order_id":"' || f.oid || '","idempotency_key":"' || f.k
               || '","customer_id":"cust-1","status":"CONFIRMED","reason":null,"items":[{"product_id":"' || f.pid
               || '","quantity":1}],"request_hash":"0123456789abcdef","event_id":"orders-1",'
               || '"occurred_at":"2026-01-01T00:00:00.000000Z"}'
          FROM floor_ids f WHERE f.b = batch;
    END IF;
END $$;

-- Statistics as a running service has them, then no autovacuum while the clock runs, on either side
-- (one that woke during a run of half a second doubled its figure).
VACUUM (ANALYZE);
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND n.nspname IN ('public', 'inv', 'bare') LOOP
        EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', t);
    END LOOP;
END $$;
