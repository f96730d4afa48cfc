-- order-svc's functions, as they are now. This file is repeatable (R_, vx_pg.h): vx_pg_migrate
-- applies it again whenever it changes, so a function is changed here, in place, and the diff shows
-- what changed. The tables are in the numbered files.
--
-- ord_apply_batch(cmds) applies a batch of commands (PlaceOrder, CancelOrder) and inventory events
-- (StockReserved, StockRejected) in one transaction: every status change is made together with its
-- outbox rows (common/migrations/000_outbox.sql) and, when the order leaves a status no column keeps,
-- its history row (ord_history), so an order's state, its history and what it tells the world can
-- never disagree. cmds is a JSON array of entries
-- {"c": what, "oid": order id, "cid": correlation id, "hash": request hash (PlaceOrder)}, where
-- "what" is a validated command in canonical form or an inventory event {type, order_id,
-- idempotency_key, reason, product_id} (any other member, such as the event's items, is not read:
-- the order keeps its own lines), and optionally
--   "h": {"name": "value", ...}  Kafka headers for every outbox row the entry produces, new or
--        replayed, merged into the row's own (the latency gremlin's chaos-delay-ms, vx_chaos.h);
--   "fresh": true  on an inventory event whose order a PlaceOrder of an earlier call for the same
--        polled batch created: it is ignored, as an event for an order created in this batch is.
-- A CancelOrder of an order not placed yet (it came first: another partition than its PlaceOrder, or
-- both replayed after a restore) is answered not_found and remembered in early_cancels
-- (004_orders_early_cancels.sql): the PlaceOrder of that order id that comes later ends the order
-- CANCELLED at once, with nothing reserved, so that the order ends as it would have had the two come
-- in the order they were sent. Its OrderResult answers the PlaceOrder, under a dedup key (and so an
-- event_id) of its own (ord_result_key): it is another event than the CANCELLED result of a cancel
-- that comes after its order, and each command keeps one answer.
--
-- It returns ord_out rows in input order: the outbox rows to publish, and one outcome per entry for
-- the service's log and metrics (out_note; out_age: seconds from an order's placement to the outcome
-- that decided it). It needs one thing from the caller, which order-svc's split of each polled batch
-- guarantees: every order is touched by one entry at most, and no command's idempotency key appears
-- twice; a batch that breaks the rule is refused with an error, and the service then applies its
-- entries one at a time.
--
-- Two fast paths take the two kinds of call that carry almost every order: a call of PlaceOrders for
-- new orders (the place path, prepared statements that order-svc runs in one pipeline instead of
-- calling ord_apply_batch: vx_fast_step, at the end of this file), and a call of inventory answers to
-- orders that wait for them (in ord_apply_batch). Each writes what the general code
-- (ord_apply_general) would write for such a call, in a few set-based statements; any other call
-- goes to the general code, which loads and locks everything the batch touches, applies the entries
-- one after another on in-memory arrays, and writes orders, history and outbox back in a few
-- set-based statements. tests/it/it_sql.c applies hundreds of random calls both ways and expects the
-- same rows and tables.
--
-- How their statements are planned, each rule measured (tests/it/it_sql.c checks the outcome):
-- - plan_cache_mode = force_generic_plan: a statement is planned once per connection. The parameter
--   is one jsonb array that no custom plan could estimate better, and a custom plan per call cost
--   about 0.1 ms per statement.
-- - Tables are reached by key arrays (id = ANY (ARRAY(...))), never by joining the entries to a
--   table: a join planned on a table of 200 rows became a hash join over the whole table, which the
--   plan kept while the table grew (60,000 rows read per call at 20,000 orders).
-- - enable_seqscan = off: the planner costs each of a batch's 1,000 index probes as a random read and
--   would rather read a table of 10^5 rows whole (26 ms instead of 12 for 1,000 orders among 47,000).
-- - enable_nestloop = off: the joins here are between sets of the call's size, which the planner
--   guesses at 1 to 100 rows; on a guess of one row a nested loop looks cheapest and at 1,000 entries
--   it is quadratic (999,000 pairs filtered, 100 of a call's 144 ms). A lateral call still runs as a
--   nested loop, its only possible plan.
-- - jit = off: a plan with a disabled node costs 10^10 and would be compiled at every call.

-- Helpers of the first version that nothing calls any more.
DROP FUNCTION IF EXISTS ord_emit(text, text, text, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS ord_result(orders, text, jsonb);
DROP FUNCTION IF EXISTS ord_replay(orders, text);
DROP FUNCTION IF EXISTS ord_set_status(text, text, text, text);
DROP FUNCTION IF EXISTS ord_cancel_held(text, text, text);
DROP FUNCTION IF EXISTS ord_result_payload(orders, bigint, text); -- event_id was the outbox id
DROP FUNCTION IF EXISTS ord_result_payload(orders, text);
DROP FUNCTION IF EXISTS ord_result_json(text, text, text, text, text, jsonb, text, text); -- ord_result_text

-- RFC 3339 in UTC, as every Valerix timestamp is written.
CREATE OR REPLACE FUNCTION ord_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The dedup key of an order's OrderResult for a status: one result per order and final status,
-- so an order's latest result is always found from its current status alone. An order cancelled by a
-- CancelOrder that came before it (CANCELLED without a cancel_key: a cancel after the order always
-- sets one) has a key of its own, ':cancel-first': its result answers the PlaceOrder, another event
-- than the CANCELLED result that answers a CancelOrder, so an event_id never names both (a restore
-- may replay the two commands in another order than they came the first time).
CREATE OR REPLACE FUNCTION ord_result_key_of(id text, status text, cancel_key text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'order:' || id || ':result:' || status
           || CASE WHEN status = 'CANCELLED' AND cancel_key IS NULL THEN ':cancel-first' ELSE '' END
$$;
CREATE OR REPLACE FUNCTION ord_result_key(o orders) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT ord_result_key_of(o.id, o.status, o.cancel_key)
$$;
-- The OrderResult of an order as it stands, from its columns (ikey: the key of the command it
-- answers, ord_result_body), as jsonb prints it (vx_js), built piece by piece: the decide fast path
-- writes this text for every order it decides, with its event_id and occurred_at; the general code
-- takes it without them (event_id NULL) as jsonb (ord_result_body) and adds them with its outbox row.
CREATE OR REPLACE FUNCTION ord_result_text(id text, ikey text, customer_id text, status text, reason text,
                                           items jsonb, request_hash text, product_id text, event_id text,
                                           occurred_at text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT '{"type": "OrderResult", "items": ' || coalesce(items::text, 'null') || ', "reason": ' || vx_js(reason)
           || ', "status": ' || vx_js(status)
           || CASE WHEN event_id IS NULL THEN '' ELSE ', "event_id": ' || vx_js(event_id) END
           || ', "order_id": ' || vx_js(id)
           || CASE WHEN product_id IS NULL THEN '' ELSE ', "product_id": ' || vx_js(product_id) END
           || ', "customer_id": ' || vx_js(customer_id)
           || CASE WHEN event_id IS NULL THEN '' ELSE ', "occurred_at": ' || vx_js(occurred_at) END
           || ', "request_hash": ' || vx_js(request_hash) || ', "idempotency_key": ' || vx_js(ikey) || '}'
$$;
-- The idempotency key of an order's ReserveStock, and the dedup key of its outbox row.
CREATE OR REPLACE FUNCTION ord_reserve_key(oid text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'order:' || oid || ':reserve'
$$;
-- The ReserveStock of a new order, as jsonb prints it (vx_js): the place path writes this text, the
-- general code takes it as jsonb.
CREATE OR REPLACE FUNCTION ord_reserve_text(oid text, items jsonb) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT '{"type": "ReserveStock", "items": ' || coalesce(items::text, 'null') || ', "order_id": ' || vx_js(oid)
           || ', "idempotency_key": ' || vx_js(ord_reserve_key(oid)) || '}'
$$;
-- The OrderResult of an order: it answers the command that decided it, the CancelOrder for CANCELLED,
-- the PlaceOrder otherwise.
CREATE OR REPLACE FUNCTION ord_result_body(o orders) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT ord_result_text(o.id, CASE WHEN o.status = 'CANCELLED' THEN coalesce(o.cancel_key, o.idempotency_key)
                                      ELSE o.idempotency_key END,
                           o.customer_id, o.status, o.reason, o.items, o.request_hash, o.product_id, NULL, NULL)::jsonb
$$;
-- The event id of an OrderResult: 'orders:' and the dedup key of its outbox row (ord_result_key, or
-- 'cancel:' and the key of the CancelOrder it answers). Never the outbox row's id: that comes from a
-- sequence, which a restored database hands out again to other events; the dedup key is what
-- identifies the event, the same at every replay of the command that caused it.
CREATE OR REPLACE FUNCTION ord_event_id(dedup_key text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'orders:' || dedup_key
$$;


-- The placing lock, a transaction-level advisory lock: a call that may place orders holds it shared
-- from before it reads early_cancels until it commits; a call that remembers a CancelOrder of an
-- order not known yet holds it exclusive from before it looks the order up until it commits. So when
-- two instances take a PlaceOrder and the CancelOrder that overtook it at the same moment, one of
-- them commits before the other reads: either the PlaceOrder finds the cancel remembered, or the
-- CancelOrder finds the order. (Only a CancelOrder that overtook its order takes it exclusive: rare.
-- Taken before anything else, the lock never completes a cycle of waits; lock_timeout bounds a wait.)
CREATE OR REPLACE FUNCTION ord_place_lock() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT 6180339887498948482::bigint -- any constant; the orders database is order-svc's alone
$$;

-- An order's history: one row per status it reached, numbered in order (n). Only what no column of the order
-- keeps is a row of order_history: PENDING is the order's created_at, its status now (when not
-- PENDING) its updated_at and reason, and a status it left (only CONFIRMED is ever left, by a
-- cancellation) is the one row written, when it is left. Two rows of order_history per order, each
-- with its index entry and its WAL, cost more than the rest of deciding it. (Orders written by a
-- version that wrote every status have every row, and none is derived twice.)
CREATE OR REPLACE FUNCTION ord_history(o orders) RETURNS TABLE (n bigint, status text, reason text, at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT row_number() OVER (ORDER BY s.k, s.id), s.status, s.reason, s.at FROM (
        SELECT 0 AS k, 0::bigint AS id, 'PENDING'::text AS status, NULL::text AS reason, o.created_at AS at
         WHERE NOT EXISTS (SELECT 1 FROM order_history h WHERE h.order_id = o.id AND h.status = 'PENDING')
        UNION ALL
        SELECT 1, h.id, h.status, h.reason, h.at FROM order_history h WHERE h.order_id = o.id
        UNION ALL
        SELECT 2, 0, o.status, o.reason, o.updated_at
         WHERE o.status <> 'PENDING'
           AND NOT EXISTS (SELECT 1 FROM order_history h WHERE h.order_id = o.id AND h.status = o.status)) s
     ORDER BY s.k, s.id
$$;

-- The general code: any call.
CREATE OR REPLACE FUNCTION ord_apply_general(cmds jsonb) RETURNS SETOF ord_out LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET jit = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    ts text := ord_ts(now());
    fresh jsonb;       -- {order id: ordinal of the PlaceOrder that created it in this batch}
    early jsonb;       -- {order id: key of a CancelOrder that came before it}, for new orders
    os orders[];       -- every order the batch touches, in id order, locked; changed as entries apply
    dirty boolean[];   -- per order: changed here, to be written back
    slot int[];        -- per entry: the index into os of the order it touches, NULL when none
    one_each boolean;  -- no order and no command key twice in the batch
    cand text[];       -- dedup keys of the outbox rows a replay may send again
    known jsonb;       -- dedup keys of the outbox rows a replay may send again -> true (locked)
    -- what the batch writes: history rows (ord_history: only a status left that no column keeps); new
    -- outbox rows (x_); replays of recorded ones (r_)
    h_oid text[] := '{}'; h_st text[] := '{}'; h_why text[] := '{}'; h_at timestamptz[] := '{}';
    x_key text[] := '{}'; x_topic text[] := '{}'; x_mkey text[] := '{}'; x_cid text[] := '{}';
    x_pay jsonb[] := '{}'; x_hdr jsonb[] := '{}'; x_id bigint[];
    r_key text[] := '{}'; r_cid text[] := '{}'; r_hdr jsonb[] := '{}';
    -- what it returns, in input order: the row an entry produced (p_x: its index in x_; p_r: the
    -- dedup key it replays; neither: a row for the log only), kept unless p_keep is false and the
    -- row turned out to be there already; then the outcome for the log
    p_x int[] := '{}'; p_r text[] := '{}'; p_keep boolean[] := '{}'; p_cid text[] := '{}';
    p_note text[] := '{}'; p_order text[] := '{}'; p_ikey text[] := '{}'; p_status text[] := '{}';
    p_age float8[] := '{}';
    -- one entry: its parts, the order it touches (o, changed: to be stored back), and what it
    -- produces (dk..hdr: a new outbox row; rk: a replay; held: the release of a held order and its
    -- OrderResult; lcid, lorder, lstatus: the outcome for the log)
    e jsonb; c jsonb; h jsonb; t text; k text; oid text; cid text; i int; s int; o orders; changed boolean;
    note text; dk text; tp text; mk text; rcid text; pay jsonb; hdr jsonb; rk text; held boolean;
    lcid text; lorder text; lstatus text;
    e_oid text[] := '{}'; e_key text[] := '{}'; e_cid text[] := '{}'; -- CancelOrders to remember
    unknown boolean := false;    -- one of them is not known (yet)
BEGIN
    -- The placing lock (ord_place_lock), before the orders are written or loaded: exclusive for a call
    -- with a CancelOrder of an order not known yet, shared for a call that may place orders. (Whether
    -- an order is known is asked one order id at a time, an equality on the primary key that every
    -- plan reads by the index; asked for all of them at once, a plan made on tables ANALYZEd while
    -- empty read all of the index orders_latest. CancelOrders are few.)
    IF cmds @? '$[*] ? (@.c.type == "CancelOrder")' THEN
        FOR oid IN SELECT DISTINCT x.e->>'oid' FROM jsonb_array_elements(cmds) AS x(e)
                    WHERE x.e->'c'->>'type' = 'CancelOrder' LOOP
            PERFORM FROM orders b WHERE b.id = oid; -- (not EXISTS: no plan for the first row only)
            IF NOT FOUND THEN
                unknown := true;
                EXIT;
            END IF;
        END LOOP;
    END IF;
    IF unknown THEN
        PERFORM pg_advisory_xact_lock(ord_place_lock());
    ELSIF cmds @? '$[*] ? (@.c.type == "PlaceOrder")' THEN
        PERFORM pg_advisory_xact_lock_shared(ord_place_lock());
    END IF;

    -- New orders first, in id order: among PlaceOrders sharing a key or an order id the
    -- earliest wins; an order that exists already (same id or same key) is left as it is.
    WITH p AS (
        SELECT x.e, x.n FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n)
         WHERE x.e->'c'->>'type' = 'PlaceOrder'),
    by_key AS (
        SELECT DISTINCT ON (p.e->'c'->>'idempotency_key') p.e, p.n FROM p
         ORDER BY p.e->'c'->>'idempotency_key', p.n),
    win AS (
        SELECT DISTINCT ON (b.e->>'oid') b.e->>'oid' AS oid, b.e, b.n FROM by_key b ORDER BY b.e->>'oid', b.n),
    ins AS (
        INSERT INTO orders (id, idempotency_key, customer_id, items, request_hash, status, correlation_id)
        SELECT w.oid, w.e->'c'->>'idempotency_key', w.e->'c'->>'customer_id', w.e->'c'->'items',
               w.e->>'hash', 'PENDING', w.e->>'cid'
          FROM win w ORDER BY w.oid
            ON CONFLICT DO NOTHING
        RETURNING id),
    -- (joining ins to win here instead was a nested loop over both, 140 ms for 1,000 new orders)
    wn AS MATERIALIZED (
        SELECT jsonb_object_agg(w.oid, w.n) AS m FROM win w)
    SELECT coalesce(jsonb_object_agg(ins.id, wn.m->ins.id), '{}') INTO fresh FROM ins, wn;
    -- (After the placing lock: a CancelOrder that overtook one of these orders has committed by now.)
    SELECT coalesce(jsonb_object_agg(c.order_id, c.cancel_key), '{}') INTO early
      FROM early_cancels c WHERE c.order_id = ANY (ARRAY(SELECT jsonb_object_keys(fresh)));

    -- Every order the batch touches is locked and loaded now, in one global order, so concurrent
    -- batches never deadlock: the orders named by id, and those a PlaceOrder's key belongs to under
    -- another id. (A UNION of index lookups: an OR here would read the whole table at every batch.)
    SELECT coalesce(array_agg(l.o ORDER BY (l.o).id), '{}') INTO os
      FROM (SELECT b AS o FROM orders b
             WHERE b.id = ANY (ARRAY(
                       SELECT x.e->>'oid' FROM jsonb_array_elements(cmds) AS x(e)
                       UNION ALL
                       SELECT k.id FROM orders k WHERE k.idempotency_key = ANY (ARRAY(
                           SELECT x.e->'c'->>'idempotency_key' FROM jsonb_array_elements(cmds) AS x(e)
                            WHERE x.e->'c'->>'type' = 'PlaceOrder'))))
             ORDER BY b.id FOR UPDATE) l;
    dirty := array_fill(false, ARRAY[cardinality(os)]);

    -- The order each entry touches: by its id, or for a PlaceOrder of an unknown id by its key. And
    -- the dedup keys of the recorded rows a replay may send again: the answers of CancelOrders seen
    -- before ("cancel:" key), the latest result (ord_result_key) of each decided order asked again by
    -- a PlaceOrder or by the CancelOrder that cancelled it.
    SELECT array_agg(coalesce(bi.ordinality, bk.ordinality) ORDER BY x.n),
           count(DISTINCT coalesce(bi.id, bk.id, x.e->>'oid')) = count(*)
           AND count(DISTINCT x.e->'c'->>'idempotency_key') FILTER (WHERE x.e->'c'->>'type' IN ('PlaceOrder', 'CancelOrder'))
             = count(*) FILTER (WHERE x.e->'c'->>'type' IN ('PlaceOrder', 'CancelOrder')),
           coalesce(array_agg('cancel:' || (x.e->'c'->>'idempotency_key')) FILTER (WHERE x.e->'c'->>'type' = 'CancelOrder'), '{}')
           || coalesce(array_agg(ord_result_key_of(coalesce(bi.id, bk.id), coalesce(bi.status, bk.status),
                                                   coalesce(bi.cancel_key, bk.cancel_key)))
                         FILTER (WHERE coalesce(bi.status, bk.status) <> 'PENDING'
                                   AND (x.e->'c'->>'type' = 'PlaceOrder'
                                        OR x.e->'c'->>'type' = 'CancelOrder' AND x.e->'c'->>'idempotency_key' = bi.cancel_key)),
                       '{}')
      INTO slot, one_each, cand
      FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n)
      LEFT JOIN unnest(os) WITH ORDINALITY AS bi ON bi.id = x.e->>'oid'
      LEFT JOIN unnest(os) WITH ORDINALITY AS bk
             ON bi.id IS NULL AND x.e->'c'->>'type' = 'PlaceOrder' AND bk.idempotency_key = x.e->'c'->>'idempotency_key';
    IF NOT one_each THEN
        RAISE EXCEPTION 'ord_apply_batch: an order or an idempotency key appears twice in one batch'
            USING HINT = 'Apply the entries one at a time.';
    END IF;
    -- Those rows that exist, locked (after the orders), so that a prune cannot take them
    -- before they are sent again.
    -- (The rows are found by key first, then locked by id: asked in id order, a plan made on tables
    -- ANALYZEd while empty read the whole outbox in id order, filtering on the key.)
    SELECT coalesce(jsonb_object_agg(l.dedup_key, true), '{}') INTO known
      FROM (SELECT b.dedup_key FROM outbox b
             WHERE b.id = ANY (ARRAY(SELECT k.id FROM outbox k WHERE k.dedup_key = ANY (cand)))
             ORDER BY b.id FOR UPDATE) l;

    FOR e, i IN SELECT x.e, x.n FROM jsonb_array_elements(cmds) WITH ORDINALITY AS x(e, n) LOOP
        c := e->'c';
        t := c->>'type';
        k := c->>'idempotency_key';
        oid := e->>'oid';
        cid := e->>'cid';
        h := e->'h';
        s := slot[i];
        o := CASE WHEN s IS NULL THEN NULL ELSE os[s] END;
        note := NULL; dk := NULL; rk := NULL; hdr := NULL; held := false; changed := false;
        lcid := cid; lorder := NULL; lstatus := NULL;

        IF t = 'PlaceOrder' AND (fresh->>oid)::bigint = i AND early ? oid THEN
            -- A CancelOrder of this order came first (it was answered not_found): placed and
            -- cancelled at once, nothing reserved; the result (ord_result_key: ':cancel-first')
            -- answers this PlaceOrder, and the order keeps no cancel_key.
            o.status := 'CANCELLED'; o.reason := 'cancelled'; o.product_id := NULL;
            changed := true;
            dk := ord_result_key(o); tp := 'orders.results'; mk := oid; rcid := cid;
            pay := ord_result_body(o);
            note := 'order_cancelled';

        ELSIF t = 'PlaceOrder' AND (fresh->>oid)::bigint = i THEN
            dk := ord_reserve_key(oid); tp := 'inventory.commands'; mk := oid; rcid := cid;
            pay := ord_reserve_text(oid, c->'items')::jsonb;
            note := 'order_placed';

        ELSIF t = 'PlaceOrder' THEN
            -- Seen before, by order id or by key: nothing changes. A decided order's result is sent
            -- again; a pending one's comes when inventory answers.
            IF o.status <> 'PENDING' THEN
                rk := ord_result_key(o); -- replayed below
            END IF;
            note := 'order_duplicate';

        ELSIF t = 'CancelOrder' THEN
            IF known ? ('cancel:' || k) THEN
                -- This very CancelOrder was answered before: the same answer again.
                rk := 'cancel:' || k;
                note := 'cancel_duplicate';
                lorder := oid;
                lstatus := 'REJECTED';
            ELSIF o.id IS NULL OR (fresh->>oid)::bigint > i THEN -- unknown, or placed later in this batch
                -- Answered not_found, and remembered: the order's PlaceOrder, when it comes, ends it
                -- CANCELLED (the first such CancelOrder is the one remembered).
                IF NOT early ? oid THEN
                    early := early || jsonb_build_object(oid, k);
                    e_oid := e_oid || oid; e_key := e_key || k; e_cid := e_cid || cid;
                END IF;
                dk := 'cancel:' || k; tp := 'orders.results'; mk := oid; rcid := cid;
                pay := jsonb_build_object('type', 'OrderResult', 'order_id', oid, 'idempotency_key', k,
                                          'status', 'REJECTED', 'reason', 'not_found', 'items', '[]'::jsonb);
                note := 'cancel_not_found';
                lorder := oid;
                lstatus := 'REJECTED';
            ELSIF o.status = 'PENDING' THEN
                -- Inventory has not answered yet: the cancellation is carried out when it does.
                o.cancel_requested := true;
                o.cancel_key := coalesce(o.cancel_key, k);
                o.cancel_correlation_id := coalesce(o.cancel_correlation_id, cid);
                changed := true;
                note := 'cancel_requested';
            ELSIF o.status = 'CONFIRMED' THEN
                o.cancel_key := k;
                o.cancel_correlation_id := cid;
                held := true;
                note := 'order_cancelled';
            ELSIF k = o.cancel_key THEN -- this very CancelOrder again: the same answer again
                rk := ord_result_key(o);
                note := 'cancel_duplicate';
            ELSE
                -- Another CancelOrder of a decided order: nothing changes, and it is answered under
                -- its own key, so whoever sent it can match the answer.
                dk := 'cancel:' || k; tp := 'orders.results'; mk := oid; rcid := cid;
                pay := ord_result_body(o) || jsonb_build_object('idempotency_key', k);
                hdr := '{"idempotent-replayed":"true"}';
                note := 'cancel_duplicate';
            END IF;

        ELSE
            -- An inventory event. Only the answer to this order's own ReserveStock counts, and only
            -- while the order waits for it; anything else (a redelivery, an order created in this very
            -- batch, someone else's reservation under the same order id) changes nothing.
            IF o.id IS NULL OR o.status <> 'PENDING' OR fresh ? oid OR coalesce((e->>'fresh')::boolean, false)
               OR coalesce(k, ord_reserve_key(oid)) <> ord_reserve_key(oid) THEN
                note := 'event_ignored';
            ELSIF t = 'StockReserved' AND o.cancel_requested THEN
                lcid := o.cancel_correlation_id;
                held := true;
                note := 'order_cancelled';
            ELSE
                IF t = 'StockReserved' THEN
                    o.status := 'CONFIRMED'; o.reason := NULL; o.product_id := NULL;
                    rcid := o.correlation_id;
                    note := 'order_confirmed';
                ELSIF o.cancel_requested THEN -- StockRejected: nothing is held, nothing to release
                    o.status := 'CANCELLED'; o.reason := 'cancelled'; o.product_id := NULL;
                    rcid := o.cancel_correlation_id;
                    note := 'order_cancelled';
                ELSE
                    o.status := 'REJECTED'; o.reason := coalesce(c->>'reason', 'rejected'); o.product_id := c->>'product_id';
                    rcid := o.correlation_id;
                    note := 'order_rejected';
                END IF;
                changed := true;
                dk := ord_result_key(o); tp := 'orders.results'; mk := o.id;
                pay := ord_result_body(o);
            END IF;
        END IF;

        IF held THEN
            -- The order's stock is held: CANCELLED, ReleaseStock to
            -- inventory, then its OrderResult (returned only when new), both with the CancelOrder's cid.
            -- A CONFIRMED order leaves a status that no column will keep: its history row.
            IF o.status = 'CONFIRMED' THEN
                h_oid := h_oid || o.id; h_st := h_st || o.status; h_why := h_why || o.reason; h_at := h_at || o.updated_at;
            END IF;
            o.status := 'CANCELLED'; o.reason := 'cancelled'; o.product_id := NULL;
            changed := true;
            dk := 'order:' || oid || ':release'; tp := 'inventory.commands'; mk := oid; rcid := lcid;
            pay := jsonb_build_object('type', 'ReleaseStock', 'idempotency_key', dk, 'order_id', oid);
        END IF;
        IF changed THEN
            os[s] := o;
            dirty[s] := true;
        END IF;

        IF dk IS NOT NULL THEN
            x_key := x_key || dk; x_topic := x_topic || tp; x_mkey := x_mkey || mk; x_cid := x_cid || rcid;
            x_pay := x_pay || pay; x_hdr := x_hdr || CASE WHEN h IS NULL THEN hdr ELSE coalesce(hdr, '{}') || h END;
            p_x := p_x || cardinality(x_key); p_r := p_r || NULL::text;
        ELSIF rk IS NOT NULL AND known ? rk THEN
            r_key := r_key || rk; r_cid := r_cid || cid; r_hdr := r_hdr || h;
            p_x := p_x || NULL::int; p_r := p_r || rk;
        ELSIF rk IS NOT NULL THEN
            -- The recorded result was pruned: written again from the order.
            x_key := x_key || rk; x_topic := x_topic || 'orders.results'::text; x_mkey := x_mkey || o.id;
            x_cid := x_cid || coalesce(cid, CASE WHEN o.status = 'CANCELLED' THEN o.cancel_correlation_id END,
                                       o.correlation_id);
            x_pay := x_pay || ord_result_body(o);
            x_hdr := x_hdr || ('{"idempotent-replayed":"true"}'::jsonb || coalesce(h, '{}'));
            p_x := p_x || cardinality(x_key); p_r := p_r || NULL::text;
        ELSE
            p_x := p_x || NULL::int; p_r := p_r || NULL::text;
        END IF;
        p_keep := p_keep || true; p_cid := p_cid || lcid; p_note := p_note || note;
        p_order := p_order || coalesce(lorder, o.id, oid); p_ikey := p_ikey || k;
        p_status := p_status || coalesce(lstatus, o.status);
        p_age := p_age || CASE WHEN note IN ('order_confirmed', 'order_rejected', 'order_cancelled')
                               THEN extract(epoch FROM now() - o.created_at)::float8 END;
        IF held THEN
            x_key := x_key || ord_result_key(o); x_topic := x_topic || 'orders.results'::text; x_mkey := x_mkey || o.id;
            x_cid := x_cid || lcid; x_pay := x_pay || ord_result_body(o); x_hdr := x_hdr || h;
            p_x := p_x || cardinality(x_key); p_r := p_r || NULL::text; p_keep := p_keep || false;
            p_cid := p_cid || NULL::text; p_note := p_note || NULL::text; p_order := p_order || NULL::text;
            p_ikey := p_ikey || NULL::text; p_status := p_status || NULL::text; p_age := p_age || NULL::float8;
        END IF;
    END LOOP;

    UPDATE orders b SET status = u.status, reason = u.reason, product_id = u.product_id,
                        cancel_requested = u.cancel_requested, cancel_key = u.cancel_key,
                        cancel_correlation_id = u.cancel_correlation_id, updated_at = now()
      FROM unnest(os) WITH ORDINALITY AS u
     WHERE dirty[u.ordinality] AND b.id = u.id AND b.id = ANY (ARRAY(SELECT d.id FROM unnest(os) AS d));
    -- (An order written by a version that kept every status has its row already.)
    INSERT INTO order_history (order_id, status, reason, at)
    SELECT u.o, u.s, u.w, u.a FROM unnest(h_oid, h_st, h_why, h_at) WITH ORDINALITY AS u(o, s, w, a, n)
     WHERE NOT EXISTS (SELECT 1 FROM order_history h WHERE h.order_id = u.o AND h.status = u.s)
     ORDER BY u.n;
    INSERT INTO early_cancels (order_id, cancel_key, correlation_id)
    SELECT u.o, u.k, u.cid FROM unnest(e_oid, e_key, e_cid) AS u(o, k, cid) ORDER BY u.o
        ON CONFLICT (order_id) DO NOTHING;

    -- New rows get their ids in input order; a row already there (ON CONFLICT) is not written twice
    -- and is left out of what is sent. Replays are claimed now, so that the sweep does not send them
    -- a second time while these are on their way.
    SELECT coalesce(array_agg(nextval('outbox_id_seq')), '{}') INTO x_id FROM generate_series(1, cardinality(x_key));
    RETURN QUERY
    WITH ins AS (
        INSERT INTO outbox AS b (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
        SELECT u.id, u.k, u.t, u.mk, u.cid, u.h,
               (CASE WHEN u.p->>'type' = 'OrderResult'
                     THEN u.p || jsonb_build_object('event_id', ord_event_id(u.k), 'occurred_at', ts)
                     ELSE u.p END)::text
          FROM unnest(x_id, x_key, x_topic, x_mkey, x_cid, x_hdr, x_pay) WITH ORDINALITY AS u(id, k, t, mk, cid, h, p, n)
         ORDER BY u.n
            ON CONFLICT (dedup_key) DO NOTHING
        RETURNING b.id, b.topic, b.msg_key, b.payload, b.correlation_id, b.headers),
    upd AS (
        UPDATE outbox b SET published_at = NULL, claimed_at = now(), correlation_id = coalesce(u.cid, b.correlation_id),
                            headers = coalesce(b.headers, '{}'::jsonb) || '{"idempotent-replayed":"true"}'::jsonb
                                      || coalesce(u.h, '{}'::jsonb)
          FROM unnest(r_key, r_cid, r_hdr) AS u(k, cid, h)
         WHERE b.dedup_key = u.k AND b.dedup_key = ANY (r_key)
        RETURNING b.dedup_key, b.id, b.topic, b.msg_key, b.payload, b.correlation_id, b.headers)
    SELECT coalesce(ins.id, upd.id), coalesce(ins.topic, upd.topic), coalesce(ins.msg_key, upd.msg_key),
           coalesce(ins.payload, upd.payload),
           CASE WHEN ins.id IS NOT NULL THEN ins.correlation_id WHEN upd.id IS NOT NULL THEN upd.correlation_id
                ELSE p.cid END,
           coalesce(ins.headers, upd.headers), p.note, p.ord, p.ikey, p.st, p.age
      FROM unnest(p_x, p_r, p_keep, p_cid, p_note, p_order, p_ikey, p_status, p_age)
           WITH ORDINALITY AS p(x, r, keep, cid, note, ord, ikey, st, age, n)
      LEFT JOIN ins ON ins.id = x_id[p.x]
      LEFT JOIN upd ON upd.dedup_key = p.r
     WHERE p.keep OR ins.id IS NOT NULL
     ORDER BY p.n;
END $$;

-- The fast paths, then the general code for any other call. Neither writes with ON CONFLICT: a plain
-- insert is cheaper than a speculative one (no confirm record in the WAL). New orders rule conflicts
-- out by failing on them (a unique_violation undoes the fast path and the general code takes the
-- call); answers check their orders first. A concurrent twin (another instance, during a rebalance)
-- that commits the same order or key first makes an answer's insert fail with unique_violation;
-- order-svc then retries the call, which finds the twin's rows and goes to the general code.
CREATE OR REPLACE FUNCTION ord_apply_batch(cmds jsonb) RETURNS SETOF ord_out LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET jit = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    ts text := ord_ts(now()); -- occurred_at of the results a fast path writes
    n int := jsonb_array_length(cmds);
    kinds text[];   -- the distinct types of the call's commands
    one_each boolean; -- no order id twice in the call
    ready int;      -- events that answer a waiting order
    oids text[];    -- the order ids of the call's entries
BEGIN
    SELECT array_agg(DISTINCT x.e->'c'->>'type'), count(DISTINCT x.e->>'oid') = n, array_agg(x.e->>'oid')
      INTO kinds, one_each, oids FROM jsonb_array_elements(cmds) AS x(e);

    IF kinds <@ '{StockReserved,StockRejected}' AND one_each AND NOT cmds @? '$[*] ? (@.fresh == true)' THEN
        -- Inventory's answers: when every one is the answer to its order's own ReserveStock and the
        -- order waits for it with no cancellation asked, each order is decided here: CONFIRMED or
        -- REJECTED, an OrderResult with the PlaceOrder's correlation id. Nothing is checked first:
        -- the update takes only the orders that qualify, locking them as it goes (by the primary key,
        -- in id order, as the general code locks them), and returns what the results are made of.
        -- When it took fewer than all (an order decided or a
        -- cancellation asked already, an event that is not the answer, a concurrent change by another
        -- instance during a rebalance), the block (a subtransaction) is undone and the general code
        -- takes the call. (Reading the orders first to see whether all qualify probed the index twice;
        -- locking them first, FOR UPDATE, wrote a WAL record per order.)
        BEGIN
            RETURN QUERY
            WITH e AS (
                SELECT x.oid, x.n, x.h, x.c->>'idempotency_key' AS ikey, x.c->>'type' = 'StockReserved' AS ok,
                       x.c->>'reason' AS why, x.c->>'product_id' AS pid
                  FROM ROWS FROM (jsonb_to_recordset(cmds) AS (c jsonb, oid text, h jsonb)) WITH ORDINALITY AS x(c, oid, h, n)),
            upd AS (
                UPDATE orders b SET status = CASE WHEN e.ok THEN 'CONFIRMED' ELSE 'REJECTED' END,
                                    reason = CASE WHEN e.ok THEN NULL ELSE coalesce(e.why, 'rejected') END,
                                    product_id = CASE WHEN e.ok THEN NULL ELSE e.pid END,
                                    updated_at = now()
                  FROM e
                 WHERE b.id = e.oid AND b.id = ANY (oids) AND b.status = 'PENDING' AND NOT b.cancel_requested
                   AND coalesce(e.ikey, ord_reserve_key(b.id)) = ord_reserve_key(b.id)
                RETURNING e.n, e.h, e.ikey, b.id, b.status, b.correlation_id, b.created_at,
                          ord_result_key_of(b.id, b.status, b.cancel_key) AS dk,
                          ord_result_text(b.id, b.idempotency_key, b.customer_id, b.status, b.reason, b.items,
                                          b.request_hash, b.product_id,
                                          ord_event_id(ord_result_key_of(b.id, b.status, b.cancel_key)), ts) AS pay),
            -- Only when every order was decided: its result, under outbox ids drawn in input order
            -- (PostgreSQL computes a volatile output column such as nextval after the sort beneath it;
            -- it_sql compares the ids with the general code's) and only then, so that a call the
            -- general code takes finds the sequence as it was. (The orders decided used to be gathered
            -- into eight arrays, each aggregate sorting the rows again, and taken apart in a second
            -- statement.)
            r AS (
                SELECT upd.*, nextval('outbox_id_seq') AS xid FROM upd
                 WHERE (SELECT count(*) FROM upd) = cardinality(oids) ORDER BY upd.n),
            ins AS (
                INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
                SELECT r.xid, r.dk, 'orders.results', r.id, r.correlation_id, r.h, r.pay FROM r ORDER BY r.n)
            SELECT r.xid, 'orders.results'::text, r.id, r.pay, r.correlation_id, r.h,
                   CASE WHEN r.status = 'CONFIRMED' THEN 'order_confirmed' ELSE 'order_rejected' END,
                   r.id, r.ikey, r.status, extract(epoch FROM now() - r.created_at)::float8
              FROM r ORDER BY r.n;
            -- No row: not every order was decided (a call has one entry at least), and nothing was
            -- returned, since r yields a row only once the update has taken every order.
            IF NOT FOUND THEN
                RAISE SQLSTATE 'VX001' USING MESSAGE = 'ord_apply_batch: not every answer decides its order';
            END IF;
            RETURN;
        EXCEPTION WHEN SQLSTATE 'VX001' THEN
            NULL; -- not every answer decides its order: the general code below
        END;
    END IF;

    RETURN QUERY SELECT * FROM ord_apply_general(cmds);
END $$;


-- The place path (common/vx_fast.h): a call of PlaceOrders for new orders, each with its ReserveStock
-- as the general code gives it, in four prepared statements that order-svc sends in one pipeline, one
-- round trip and one transaction, instead of calling ord_apply_batch. Its parameters are arrays of one
-- value per entry. Nothing is checked first: an order id or a key known already, or twice in the
-- call, fails the orders' insert with a unique violation before a sequence is drawn from; an order
-- that a CancelOrder came for before it (early_cancels) fails the third step (vx_fail). Either
-- rolls the whole transaction back, and order-svc hands the call to ord_apply_batch.
-- Measured against the same statements in ord_apply_batch (README, "Second round"): a PL/pgSQL body
-- pays an executor's start-up per statement, the subtransaction that let it fall back, and one jsonb
-- argument walked by each statement.
-- 1. The placing lock (ord_place_lock), shared, before anything is read or written: every later
--    step has a snapshot taken after it.
-- 2. The orders, inserted in id order as the general code locks them.
-- 3. The early cancels of these orders: any fails the call.
-- 4. The outbox rows, their ids drawn in input order, and the rows to publish.
-- Each statement reaches its rows by a unique index whatever the statistics (none of the apply
-- functions' planner settings is needed: tests/it/it_sql.c counts the rows read after the tables grow
-- on plans made while they were empty).
DELETE FROM vx_fast_step WHERE path = 'place';
INSERT INTO vx_fast_step (path, step, types, args, sql) VALUES
('place', 1, '{PlaceOrder}', '{}', $sql$
SELECT pg_advisory_xact_lock_shared(ord_place_lock())
$sql$),
('place', 2, '{PlaceOrder}', '{oid,c.idempotency_key,c.customer_id,c.items,hash,cid}', $sql$
INSERT INTO orders (id, idempotency_key, customer_id, items, request_hash, status, correlation_id)
SELECT x.oid, x.ikey, x.customer_id, x.items::jsonb, x.hash, 'PENDING', x.cid
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
       AS x(oid, ikey, customer_id, items, hash, cid)
 ORDER BY x.oid
$sql$),
('place', 3, '{PlaceOrder}', '{oid}', $sql$
SELECT vx_fail('the place path: an order of the call was cancelled before it came')
  FROM early_cancels c WHERE c.order_id = ANY ($1::text[])
$sql$),
('place', 4, '{PlaceOrder}', '{oid,c.items,cid,h,c.idempotency_key}', $sql$
WITH x AS (
    SELECT x.n, nextval('outbox_id_seq') AS id, x.oid, x.cid, x.h::jsonb AS h, x.ikey,
           ord_reserve_text(x.oid, x.items::jsonb) AS pay
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS x(oid, items, cid, h, ikey, n)
     ORDER BY x.n),
ins AS (
    INSERT INTO outbox (id, dedup_key, topic, msg_key, correlation_id, headers, payload)
    SELECT x.id, ord_reserve_key(x.oid), 'inventory.commands', x.oid, x.cid, x.h, x.pay FROM x ORDER BY x.n)
SELECT x.id AS out_id, 'inventory.commands'::text AS out_topic, x.oid AS out_key, x.pay AS out_payload,
       x.cid AS out_cid, x.h AS out_headers, 'order_placed'::text AS out_note, x.oid AS out_order,
       x.ikey AS out_ikey, 'PENDING'::text AS out_status, NULL::float8 AS out_age
  FROM x ORDER BY x.n
$sql$);
