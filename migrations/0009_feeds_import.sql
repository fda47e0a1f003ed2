-- Subscribable calendar feeds and the keys of events imported from iCalendar.

-- One row per live feed. The token itself is never stored: only its SHA-256,
-- which is what a feed request is looked up by. A revoke deletes the row.
CREATE TABLE feed_tokens (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    owner_id     uuid NOT NULL,
    token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    -- The owner's tenant slug when the feed was made (it goes into each UID).
    tenant_slug  text NOT NULL DEFAULT '',
    -- Optional filters: one scope (both halves or neither) and one RSVP status.
    scope_type   scope_type,
    scope_id     text,
    my_rsvp      rsvp_status,
    -- Set when a signed request showed the owner suspended or banned; the
    -- feed answers 404 until the owner, no longer blocked, uses a feed
    -- operation again.
    owner_blocked boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope_type IS NULL) = (scope_id IS NULL))
);

CREATE INDEX feed_tokens_owner_idx ON feed_tokens (tenant_id, owner_id);

-- Which event an imported VEVENT became: keyed by (tenant, scope, UID,
-- RECURRENCE-ID; '' when it has none). A re-import finds its events here.
CREATE TABLE ics_import_keys (
    tenant_id      uuid NOT NULL,
    scope_type     scope_type NOT NULL,
    scope_id       text NOT NULL,
    uid            text NOT NULL,
    recurrence_id  text NOT NULL DEFAULT '',
    event_id       uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    -- SHA-256 of the VEVENT's imported values: equal means unchanged.
    fingerprint    bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    imported_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope_type, scope_id, uid, recurrence_id)
);

CREATE INDEX ics_import_keys_event_idx ON ics_import_keys (event_id);
