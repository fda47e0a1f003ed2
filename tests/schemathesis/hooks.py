"""Schemathesis hooks for the Events service: every generated request is
signed with HMAC v2 and carries a valid caller, unless the case was
generated to break the headers themselves.

The Rust test `tests/api/schemathesis.rs` starts the service and sets:
  EVENTS_ST_SECRET  the HMAC secret
  EVENTS_ST_TENANT  the caller's tenant id
  EVENTS_ST_USER    the caller's user id (a system admin)
  EVENTS_ST_EVENT   an event of that tenant, used as the path's event id
  EVENTS_ST_DOOMED  another one, for the cancels (so the first stays open)
  EVENTS_ST_STATS   where to write how many answers of each status each
                    operation got (JSON), for the test to judge the run

The signer is the one of docs/hmac-signatures.md, "A v2 signer in Python",
applied to the prepared request, so it covers the exact bytes sent.
"""

import atexit
import collections
import hashlib
import hmac
import json
import os
import time
import uuid
from urllib.parse import unquote, urlsplit

import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

SECRET = os.environ.get("EVENTS_ST_SECRET", "test-secret")
TENANT = os.environ.get("EVENTS_ST_TENANT", "")
USER = os.environ.get("EVENTS_ST_USER", "")
EVENT = os.environ.get("EVENTS_ST_EVENT", "")
DOOMED = os.environ.get("EVENTS_ST_DOOMED", EVENT)
SLUG = "acme"
FLAGS = '{"system_admin":true}'
STATS = os.environ.get("EVENTS_ST_STATS")
_statuses = collections.defaultdict(collections.Counter)


@atexit.register
def _write_stats():
    if STATS:
        with open(STATS, "w") as f:
            json.dump({op: dict(counts) for op, counts in _statuses.items()}, f)


def sign_v2(secret, method, path, query, body, request_id, tenant_id, tenant_slug,
            user_id, master_flags="", ts=None):
    """Headers for a v2-signed request. NATS: method="NATS", path=subject, query=""."""
    ts = int(time.time()) if ts is None else int(ts)
    canonical = "\n".join(["UPDSPACE-HMAC-V2", method.upper(), path, query,
                           hashlib.sha256(body).hexdigest(), request_id, str(ts),
                           tenant_id, tenant_slug, user_id, master_flags])
    sig = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    headers = {"X-Request-Id": request_id, "X-Tenant-Id": tenant_id,
               "X-Tenant-Slug": tenant_slug, "X-User-Id": user_id,
               "X-Updspace-Timestamp": str(ts), "X-Updspace-Signature": sig,
               "X-Updspace-Signature-Version": "2"}
    if master_flags:
        headers["X-Master-Flags"] = master_flags  # the exact string that was signed
    return headers


class SignV2(requests.auth.AuthBase):
    """Signs the prepared request over what is actually sent."""

    def __call__(self, r):
        url = urlsplit(r.url)
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        # The headers as they will be sent; signing must not change them.
        sent = {k: v for k, v in r.headers.items()}

        def get(name):
            for k, v in sent.items():
                if k.lower() == name.lower():
                    return v
            return ""

        signed = sign_v2(SECRET, r.method, unquote(url.path), url.query, body,
                         get("X-Request-Id"), get("X-Tenant-Id"), get("X-Tenant-Slug"),
                         get("X-User-Id"), get("X-Master-Flags"))
        r.headers["X-Updspace-Timestamp"] = signed["X-Updspace-Timestamp"]
        r.headers["X-Updspace-Signature"] = signed["X-Updspace-Signature"]
        if not get("X-Updspace-Signature-Version"):
            r.headers["X-Updspace-Signature-Version"] = "2"
        return r


def _mode(case, location):
    meta = getattr(case, "meta", None)
    if meta is None:
        return GenerationMode.POSITIVE
    component = meta.components.get(location)
    if component is None:
        return meta.generation.mode
    return component.mode


@schemathesis.hook
def before_call(context, case, kwargs):
    signed = any(
        "hmacSignature" in requirement
        for requirement in (case.operation.definition.raw.get("security") or [])
    )
    if not signed:
        return
    if _mode(case, ParameterLocation.HEADER) == GenerationMode.POSITIVE:
        # A valid caller; a fresh request id each time, as a signed request
        # is accepted once.
        headers = dict(case.headers or {})
        headers.update({
            "X-Request-Id": str(uuid.uuid4()),
            "X-Tenant-Id": TENANT,
            "X-Tenant-Slug": SLUG,
            "X-User-Id": USER,
            "X-Master-Flags": FLAGS,
            "X-Updspace-Signature-Version": "2",
        })
        case.headers = headers
    if _mode(case, ParameterLocation.PATH) == GenerationMode.POSITIVE and case.path_parameters:
        params = dict(case.path_parameters)
        if "event_id" in params and EVENT:
            cancels = case.operation.path.endswith("/cancel")
            params["event_id"] = DOOMED if cancels else EVENT
        if "user_id" in params and USER:
            params["user_id"] = USER
        case.path_parameters = params
    kwargs["auth"] = SignV2()


@schemathesis.hook
def after_call(context, case, response):
    key = f"{case.method.upper()} {case.operation.path}"
    _statuses[key][str(response.status_code)] += 1
