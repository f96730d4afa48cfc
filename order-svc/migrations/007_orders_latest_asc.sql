-- orders_latest is kept in ascending order, (created_at, id), and GET /orders (order-svc/main.c)
-- reads it backwards for its ORDER BY created_at DESC, id DESC. Descending, every new order went
-- into the index's leftmost leaf: B-tree page splits there leave both halves half full, and only an
-- insert into the rightmost leaf skips the descent from the root. Ascending, a call's orders (one
-- created_at, random ids) fill the rightmost leaves: the index has 400 pages where it had 720 for
-- 48,000 orders, and a PlaceOrder call of 1,000 takes x0.95 (tests/bench/bench.sh stage D, README).
--
-- Builds the index again under an exclusive lock on orders (a pause on a large database: RUNBOOKS).
DROP INDEX orders_latest;
CREATE INDEX orders_latest ON orders (created_at, id);
