-- Delivery state in a narrow table of its own: a row of outbox_pending is an outbox row not yet known
-- to be delivered. Every row an INSERT puts into outbox gets one, and so does every row an UPDATE
-- touches (a replay: a redelivered command's recorded answer, to be sent again), through the two
-- statement triggers below, in the same transaction. The relay deletes it once Kafka has the message
-- (vx_outbox_mark); the sweep republishes what is left after a grace period.
--
-- Why: the relay used to mark a row published with an UPDATE of the wide outbox row, which could never
-- be HOT (published_at was in the partial index's predicate): a new copy of the row, payload included,
-- and an entry in each of its three indexes, for every message. Under make bench at 64 connections
-- that was 12 % of PostgreSQL's CPU. The outbox row is now written once, and the mark deletes a
-- narrow row.
--
-- published_at is no longer written or read by this version. It stays so that instances of the
-- previous version keep working during a rolling upgrade; a later migration can drop it.
CREATE TABLE outbox_pending (
    id         bigint PRIMARY KEY,  -- outbox.id
    claimed_at timestamptz          -- last time a sweeper took the row
);
INSERT INTO outbox_pending (id, claimed_at) SELECT id, claimed_at FROM outbox WHERE published_at IS NULL;

CREATE FUNCTION outbox_pending_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (id, claimed_at) SELECT n.id, n.claimed_at FROM n
        ON CONFLICT (id) DO UPDATE SET claimed_at = EXCLUDED.claimed_at;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_pending_on_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION outbox_pending_add();
CREATE TRIGGER outbox_pending_on_update AFTER UPDATE ON outbox
    REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION outbox_pending_add();

DROP INDEX outbox_unpublished;
