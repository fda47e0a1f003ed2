-- Rows waiting for a retry (pending, attempted at least once: only a
-- failed publish moves next_attempt_at past now()). The publisher asks,
-- for every candidate row, whether an earlier row of its event is waiting;
-- answered from this index (almost always empty), that check no longer
-- walks every earlier row the event ever had.
CREATE INDEX outbox_waiting_idx ON outbox (event_id, seq) WHERE state = 'pending' AND attempts > 0;
