-- An outbox written once. A row is inserted by the write that causes it and
-- is not updated again unless publishing it fails: the publisher walks the
-- rows in `seq` order behind a cursor (`outbox_cursor`) instead of numbering
-- and marking every row. A row's CloudEvents `sequence` is its `seq`.
--
-- A row with state 'written' is published when its `seq` is at or below the
-- cursor, and pending above it. The other states are kept for the rows that
-- leave the cursor's path: 'pending' for a row waiting for a retry (or
-- waiting behind one of its event's), 'published' for such a row once it is
-- in the stream, 'dead' for one that ran out of attempts.

-- The publisher's place in the outbox. `published_through`: every row up to
-- this `seq` has been handled (sent, or handed to the retry path).
-- `sending_through`/`sending_since`: rows above `published_through` and up to
-- `sending_through` may have been sent since `sending_since` (a publisher
-- died before it moved the cursor), which matters once that is longer ago
-- than the stream's duplicate window.
CREATE TABLE outbox_cursor (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    published_through bigint NOT NULL,
    sending_through   bigint NOT NULL,
    sending_since     timestamptz,
    -- Why the rows above the cursor did not go out last time (NATS down, no
    -- stream leader), until the cursor moves again.
    last_error        text CHECK (last_error IS NULL OR char_length(last_error) <= 2000),
    last_error_at     timestamptz,
    CHECK (sending_through >= published_through)
);

-- When the cursor passed which `seq`: one row per second at most (the last
-- move within that second), so a row's publish time is known to within a
-- second without writing it into the row.
CREATE TABLE outbox_progress (
    second  timestamptz PRIMARY KEY,
    through bigint NOT NULL,
    at      timestamptz NOT NULL
);
CREATE INDEX outbox_progress_through_idx ON outbox_progress (through);

-- Rows written before this migration keep their states. Pending rows get
-- their number now, above every number already in the stream, so that each
-- event's numbers keep increasing. The cursor starts above every existing
-- row and every number drawn so far, and new rows are numbered above it.
UPDATE outbox o SET published_seq = n.v
FROM (SELECT id, nextval('outbox_published_seq') AS v
      FROM (SELECT id FROM outbox WHERE published_seq IS NULL ORDER BY seq) AS s) AS n
WHERE o.id = n.id;

DO $$
DECLARE
    top bigint := GREATEST(
        (SELECT COALESCE(max(seq), 0) FROM outbox),
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_published_seq));
BEGIN
    IF top > 0 THEN
        PERFORM setval(pg_get_serial_sequence('outbox', 'seq'), top);
    END IF;
    INSERT INTO outbox_cursor (published_through, sending_through) VALUES (top, top);
END $$;

ALTER TABLE outbox ALTER COLUMN state SET DEFAULT 'written';
ALTER TABLE outbox DROP CONSTRAINT outbox_published_fields;
ALTER TABLE outbox ADD CONSTRAINT outbox_published_fields
    CHECK ((state = 'published') = (published_at IS NOT NULL));

-- Is an earlier row of this event pending? Asked for every row the cursor
-- passes (a row behind a retry waits with it) and by the retry path itself.
CREATE INDEX outbox_pending_event_idx ON outbox (event_id, seq) WHERE state = 'pending';
DROP INDEX outbox_waiting_idx;

-- Rows are no longer updated in place as a rule: pages can be filled.
ALTER TABLE outbox SET (fillfactor = 100);

-- Every row with the state and publish time it has in effect, for operators
-- and for the service's own views (status, replay, retention, exports).
CREATE VIEW outbox_view AS
SELECT o.id, o.seq, o.tx_id, o.tenant_id, o.event_id, o.event_type, o.subject, o.payload,
       o.traceparent, o.tracestate, o.occurred_at,
       CASE WHEN o.state <> 'written' THEN o.state::text
            WHEN o.seq <= c.published_through THEN 'published'
            ELSE 'pending' END AS status,
       o.attempts,
       CASE WHEN o.state = 'written' AND o.seq > c.published_through AND c.last_error IS NOT NULL
            THEN c.last_error_at ELSE o.next_attempt_at END AS next_attempt_at,
       CASE WHEN o.state = 'written' AND o.seq > c.published_through
            THEN c.last_error ELSE o.last_error END AS last_error,
       o.published_seq, COALESCE(o.published_seq, o.seq) AS sequence,
       CASE WHEN o.state <> 'written' THEN o.published_at
            WHEN o.seq <= c.published_through THEN COALESCE(
                (SELECT p.at FROM outbox_progress p WHERE p.through >= o.seq
                 ORDER BY p.through LIMIT 1),
                o.occurred_at)
       END AS published_at,
       o.dead_at, o.first_sent_at
FROM outbox o CROSS JOIN outbox_cursor c;
