-- The write path, made cheaper per change.

-- Rows waiting for a retry (pending, attempted at least once: only a
-- failed publish moves next_attempt_at past now()). The publisher asks,
-- for every candidate row, whether an earlier row of its event is waiting;
-- answered from this index (almost always empty), that check no longer
-- walks every earlier row the event ever had. It replaces the index on
-- (event_id, seq) over all rows, which nothing else needs: one index
-- entry fewer per outbox row.
CREATE INDEX outbox_waiting_idx ON outbox (event_id, seq) WHERE state = 'pending' AND attempts > 0;
DROP INDEX outbox_event_idx;

-- Unpublished rows have no publish sequence yet: they need no entry.
CREATE UNIQUE INDEX outbox_published_seq_idx ON outbox (published_seq) WHERE published_seq IS NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_published_seq_key;

-- Counters change on every RSVP and never in an indexed column: with room
-- left on each page, those updates stay on the page (HOT) and touch no index.
ALTER TABLE event_counters SET (fillfactor = 70);
