-- No nested-loop joins in the apply functions, for the reason order-svc's 005 gives: their joins are
-- between sets of the call's size (the call's entries, CTEs of the rows just written), which the
-- planner guesses at 1 to 100 rows; against a guess of one row a nested loop looks cheapest, and at
-- 1,000 entries it is quadratic. The plans these functions make now happen to hash; this keeps them
-- from ever doing otherwise. Tables are reached by key arrays (004); a lateral call (the items of
-- each entry) still runs as a nested loop, its only possible plan, but its cost now counts as
-- "disabled" (10^10), far above jit_above_cost: without jit = off, PostgreSQL would compile such a
-- statement to machine code at every call (220 ms for a call of 1,000 ReserveStocks, measured).
-- tests/it/it_sql.c checks that no plan node of a call of 1,000 entries handles more than a few rows
-- per entry.
ALTER FUNCTION inv_apply_batch(jsonb) SET enable_nestloop = off SET jit = off;
ALTER FUNCTION inv_apply_general(jsonb) SET enable_nestloop = off SET jit = off;
