-- Rows the publisher reaches through its cursor rather than by their own
-- state: see the next migration. A value of its own, because a new enum
-- value cannot be used in the transaction that adds it.
ALTER TYPE outbox_state ADD VALUE IF NOT EXISTS 'written';
