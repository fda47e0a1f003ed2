-- The RSVP rules of a series' template, so occurrences made later carry
-- them. The window is stored as instants for the template's own start
-- (dtstart); each occurrence gets it moved by its distance from there.

ALTER TABLE event_series
    ADD COLUMN rsvp_opens_at  timestamptz,
    ADD COLUMN rsvp_closes_at timestamptz,
    ADD COLUMN max_guests     integer NOT NULL DEFAULT 0 CHECK (max_guests BETWEEN 0 AND 50),
    ADD COLUMN rsvp_approval  boolean NOT NULL DEFAULT false,
    ADD COLUMN reminders      integer[] NOT NULL DEFAULT '{}' CHECK (
        cardinality(reminders) <= 5 AND 1 <= ALL (reminders) AND 43200 >= ALL (reminders)
    );
