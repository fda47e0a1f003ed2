-- The Events schema. Every rule that protects stored data lives here as well
-- as in the domain layer, so a bug elsewhere cannot store an invalid row.

CREATE TYPE scope_type AS ENUM ('TENANT', 'COMMUNITY', 'TEAM');
CREATE TYPE event_visibility AS ENUM ('public', 'community', 'team', 'private');
CREATE TYPE event_status AS ENUM ('scheduled', 'cancelled');
CREATE TYPE rsvp_status AS ENUM ('interested', 'going', 'not_going', 'waitlisted');
CREATE TYPE outbox_state AS ENUM ('pending', 'published', 'dead');

CREATE TABLE events (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    scope_type    scope_type NOT NULL,
    scope_id      text NOT NULL CHECK (char_length(scope_id) BETWEEN 1 AND 128),
    title         text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 255 AND btrim(title) <> ''),
    description   text NOT NULL DEFAULT '' CHECK (char_length(description) <= 20000),
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    location_text text NOT NULL DEFAULT '' CHECK (char_length(location_text) <= 255),
    location_url  text CHECK (
        location_url IS NULL
        OR (char_length(location_url) <= 2048 AND location_url ~* '^https?://')
    ),
    game_id       text CHECK (game_id IS NULL OR char_length(game_id) BETWEEN 1 AND 128),
    visibility    event_visibility NOT NULL DEFAULT 'public',
    status        event_status NOT NULL DEFAULT 'scheduled',
    capacity      integer CHECK (capacity IS NULL OR capacity > 0),
    cancelled_at  timestamptz,
    cancelled_by  uuid,
    cancel_reason text CHECK (cancel_reason IS NULL OR char_length(cancel_reason) <= 1000),
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    CONSTRAINT events_time_range CHECK (starts_at < ends_at),
    CONSTRAINT events_updated_after_created CHECK (updated_at >= created_at),
    -- community/team visibility only makes sense where membership is defined.
    CONSTRAINT events_visibility_fits_scope CHECK (
        (visibility <> 'community' OR scope_type = 'COMMUNITY')
        AND (visibility <> 'team' OR scope_type = 'TEAM')
    ),
    -- A TENANT-scoped event is scoped to its own tenant, never another one.
    CONSTRAINT events_tenant_scope_is_tenant CHECK (
        scope_type <> 'TENANT' OR scope_id = tenant_id::text
    ),
    CONSTRAINT events_cancel_fields CHECK (
        (status = 'cancelled') = (cancelled_at IS NOT NULL)
        AND (status = 'cancelled') = (cancelled_by IS NOT NULL)
        AND (cancel_reason IS NULL OR status = 'cancelled')
    )
);

-- List queries always filter by tenant and order by (starts_at, id).
CREATE INDEX events_tenant_start_idx ON events (tenant_id, starts_at, id);
CREATE INDEX events_tenant_end_idx ON events (tenant_id, ends_at);
CREATE INDEX events_tenant_scope_idx ON events (tenant_id, scope_type, scope_id, starts_at);
CREATE INDEX events_tenant_creator_idx ON events (tenant_id, created_by);
CREATE INDEX events_tenant_canceller_idx ON events (tenant_id, cancelled_by) WHERE cancelled_by IS NOT NULL;

-- Counters live apart from the event row: RSVPs update them constantly, and
-- locking this narrow row serialises every seat decision for one event
-- (across all instances) without rewriting the wide event row.
CREATE TABLE event_counters (
    event_id      uuid PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    tenant_id     uuid NOT NULL,
    interested    integer NOT NULL DEFAULT 0 CHECK (interested >= 0),
    going         integer NOT NULL DEFAULT 0 CHECK (going >= 0),
    not_going     integer NOT NULL DEFAULT 0 CHECK (not_going >= 0),
    waitlisted    integer NOT NULL DEFAULT 0 CHECK (waitlisted >= 0),
    attended      integer NOT NULL DEFAULT 0 CHECK (attended >= 0),
    -- Grows with every committed change of the event (row or counters), so
    -- a cache can tell which of two snapshots is newer.
    revision      bigint NOT NULL DEFAULT 0 CHECK (revision >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE rsvp_waitlist_seq AS bigint;

CREATE TABLE event_rsvps (
    event_id      uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    status        rsvp_status NOT NULL,
    -- FIFO order of the waitlist: taken from a sequence when the user joins it.
    waitlist_seq  bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id),
    CONSTRAINT event_rsvps_waitlist_order CHECK ((status = 'waitlisted') = (waitlist_seq IS NOT NULL))
);

CREATE INDEX event_rsvps_tenant_user_idx ON event_rsvps (tenant_id, user_id);
CREATE INDEX event_rsvps_waitlist_idx ON event_rsvps (event_id, waitlist_seq) WHERE status = 'waitlisted';

CREATE TABLE event_attendance (
    event_id      uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    marked_by     uuid NOT NULL,
    marked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id)
);

