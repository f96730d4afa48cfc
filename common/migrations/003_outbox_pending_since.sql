-- The sweep reads outbox_pending alone. A pending row is due when it was last handed to Kafka
-- (claimed_at: at its commit, or by an earlier sweep) longer ago than the grace; the sweep then
-- reaches the outbox by the ids it claimed, and nothing else.
--
-- Why: claimed_at was NULL until a first sweep, so the sweep joined every pending row to the outbox
-- for its created_at, ordered by id. Each service runs it every second, and its plan (made on the
-- statistics of the moment) was often a merge join that read the outbox from its first row, or a
-- hash of all of it: the whole outbox, which keeps VX_OUTBOX_RETENTION_S (7 days) of rows, read once
-- a second. Under make bench's stage C it took up to 1.5 s a call and halved the throughput.
--
-- A new row's claimed_at is its transaction's now(), which is the created_at of its outbox row: the
-- sweep's rule is unchanged. Instances of the previous version keep working during a rolling
-- upgrade: their sweep reads coalesce(claimed_at, created_at), now always claimed_at.
UPDATE outbox_pending p SET claimed_at = o.created_at FROM outbox o WHERE o.id = p.id AND p.claimed_at IS NULL;
UPDATE outbox_pending SET claimed_at = now() WHERE claimed_at IS NULL; -- orphans, which the prune removes
ALTER TABLE outbox_pending ALTER COLUMN claimed_at SET DEFAULT now();

CREATE OR REPLACE FUNCTION outbox_pending_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (id, claimed_at) SELECT n.id, coalesce(n.claimed_at, now()) FROM n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION outbox_pending_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (id, claimed_at) SELECT n.id, coalesce(n.claimed_at, now()) FROM n
        ON CONFLICT (id) DO UPDATE SET claimed_at = EXCLUDED.claimed_at;
    RETURN NULL;
END $$;

ALTER TABLE outbox_pending ALTER COLUMN claimed_at SET NOT NULL;
