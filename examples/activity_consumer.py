#!/usr/bin/env python3
"""Fills an Activity-style feed from the EVENTS stream, the way the Activity bridge does.

    python3 -m pip install -r examples/requirements.txt
    python3 examples/activity_consumer.py --db /tmp/activity.sqlite3 --once

A durable pull consumer with explicit acks reads the domain events on --stream that
match --filter, decodes each CloudEvents envelope (msgpack or JSON, as its
Content-Type says) and turns it into one feed item, stored in a SQLite table shaped
like Activity's `act_activity_event`, with UNIQUE (tenant_id, source_ref). A message
is acked only once its item is stored; a redelivered or replayed message stores
nothing (its source_ref is already there) and is acked again.

Each stored item is printed to stdout as one JSON line; a summary line
(stored / duplicates / acked / terminated) goes to stderr at the end. --once reads
what is pending and exits 0; without it the consumer runs until SIGINT or SIGTERM,
finishes the batch in hand and exits 0.

Options (defaults in brackets):
    --nats-url URL        NATS servers, comma-separated [nats://127.0.0.1:4222]
    --user, --password    log in (also NATS_USER / NATS_PASSWORD)
    --inbox-prefix P      where fetched messages and API replies arrive [_INBOX];
                          the `activity` user of nats/nats-server.conf needs
                          _INBOX_activity (also NATS_INBOX_PREFIX)
    --stream NAME         [EVENTS]
    --filter SUBJECT      [events.out.>]; one tenant: events.out.<tenant_id>.>
    --durable NAME        the consumer's name; it keeps its position [activity-consumer]
    --db PATH             the SQLite file (created when missing) [activity.sqlite3]
    --batch N             messages per fetch [100]
    --once                drain what is pending, then exit

As the `activity` user:

    python3 examples/activity_consumer.py --user activity --password ... \\
        --inbox-prefix _INBOX_activity --db /tmp/activity.sqlite3

Mapping of a message to a feed item:
    tenant_id       tenantid
    type            type
    occurred_at     time
    title           data.title; else the title last seen for the same event in this
                    database (from an earlier message about it); else null
    actor_user_id   data.actor_user_id
    target_user_id  data.user_id for event.rsvp.changed and event.attendance.marked,
                    else null
    visibility      public stays public; community, team and private (or none) become
                    private: Activity does not check memberships, so such an item is
                    for its actor and target only
    scope_type, scope_id   data.scope_type, data.scope_id
    source_ref      "events:" + id
    payload_json    data
    raw_event_id    null
"""

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys

try:
    import msgpack
    import nats
    from nats.js import api
    from nats.js.errors import NotFoundError
except ImportError as missing:  # pragma: no cover - depends on the machine
    sys.exit(
        f"activity_consumer: {missing}; install the packages with "
        "`python3 -m pip install -r examples/requirements.txt`"
    )

TARGETED_TYPES = ("event.rsvp.changed", "event.attendance.marked")
TITLE_LIMIT = 256  # act_activity_event.title is a varchar(256)

SCHEMA = """
CREATE TABLE IF NOT EXISTS act_activity_event (
    id              INTEGER PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    type            TEXT NOT NULL,
    occurred_at     TEXT NOT NULL,
    title           TEXT,
    actor_user_id   TEXT,
    target_user_id  TEXT,
    visibility      TEXT NOT NULL,
    scope_type      TEXT,
    scope_id        TEXT,
    source_ref      TEXT NOT NULL,
    payload_json    TEXT NOT NULL,
    raw_event_id    TEXT,
    UNIQUE (tenant_id, source_ref)
);
-- The last title seen per event, for messages that carry none (attendance).
CREATE TABLE IF NOT EXISTS event_title (
    tenant_id  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    title      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
"""

COLUMNS = (
    "tenant_id", "type", "occurred_at", "title", "actor_user_id", "target_user_id",
    "visibility", "scope_type", "scope_id", "source_ref", "payload_json", "raw_event_id",
)


class Undecodable(Exception):
    """A message that is no CloudEvents envelope of this stream: retrying cannot help."""


