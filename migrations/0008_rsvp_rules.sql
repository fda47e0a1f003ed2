-- RSVP rules: the RSVP window, guests, approval by a manager, reminders.
--
-- The new statuses are added here but not used by this migration: a value
-- added to an enum cannot be used in the transaction that adds it.

ALTER TYPE rsvp_status ADD VALUE IF NOT EXISTS 'pending';
ALTER TYPE rsvp_status ADD VALUE IF NOT EXISTS 'declined';

ALTER TABLE events
    -- RSVPs are taken from `rsvp_opens_at` (none: from creation) until
    -- before `rsvp_closes_at` (none: until the event ends).
    ADD COLUMN rsvp_opens_at  timestamptz,
    ADD COLUMN rsvp_closes_at timestamptz,
    ADD COLUMN max_guests     integer NOT NULL DEFAULT 0 CHECK (max_guests BETWEEN 0 AND 50),
    -- `going` becomes `pending` until a manager approves it.
    ADD COLUMN rsvp_approval  boolean NOT NULL DEFAULT false,
    -- Minutes before the start at which going users are reminded.
    ADD COLUMN reminders      integer[] NOT NULL DEFAULT '{}' CHECK (
        cardinality(reminders) <= 5 AND 1 <= ALL (reminders) AND 43200 >= ALL (reminders)
    ),
    ADD CONSTRAINT events_rsvp_window CHECK (
        (rsvp_closes_at IS NULL OR rsvp_closes_at <= ends_at)
        AND (rsvp_opens_at IS NULL OR rsvp_opens_at < COALESCE(rsvp_closes_at, ends_at))
    );

-- A party is the user and their guests; guests are kept while the user is
-- going, waitlisted or pending.
ALTER TABLE event_rsvps
    ADD COLUMN guests integer NOT NULL DEFAULT 0 CHECK (guests BETWEEN 0 AND 50),
    ADD CONSTRAINT event_rsvps_guests_of_parties CHECK (
        guests = 0 OR status NOT IN ('interested', 'not_going')
    );

-- `guests` counts the guests of going parties: seats taken = going + guests.
ALTER TABLE event_counters
    ADD COLUMN pending  integer NOT NULL DEFAULT 0 CHECK (pending >= 0),
    ADD COLUMN declined integer NOT NULL DEFAULT 0 CHECK (declined >= 0),
    ADD COLUMN guests   integer NOT NULL DEFAULT 0 CHECK (guests >= 0);

ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_type_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_type_check CHECK (event_type IN (
    'event.created', 'event.updated', 'event.cancelled',
    'event.rsvp.changed', 'event.attendance.marked', 'event.reminder.due'
));

-- Reminders due: one row per (event, going user, offset), written in the
-- transaction of the change that creates, moves or removes it. The
-- scheduler marks a row sent in the transaction that writes its outbox
-- row, so each is committed once, whichever instance sends it.
CREATE TABLE event_reminders (
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    minutes_before  integer NOT NULL CHECK (minutes_before BETWEEN 1 AND 43200),
    tenant_id       uuid NOT NULL,
    due_at          timestamptz NOT NULL,
    sent_at         timestamptz,
    PRIMARY KEY (event_id, user_id, minutes_before)
);

CREATE INDEX event_reminders_due_idx ON event_reminders (due_at) WHERE sent_at IS NULL;
CREATE INDEX event_reminders_tenant_user_idx ON event_reminders (tenant_id, user_id);