CREATE INDEX event_attendance_tenant_user_idx ON event_attendance (tenant_id, user_id);
CREATE INDEX event_attendance_tenant_marker_idx ON event_attendance (tenant_id, marked_by);

-- The transactional outbox. `seq` is the insertion order (per-event order is
-- insertion order, because writes to one event are serialised by the counter
-- row lock); `tx_id` records the writing transaction so a reader can tell
-- which rows are committed for certain; `published_seq` is the global order
-- in which the single publisher first sent rows to the stream (the
-- CloudEvents `sequence`).
CREATE TABLE outbox (
    id               uuid PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    tx_id            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    tenant_id        uuid NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL CHECK (event_type IN (
        'event.created', 'event.updated', 'event.cancelled',
        'event.rsvp.changed', 'event.attendance.marked'
    )),
    subject          text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 512),
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    traceparent      text CHECK (traceparent IS NULL OR char_length(traceparent) <= 128),
    tracestate       text CHECK (tracestate IS NULL OR char_length(tracestate) <= 512),
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    state            outbox_state NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text CHECK (last_error IS NULL OR char_length(last_error) <= 2000),
    published_seq    bigint UNIQUE,
    published_at     timestamptz,
    dead_at          timestamptz,
    -- `published_seq` is drawn at the first publish attempt and kept, so a
    -- retried publish carries the same CloudEvents `sequence`.
    CONSTRAINT outbox_published_fields CHECK (
        (state = 'published') = (published_at IS NOT NULL)
        AND (state <> 'published' OR published_seq IS NOT NULL)
    ),
    CONSTRAINT outbox_dead_fields CHECK ((state = 'dead') = (dead_at IS NOT NULL))
);

CREATE SEQUENCE outbox_published_seq AS bigint;

CREATE INDEX outbox_pending_idx ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_dead_idx ON outbox (seq) WHERE state = 'dead';
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE state = 'published';
CREATE INDEX outbox_tenant_occurred_idx ON outbox (tenant_id, occurred_at);
CREATE INDEX outbox_event_idx ON outbox (event_id, seq);

-- A retried create (same tenant, user, request id) returns the first result.
CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    request_id    text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 255),
    operation     text NOT NULL CHECK (char_length(operation) BETWEEN 1 AND 64),
    request_hash  text NOT NULL CHECK (char_length(request_hash) = 64),
    result        jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id, operation, request_id),
    CHECK (expires_at > created_at)
);

CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

-- Signed mutations already applied: an identical signed request (same
-- request id, timestamp and signature) is refused within the signature
-- window on every instance, not only the one that saw it first.
CREATE TABLE request_replays (
    key           bytea PRIMARY KEY CHECK (octet_length(key) = 32),
    expires_at    timestamptz NOT NULL
);

CREATE INDEX request_replays_expiry_idx ON request_replays (expires_at);

-- Embedded ("local") authorization: role bindings and scope memberships.
CREATE TABLE role_bindings (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    role          text NOT NULL CHECK (role IN ('events.participant', 'events.organizer')),
    scope_type    scope_type NOT NULL,
    scope_id      text NOT NULL CHECK (char_length(scope_id) BETWEEN 1 AND 128),
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT role_bindings_unique UNIQUE (tenant_id, user_id, role, scope_type, scope_id),
    CONSTRAINT role_bindings_tenant_scope CHECK (scope_type <> 'TENANT' OR scope_id = tenant_id::text)
);

CREATE INDEX role_bindings_user_idx ON role_bindings (tenant_id, user_id);

CREATE TABLE scope_memberships (
    tenant_id     uuid NOT NULL,
    scope_type    scope_type NOT NULL CHECK (scope_type IN ('COMMUNITY', 'TEAM')),
    scope_id      text NOT NULL CHECK (char_length(scope_id) BETWEEN 1 AND 128),
    user_id       uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope_type, scope_id, user_id)
);

CREATE INDEX scope_memberships_user_idx ON scope_memberships (tenant_id, user_id);

-- Who did what with elevated rights (system admin bypass, role changes, DSAR).
CREATE TABLE audit_log (
    id            uuid PRIMARY KEY,
    tenant_id     uuid,
    actor_user_id uuid,
    action        text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),
    target_type   text NOT NULL CHECK (char_length(target_type) BETWEEN 1 AND 64),
    target_id     text CHECK (target_id IS NULL OR char_length(target_id) <= 255),
    request_id    text CHECK (request_id IS NULL OR char_length(request_id) <= 255),
    details       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_tenant_created_idx ON audit_log (tenant_id, created_at);
