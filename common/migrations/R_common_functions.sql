-- Functions both services' SQL uses, as they are now. Repeatable (R_, vx_pg.h): applied again
-- whenever it changes; it sorts after this folder's numbered files and before any service's.
--
-- vx_js(x): x as a JSON string, or null: what jsonb prints for a text value (escape_json), so that
-- a payload written as text, piece by piece, is byte for byte the payload jsonb_build_object(...)::text
-- would make of the same values. The fast paths of the apply functions build their messages so:
-- jsonb_build_object builds a binary object, sorts its keys and prints it, three times the CPU of the
-- concatenation (13 against 4.5 us per OrderResult on this machine). A payload written so lists its
-- keys in the order jsonb prints them (shorter keys first, then bytewise) and separates with ", " and
-- ": ", as jsonb does. The general code goes through jsonb: order-svc's parses the same text
-- (ord_result_text, ord_reserve_text), inventory-svc's builds its events with jsonb_build_object; and
-- tests/it/it_sql.c checks, call by call, that each fast path's rows are the general code's, so a
-- text that jsonb would print otherwise fails it.
-- STABLE, as to_json is, so that PostgreSQL inlines it into the statements that call it.
CREATE OR REPLACE FUNCTION vx_js(x text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(to_json(x)::text, 'null')
$$;

-- vx_fail(msg): raises SQLSTATE VX001 with msg. A fast path's step calls it (on the rows that show
-- it, or in a condition of the statement) when it finds its call is not its kind: the pipeline's
-- transaction rolls back and the service applies the call with its apply function
-- (common/vx_fast.h). STABLE (it reads and writes nothing), so that a condition `ok OR vx_fail(...)`
-- that names no row is a one-time filter, tested even when the statement has no row; a VOLATILE one
-- would be tested per row, never on none, and an IMMUTABLE one folded while planning.
CREATE OR REPLACE FUNCTION vx_fail(msg text) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RAISE SQLSTATE 'VX001' USING MESSAGE = msg;
END $$;
