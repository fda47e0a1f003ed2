-- The publisher numbers each row (`published_seq`, the CloudEvents
-- `sequence`) before it sends it, and marks it published afterwards: two
-- updates of every outbox row. With `published_seq` in no index and half of
-- each page left free, the numbering is a heap-only (HOT) update: the row's
-- new version stays on its page and no index gets a new entry.
--
-- Numbers come from the `outbox_published_seq` sequence, so they stay
-- unique without an index. Replays page through published rows by
-- (published_at, seq), the order they reached the stream, which the new
-- index serves; it also serves retention (`published_at < cutoff`).
DROP INDEX outbox_published_seq_idx;
DROP INDEX outbox_published_at_idx;
CREATE INDEX outbox_published_idx ON outbox (published_at, seq) WHERE state = 'published';
ALTER TABLE outbox SET (fillfactor = 50);
