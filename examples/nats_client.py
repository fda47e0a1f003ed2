#!/usr/bin/env python3
"""A tour of the UpdSpace Events NATS API from Python, signing v2 requests itself.

    pip install nats-py msgpack
    NATS_URL=nats://127.0.0.1:4222 EVENTS_SUBJECT_PREFIX=events \
    BFF_INTERNAL_HMAC_SECRET=... python3 examples/nats_client.py

EVENTS_DEV=1 instead of BFF_INTERNAL_HMAC_SECRET uses the development secret, as the
service does. NATS_USER and NATS_PASSWORD log in; NATS_INBOX_PREFIX (default _INBOX)
is where replies arrive. As the `bff` user of nats/nats-server.conf, which may read
only its own inbox prefix: NATS_USER=bff NATS_PASSWORD=... NATS_INBOX_PREFIX=_INBOX_bff. The tour creates an event as a system admin in a new random tenant,
RSVPs as a member, lists the member's events and prints the calendar entry.
"""

import asyncio, hashlib, hmac, json, os, sys, time, uuid

import msgpack
import nats

PREFIX = os.environ.get("EVENTS_SUBJECT_PREFIX") or "events"
SECRET = os.environ.get("BFF_INTERNAL_HMAC_SECRET") or (
    "dev-internal-hmac" if os.environ.get("EVENTS_DEV", "").lower() in ("1", "true", "yes", "on") else None)


async def call(nc, op, body, tenant_id, user_id, tenant_slug="acme", flags=""):
    """Sends one v2-signed msgpack request; returns (status, reply)."""
    subject, payload = f"{PREFIX}.v1.{op}", msgpack.packb(body)
    request_id, ts = str(uuid.uuid4()), str(int(time.time()))
    canonical = "\n".join(["UPDSPACE-HMAC-V2", "NATS", subject, "", hashlib.sha256(payload).hexdigest(),
                           request_id, ts, tenant_id, tenant_slug, user_id, flags])
    headers = {"X-Request-Id": request_id, "X-Tenant-Id": tenant_id, "X-Tenant-Slug": tenant_slug,
               "X-User-Id": user_id, "X-Updspace-Timestamp": ts, "X-Updspace-Signature-Version": "2",
               "X-Updspace-Signature": hmac.new(SECRET.encode(), canonical.encode(), hashlib.sha256).hexdigest(),
               "Content-Type": "application/msgpack"}
    if flags:
        headers["X-Master-Flags"] = flags  # exactly the string that was signed
    msg = await nc.request(subject, payload, timeout=5, headers=headers)
    h = msg.headers or {}
    if h.get("Content-Type", "").startswith("text/calendar"):
        return 200, msg.data.decode()
    return int(h.get("Nats-Service-Error-Code", 200)), msgpack.unpackb(msg.data)


async def main():
    if not SECRET:
        sys.exit("set BFF_INTERNAL_HMAC_SECRET (or EVENTS_DEV=1 for the development secret)")
    nc = await nats.connect(os.environ.get("NATS_URL") or "nats://127.0.0.1:4222",
                            user=os.environ.get("NATS_USER") or None,
                            password=os.environ.get("NATS_PASSWORD") or None,
                            inbox_prefix=os.environ.get("NATS_INBOX_PREFIX") or "_INBOX")
    tenant, admin, alice = (str(uuid.uuid4()) for _ in range(3))

    async def step(title, op, body, user, flags=""):
        try:
            status, reply = await call(nc, op, body, tenant, user, flags=flags)
        except nats.errors.NoRespondersError:
            sys.exit(f"no events service answers on {PREFIX}.v1.{op}: start events-svc "
                     "or set EVENTS_SUBJECT_PREFIX")
        print(f"== {title}: {op} -> {status}")
        print(reply if isinstance(reply, str) else json.dumps(reply, indent=2, ensure_ascii=False))
        if status != 200:
            sys.exit(1)
        return reply

    event = await step("create as a system admin", "event.create", {
        "scopeType": "TENANT", "scopeId": tenant, "title": "Board games night",
        "startsAt": "2030-01-10T18:00:00Z", "endsAt": "2030-01-10T21:00:00Z", "capacity": 10,
    }, admin, flags=json.dumps({"system_admin": True}, separators=(",", ":")))
    await step("RSVP as a member", "rsvp.set", {"eventId": event["id"], "status": "going"}, alice)
    await step("list as that member", "event.list", {"myRsvp": "going", "limit": 10}, alice)
    await step("calendar entry", "event.ics", {"id": event["id"]}, alice)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