def decode(content_type, body):
    """The envelope of one message: JSON or msgpack, as its Content-Type says."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    try:
        if content_type.endswith("+json") or content_type == "application/json":
            envelope = json.loads(body)
        elif content_type in ("", "application/cloudevents+msgpack", "application/msgpack"):
            envelope = msgpack.unpackb(body, raw=False)
        else:
            raise Undecodable(f"unknown Content-Type {content_type!r}")
    except (ValueError, msgpack.UnpackException) as e:
        raise Undecodable(f"cannot decode the {content_type or 'msgpack'} body: {e}") from e
    if not isinstance(envelope, dict) or not envelope.get("id") or not envelope.get("type"):
        raise Undecodable("not a CloudEvents envelope (no id or type)")
    if not isinstance(envelope.get("data"), dict):
        raise Undecodable(f"envelope {envelope['id']} has no data object")
    return envelope


def feed_visibility(visibility):
    """Activity shows items without checking memberships: only public stays public."""
    return "public" if visibility == "public" else "private"


def to_item(envelope, remembered_title=None):
    """Activity's feed item for one envelope (payload_json still a dict)."""
    data = envelope["data"]
    title = data.get("title")
    if title is None:
        title = remembered_title
    if isinstance(title, str):
        title = title[:TITLE_LIMIT]
    kind = envelope["type"]
    return {
        "tenant_id": envelope.get("tenantid") or data.get("tenant_id"),
        "type": kind,
        "occurred_at": envelope.get("time"),
        "title": title,
        "actor_user_id": data.get("actor_user_id"),
        "target_user_id": data.get("user_id") if kind in TARGETED_TYPES else None,
        "visibility": feed_visibility(data.get("visibility")),
        "scope_type": data.get("scope_type"),
        "scope_id": data.get("scope_id"),
        "source_ref": "events:" + str(envelope["id"]),
        "payload_json": data,
        "raw_event_id": None,
    }


class Feed:
    """The SQLite feed: one item per source_ref, and the titles seen per event."""

    def __init__(self, path):
        self.db = sqlite3.connect(path)
        self.db.executescript(SCHEMA)
        self.db.commit()

    def store(self, envelope):
        """Stores the envelope's item; returns it, or None when it was stored before."""
        data = envelope["data"]
        tenant = envelope.get("tenantid") or data.get("tenant_id")
        event_id = data.get("event_id") or envelope.get("subject")
        with self.db:  # one transaction: the item and the title it teaches
            remembered = None
            if data.get("title") is None and event_id:
                row = self.db.execute(
                    "SELECT title FROM event_title WHERE tenant_id = ? AND event_id = ?",
                    (tenant, event_id),
                ).fetchone()
                remembered = row[0] if row else None
            item = to_item(envelope, remembered)
            if not item["tenant_id"] or not item["occurred_at"]:
                raise Undecodable(f"envelope {envelope['id']} has no tenantid or time")
            row = dict(item, payload_json=json.dumps(data, ensure_ascii=False))
            cursor = self.db.execute(
                f"INSERT OR IGNORE INTO act_activity_event ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in COLUMNS)})",
                tuple(row[c] for c in COLUMNS),
            )
            if cursor.rowcount == 0:
                return None
            # A message carries the event's title as of its change; the stream
            # keeps one event's messages in order, so the last one stored wins.
            if isinstance(data.get("title"), str) and event_id:
                self.db.execute(
                    "INSERT INTO event_title (tenant_id, event_id, title) VALUES (?, ?, ?) "
                    "ON CONFLICT (tenant_id, event_id) DO UPDATE SET title = excluded.title",
                    (tenant, event_id, data["title"]),
                )
            return item

    def close(self):
        self.db.close()


def fail(message, code=2):
    print(f"activity_consumer: {message}", file=sys.stderr)
    sys.exit(code)


async def connect(args):
    errors = []
    connected = False

    async def on_error(e):
        # Before the first connection the errors make up the failure message;
        # after it they are worth a line each (the client reconnects by itself).
        if connected:
            print(f"activity_consumer: NATS: {e}", file=sys.stderr)
        else:
            errors.append(e)

    servers = [s.strip() for s in args.nats_url.split(",") if s.strip()]
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                user=args.user or None,
                password=args.password or None,
                inbox_prefix=args.inbox_prefix,
                connect_timeout=5,
                max_reconnect_attempts=-1,
                error_cb=on_error,
            ),
            timeout=10,
        )
    except Exception as e:  # timeouts, NoServersError, authorization errors
        reason = errors[-1] if errors else (e or type(e).__name__)
        fail(f"cannot connect to NATS at {args.nats_url}: {reason}")
    connected = True
    return nc


