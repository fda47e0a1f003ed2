-- Time zones and recurring events.
--
-- Every event keeps its start and end as UTC instants and names the IANA
-- zone it is shown in. A recurring event is a series: its rule, its
-- exceptions and the template new occurrences are made from. Each
-- occurrence is an ordinary event row that points back at its series.

ALTER TABLE events
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC'
        CHECK (char_length(time_zone) BETWEEN 1 AND 64);

CREATE TABLE event_series (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    scope_type         scope_type NOT NULL,
    scope_id           text NOT NULL CHECK (char_length(scope_id) BETWEEN 1 AND 128),
    -- RFC 5545 RRULE value (no DTSTART: that is dtstart below).
    rrule              text NOT NULL CHECK (char_length(rrule) BETWEEN 1 AND 512),
    exdates            timestamptz[] NOT NULL DEFAULT '{}',
    time_zone          text NOT NULL CHECK (char_length(time_zone) BETWEEN 1 AND 64),
    -- The first instance of the rule; occurrences keep its local time of day.
    dtstart            timestamptz NOT NULL,
    duration_secs      bigint NOT NULL CHECK (duration_secs > 0),
    -- The template of occurrences still to be made.
    title              text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 255 AND btrim(title) <> ''),
    description        text NOT NULL DEFAULT '' CHECK (char_length(description) <= 20000),
    location_text      text NOT NULL DEFAULT '' CHECK (char_length(location_text) <= 255),
    location_url       text CHECK (location_url IS NULL OR char_length(location_url) <= 2048),
    game_id            text CHECK (game_id IS NULL OR char_length(game_id) BETWEEN 1 AND 128),
    visibility         event_visibility NOT NULL,
    capacity           integer CHECK (capacity IS NULL OR capacity > 0),
    -- Every instance of the rule that starts at or before this instant has
    -- been made (or was excluded); later ones are made as time passes.
    materialised_until timestamptz NOT NULL,
    -- No instance will ever be made again: the rule ran out, or the series
    -- was cut short or cancelled.
    complete           boolean NOT NULL DEFAULT false,
    cancelled          boolean NOT NULL DEFAULT false,
    -- Grows with every change of the series (its calendar SEQUENCE).
    version            bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- Carried into the domain events of occurrences made later.
    tenant_slug        text CHECK (tenant_slug IS NULL OR char_length(tenant_slug) <= 255),
    created_by         uuid NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_series_cancelled_is_complete CHECK (NOT cancelled OR complete)
);

-- The extender looks for series that still grow and are behind the horizon.
CREATE INDEX event_series_growing_idx ON event_series (materialised_until) WHERE NOT complete;

ALTER TABLE events
    ADD COLUMN series_id uuid REFERENCES event_series (id),
    -- The instance of the series' rule this occurrence is (its start as the
    -- rule gives it, UTC), whatever the occurrence was moved to.
    ADD COLUMN recurrence_id timestamptz,
    -- Changed on its own, apart from its series.
    ADD COLUMN series_exception boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT events_series_fields CHECK (
        (series_id IS NULL) = (recurrence_id IS NULL)
        AND (series_id IS NOT NULL OR NOT series_exception)
    );

-- One occurrence per instance, whichever instance makes it and however often.
CREATE UNIQUE INDEX events_series_occurrence_idx ON events (series_id, recurrence_id)
    WHERE series_id IS NOT NULL;
