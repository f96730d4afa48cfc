-- The keys of orders compare bytewise (COLLATE "C"), whatever the database's locale, as the outbox's
-- dedup key does (common/migrations/004_outbox_keys_c.sql, which says why): order ids and
-- idempotency keys are identifiers, never shown sorted.
--
-- Rewrites the indexes of these columns (not the tables) under an exclusive lock.
ALTER TABLE orders ALTER COLUMN id TYPE text COLLATE "C", ALTER COLUMN idempotency_key TYPE text COLLATE "C";
ALTER TABLE order_history ALTER COLUMN order_id TYPE text COLLATE "C";
ALTER TABLE early_cancels ALTER COLUMN order_id TYPE text COLLATE "C";
