-- The keys of inventory compare bytewise (COLLATE "C"), whatever the database's locale, as the
-- outbox's dedup key does (common/migrations/004_outbox_keys_c.sql, which says why): product and
-- order ids are identifiers. GET /products lists products in id order: now bytewise, the order
-- C.UTF-8 (the local stack's locale) gave them already.
--
-- Rewrites the indexes of these columns (not the tables) under an exclusive lock.
ALTER TABLE products ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE holds ALTER COLUMN order_id TYPE text COLLATE "C", ALTER COLUMN product_id TYPE text COLLATE "C";
ALTER TABLE released_orders ALTER COLUMN order_id TYPE text COLLATE "C";
