-- What `events-svc import django` brought over from the Django service, one
-- row per source row: a re-run compares each source row's fingerprint with
-- the one recorded here, so unchanged rows are skipped, changed ones are
-- updated, and rows gone from the source are found and reported.
CREATE TABLE django_import (
    kind         text NOT NULL CHECK (kind IN ('event', 'rsvp', 'attendance', 'outbox')),
    -- The event id (events, RSVPs, attendance) or the outbox row id.
    row_id       uuid NOT NULL,
    -- The RSVP's or attendance's user; the nil UUID for events and outbox rows.
    user_id      uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    tenant_id    uuid NOT NULL,
    -- SHA-256 of the source row as read.
    fingerprint  bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    -- Imported with a safe value in place of one the rules refuse (`--fix`).
    fixed        boolean NOT NULL DEFAULT false,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, row_id, user_id)
);

CREATE INDEX django_import_tenant_idx ON django_import (tenant_id, kind);
CREATE INDEX django_import_user_idx ON django_import (tenant_id, user_id) WHERE kind IN ('rsvp', 'attendance');
