"""Expands a series calendar the way a calendar client does, with parsers
independent of the service: icalendar reads the document, dateutil expands
the RRULE in the DTSTART's zone, EXDATE removes instances and RECURRENCE-ID
overrides replace them.

Reads the calendar on stdin and prints JSON: the master's zone, and every
occurrence (recurrence id, start and end in UTC, summary, status).
"""

import json
import sys
from datetime import timezone

from dateutil.rrule import rrulestr
from icalendar import Calendar


def utc(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    cal = Calendar.from_ical(sys.stdin.read())
    events = list(cal.walk("VEVENT"))
    masters = [e for e in events if e.get("RRULE") is not None]
    if len(masters) != 1:
        sys.exit(f"expected one VEVENT with RRULE, found {len(masters)}")
    master = masters[0]
    overrides = {
        utc(e.decoded("RECURRENCE-ID")): e for e in events if e.get("RECURRENCE-ID") is not None
    }
    start = master.decoded("DTSTART")
    duration = master.decoded("DTEND") - start
    rule = master.get("RRULE").to_ical().decode()
    excluded = set()
    exdate = master.get("EXDATE")
    for prop in exdate if isinstance(exdate, list) else ([exdate] if exdate is not None else []):
        for d in prop.dts:
            excluded.add(utc(d.dt))
    out = []
    for n, at in enumerate(rrulestr(rule, dtstart=start)):
        if n >= 2000:
            break
        rid = utc(at)
        if rid in excluded:
            continue
        o = overrides.get(rid)
        if o is not None:
            out.append(
                {
                    "recurrenceId": rid,
                    "startsAt": utc(o.decoded("DTSTART")),
                    "endsAt": utc(o.decoded("DTEND")),
                    "summary": str(o.get("SUMMARY")),
                    "status": str(o.get("STATUS")),
                }
            )
        else:
            out.append(
                {
                    "recurrenceId": rid,
                    "startsAt": rid,
                    "endsAt": utc((at + duration)),
                    "summary": str(master.get("SUMMARY")),
                    "status": str(master.get("STATUS")),
                }
            )
    tzids = [str(tz.get("TZID")) for tz in cal.walk("VTIMEZONE")]
    print(json.dumps({"tzid": master["DTSTART"].params.get("TZID"), "vtimezones": tzids, "occurrences": out}))


if __name__ == "__main__":
    main()
