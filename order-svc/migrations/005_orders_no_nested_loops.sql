-- No nested-loop joins in the apply functions. Their joins are between sets of the call's size (the
-- call's entries, CTEs of the rows just written or returned), whose sizes the planner cannot know: it
-- guesses 1 to 100 rows, and against a guess of one row a nested loop looks cheapest. At the real
-- size it is quadratic. ord_apply_batch's StockReserved path matched the outbox rows it had just
-- written to its entries that way: a call of 1,000 answers filtered 999,000 pairs, 100 of its 144 ms,
-- and under `make bench` (stage C) that one statement was a third of PostgreSQL's time. Tables need
-- no nested loop here: every statement reaches them by key arrays (004). A lateral call (the items of
-- each entry) still runs as a nested loop, its only possible plan, but its cost now counts as
-- "disabled" (10^10), far above jit_above_cost: without jit = off, PostgreSQL would compile such a
-- statement to machine code at every call (220 ms for a call of 1,000 ReserveStocks, measured).
-- tests/it/it_sql.c checks that no plan node of a call of 1,000 entries handles more than a few rows
-- per entry.
ALTER FUNCTION ord_apply_batch(jsonb) SET enable_nestloop = off SET jit = off;
ALTER FUNCTION ord_apply_general(jsonb) SET enable_nestloop = off SET jit = off;