async def bind_consumer(js, args):
    """The durable consumer, created when missing, checked when it exists."""
    try:
        await js.stream_info(args.stream)
    except NotFoundError:
        fail(f"stream {args.stream} does not exist on {args.nats_url} (the Events service "
             "creates it at start-up; pass --stream to read another one)")
    except nats.errors.NoRespondersError:
        fail(f"JetStream is not enabled on {args.nats_url}")
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        fail(f"no answer from JetStream about stream {args.stream} (permissions? "
             "the `activity` user needs --inbox-prefix _INBOX_activity)")
    try:
        info = await js.consumer_info(args.stream, args.durable)
        if info.config.filter_subject != args.filter:
            fail(f"consumer {args.durable} on {args.stream} filters "
                 f"{info.config.filter_subject!r}, not {args.filter!r}: pass another --durable")
    except NotFoundError:
        try:
            await js.add_consumer(
                args.stream,
                api.ConsumerConfig(
                    durable_name=args.durable,
                    filter_subject=args.filter,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=30,
                ),
            )
        except nats.js.errors.APIError as e:
            fail(f"cannot create consumer {args.durable} on {args.stream} "
                 f"with filter {args.filter!r}: {e.description or e}")
    return await js.pull_subscribe_bind(durable=args.durable, stream=args.stream)


async def consume(args):
    feed = Feed(args.db)
    nc = await connect(args)
    counts = {"stored": 0, "duplicates": 0, "acked": 0, "terminated": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sub = await bind_consumer(nc.jetstream(), args)
    try:
        print(f"activity_consumer: reading {args.stream} ({args.filter}) as {args.durable}"
              f"{' until drained' if args.once else '; Ctrl-C to stop'}", file=sys.stderr)
        while not stop.is_set():
            try:
                messages = await sub.fetch(args.batch, timeout=1 if args.once else 2)
            # nats-py raises its own TimeoutError or asyncio's, depending on
            # where in the fetch the wait ran out.
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                if args.once and (await sub.consumer_info()).num_pending == 0:
                    break
                continue
            # A stop request takes effect between batches: the batch in hand is
            # stored and acked first.
            for msg in messages:
                headers = msg.headers or {}
                try:
                    item = feed.store(decode(headers.get("Content-Type"), msg.data))
                except Undecodable as e:
                    print(f"activity_consumer: {msg.subject}: {e}; terminated (not redelivered)",
                          file=sys.stderr)
                    await msg.term()
                    counts["terminated"] += 1
                    continue
                if item is None:
                    counts["duplicates"] += 1
                else:
                    counts["stored"] += 1
                    print(json.dumps(item, ensure_ascii=False), flush=True)
                # Only now that the item is committed: a crash before this line
                # means a redelivery, which the unique source_ref turns into a no-op.
                await msg.ack_sync(timeout=5)
                counts["acked"] += 1
    finally:
        summary = " ".join(f"{k}={v}" for k, v in counts.items())
        print(f"activity_consumer: {summary}", file=sys.stderr)
        feed.close()
        # Every ack was confirmed by the server (ack_sync): nothing is left to
        # flush, so the connection closes without draining.
        try:
            await sub.unsubscribe()
            await nc.close()
        except nats.errors.Error:
            pass  # the connection is gone already; nothing is left to send


def main():
    parser = argparse.ArgumentParser(
        description="Fill an Activity-style SQLite feed from the EVENTS stream.")
    env = os.environ.get
    parser.add_argument("--nats-url", default=env("NATS_URL") or "nats://127.0.0.1:4222")
    parser.add_argument("--user", default=env("NATS_USER"))
    parser.add_argument("--password", default=env("NATS_PASSWORD"))
    parser.add_argument("--inbox-prefix", default=env("NATS_INBOX_PREFIX") or "_INBOX")
    parser.add_argument("--stream", default="EVENTS")
    parser.add_argument("--filter", default="events.out.>")
    parser.add_argument("--durable", default="activity-consumer")
    parser.add_argument("--db", default="activity.sqlite3")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    try:
        asyncio.run(consume(args))
    except sqlite3.Error as e:
        fail(f"SQLite {args.db}: {e}", code=1)
    except nats.errors.Error as e:  # the connection failed while reading
        fail(f"NATS: {e or type(e).__name__} (unacked messages are redelivered "
             "to the next run)", code=1)


if __name__ == "__main__":
    main()
