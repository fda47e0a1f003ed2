//! Horizontal scaling (`docs/scaling.md`: Postgres is the source of truth,
//! NATS spreads requests over a queue group, one instance at a time
//! publishes the outbox): one deterministic workload of a few hundred
//! operations, run once against a single instance and once against three
//! instances sharing one database, subject prefix and stream. Calls
//! alternate between NATS (the queue group `events` spreads them over the
//! instances) and the HTTP gateway of each instance in turn, one at a time,
//! each waiting for its reply, so the expected outcome is well defined.
//! Both deployments must end in the same state (views, everyone's `myRsvp`,
//! waitlist order, attendance, the outbox), answer every call the same way,
//! and after every write each instance must already serve the new state
//! (read-your-writes across instances): the single instance is the oracle
//! for the three. With three instances, RSVPs that reach an instance other
//! than their scope's owner are handed to the owner (`routing.rs`), so the
//! comparison covers forwarded answers, refusals included.
//!
//! How we know this test can fail (checked in a scratch copy of the tree,
//! never committed):
//! - With the cross-instance invalidation switched off (the change listener
//!   in `src/actors/registry.rs` not sending `ScopeMsg::Invalidate`), the
//!   three-instance run fails at step 4: an instance that had the event
//!   cached still serves `version` 1 and the old capacity after another
//!   instance's update, and still does 50 ms later (until the 5 s TTL).
//! - Without the revision check of cached reads (`App::load`, active while
//!   other instances are about), it fails at a varying step: the change
//!   note is published after the commit, so the caller's next read on
//!   another instance can arrive before it and return the previous
//!   `rsvpCounts`/`myRsvp`/`version` (4 to 17 such reads per run of this
//!   workload, each fresh about 1 ms later). The service promises that a
//!   user reads their own acknowledged writes on any instance
//!   (`docs/scaling.md`, "Reading your own writes on another instance").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use updspace_events::client::{EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::{TestApp, identity};

const SEED: u64 = 0x5CA1_AB1E_E7E7_2024;
const OPS: usize = 320;
const USERS: usize = 50;
const EVENTS: usize = 10;
/// The event that gets cancelled (and cancelled again, a no-op).
const CANCELLED: usize = 1;

/// A 64-bit linear congruential generator (Knuth's MMIX constants): the
/// same seed gives the same workload on every run and every machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation of the workload. Events are named by creation index, users
/// by their index in [`People::users`].
#[derive(Debug, Clone)]
enum Action {
    Create {
        title: String,
        capacity: Option<u32>,
        scope: usize,
    },
    UpdateTitle {
        event: usize,
        title: String,
    },
    UpdateCapacity {
        event: usize,
        capacity: Option<u32>,
    },
    Cancel {
        event: usize,
    },
    /// `None` clears the RSVP.
    Rsvp {
        event: usize,
        user: usize,
        status: Option<&'static str>,
    },
    Attend {
        event: usize,
        user: usize,
    },
}

impl Action {
    fn event(&self, created: usize) -> usize {
        match self {
            Action::Create { .. } => created,
            Action::UpdateTitle { event, .. }
            | Action::UpdateCapacity { event, .. }
            | Action::Cancel { event }
            | Action::Rsvp { event, .. }
            | Action::Attend { event, .. } => *event,
        }
    }

    /// Who makes the call: `None` is the organizer.
    fn caller(&self) -> Option<usize> {
        match self {
            Action::Rsvp { user, .. } => Some(*user),
            _ => None,
        }
    }
}

/// The workload: creates (some with capacity) spread over the run, RSVPs by
/// ~50 users on ~10 events, title and capacity updates (up, down, unlimited,
/// and some that change nothing), attendance marks, a cancel and a repeated
/// cancel, then calls on the cancelled event (refused with 409).
fn workload() -> Vec<Action> {
    let mut rng = Lcg(SEED);
    let mut actions = Vec::with_capacity(OPS);
    let mut capacities: Vec<Option<u32>> = Vec::new();
    let mut titles: Vec<String> = Vec::new();
    for step in 0..OPS {
        let created = capacities.len();
        let create_now = created < EVENTS && (step < 3 || step % 25 == 0);
        if create_now {
            let capacity = (created % 3 != 2).then(|| 2 + rng.below(3) as u32);
            let title = format!("Event {created}");
            capacities.push(capacity);
            titles.push(title.clone());
            actions.push(Action::Create {
                title,
                capacity,
                scope: created % 3,
            });
            continue;
        }
        if step == OPS * 3 / 4 || step == OPS * 7 / 8 {
            actions.push(Action::Cancel { event: CANCELLED });
            continue;
        }
        let event = rng.below(created as u64) as usize;
        let roll = rng.below(100);
        let action = match roll {
            0..70 => {
                let status = match rng.below(10) {
                    0..5 => Some("going"),
                    5..7 => Some("interested"),
                    7 => Some("not_going"),
                    _ => None,
                };
                Action::Rsvp {
                    event,
                    user: rng.below(USERS as u64) as usize,
                    status,
                }
            }
            70..80 => Action::Attend {
                event,
                user: rng.below(USERS as u64) as usize,
            },
            80..90 => {
                let capacity = match capacities[event] {
                    None => Some(2 + rng.below(3) as u32),
                    Some(c) => match rng.below(4) {
                        0 => Some(c + 1 + rng.below(2) as u32),
                        1 => Some(c.saturating_sub(1 + rng.below(2) as u32).max(1)),
                        2 => None,
                        _ => Some(c),
                    },
                };
                capacities[event] = capacity;
                Action::UpdateCapacity { event, capacity }
            }
            90..96 => {
                let title = format!("Event {event} (rev {step})");
                titles[event] = title.clone();
                Action::UpdateTitle { event, title }
            }
            // The title it already has: changes nothing, version stays.
            _ => Action::UpdateTitle {
                event,
                title: titles[event].clone(),
            },
        };
        actions.push(action);
    }
    actions
}

/// The tenant, its organizer and its users: the same people in both
/// deployments (each has its own database), so their ids compare directly.
struct People {
    tenant: Uuid,
    organizer: Uuid,
    users: Vec<Uuid>,
}

impl People {
    fn new() -> Self {
        Self {
            tenant: Uuid::new_v4(),
            organizer: Uuid::new_v4(),
            users: (0..USERS).map(|_| Uuid::new_v4()).collect(),
        }
    }

    fn who(&self, caller: Option<usize>) -> Identity {
        match caller {
            Some(u) => identity(self.tenant, self.users[u]),
            None => identity(self.tenant, self.organizer),
        }
    }

    fn scope(&self, scope: usize) -> (&'static str, String) {
        match scope {
            0 => ("TENANT", self.tenant.to_string()),
            1 => ("COMMUNITY", "club-a".to_string()),
            _ => ("TEAM", "team-b".to_string()),
        }
    }

    /// Readable names for ids, so diffs say `u12` rather than a UUID.
    fn names(&self) -> HashMap<String, String> {
        let mut names: HashMap<String, String> = self
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.to_string(), format!("u{i}")))
            .collect();
        names.insert(self.organizer.to_string(), "organizer".into());
        names.insert(self.tenant.to_string(), "tenant".into());
        names
    }
}

/// One deployment: its instances (the first owns the database and stream)
/// and a NATS client whose calls the queue group spreads over them.
struct Deployment {
    label: &'static str,
    instances: Vec<TestApp>,
    client: EventsClient,
    /// Event ids by creation index.
    ids: Vec<String>,
    /// Ids (events, people) → stable names.
    names: HashMap<String, String>,
}

impl Deployment {
    async fn start(label: &'static str, size: usize, people: &People) -> Self {
        let first = TestApp::spawn().await;
        let mut instances = vec![];
        for _ in 1..size {
            instances.push(first.spawn_sibling(|_| {}).await);
        }
        instances.insert(0, first);
        instances[0]
            .grant(
                people.tenant,
                people.organizer,
                "events.organizer",
                "TENANT",
                &people.tenant.to_string(),
            )
            .await;
        let mut client = instances[0].client();
        client.timeout = Duration::from_secs(30);
        Self {
            label,
            instances,
            client,
            ids: Vec::new(),
            names: people.names(),
        }
    }

    /// Stops the siblings, then the owner (which drops database and stream).
    async fn shut_down(mut self) {
        while self.instances.len() > 1 {
            let mut sibling = self.instances.pop().expect("a sibling");
            sibling.stop().await;
        }
        self.instances[0].stop().await;
    }

    /// Group commits each instance has run so far: which one served a write.
    fn batches(&self) -> Vec<u64> {
        self.instances
            .iter()
            .map(|app| {
                app.state
                    .app
                    .registry()
                    .shared()
                    .batches
                    .load(Ordering::Relaxed)
            })
            .collect()
    }

    /// Event ids and people's ids become names; times and request ids,
    /// which differ between runs, are dropped.
    fn normalize(&self, v: &Value) -> Value {
        const VOLATILE: &[&str] = &[
            "createdAt",
            "updatedAt",
            "markedAt",
            "cancelledAt",
            "request_id",
            "created_at",
            "updated_at",
            "marked_at",
            "cancelled_at",
            "occurred_at",
        ];
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), self.normalize(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.normalize(v)).collect()),
            Value::String(s) => self.names.get(s).map_or_else(|| v.clone(), |n| json!(n)),
            other => other.clone(),
        }
    }

    fn name(&self, id: &str) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("[{}] unknown id {id}", self.label))
    }

    /// Runs one action through NATS or through instance `http`'s gateway.
    async fn call(&self, people: &People, action: &Action, http: Option<usize>) -> (u16, Value) {
        let who = people.who(action.caller());
        let id = |e: &usize| self.ids[*e].clone();
        let (op, nats_body, method, path, http_body) = match action {
            Action::Create {
                title,
                capacity,
                scope,
            } => {
                let (scope_type, scope_id) = people.scope(*scope);
                let body = json!({
                    "scopeType": scope_type, "scopeId": scope_id, "title": title,
                    "visibility": "public", "locationText": "Hall 3",
                    "startsAt": "2031-03-10T18:00:00Z", "endsAt": "2031-03-10T21:00:00Z",
                    "capacity": capacity,
                });
                let path = "/api/v1/events/".to_string();
                ("event.create", body.clone(), "POST", path, Some(body))
            }
            Action::UpdateTitle { event, title } => (
                "event.update",
                json!({"id": id(event), "title": title}),
                "PATCH",
                format!("/api/v1/events/{}", id(event)),
                Some(json!({"title": title})),
            ),
            Action::UpdateCapacity { event, capacity } => (
                "event.update",
                json!({"id": id(event), "capacity": capacity}),
                "PATCH",
                format!("/api/v1/events/{}", id(event)),
                Some(json!({"capacity": capacity})),
            ),
            Action::Cancel { event } => (
                "event.cancel",
                json!({"id": id(event), "reason": "venue closed"}),
                "POST",
                format!("/api/v1/events/{}/cancel", id(event)),
                Some(json!({"reason": "venue closed"})),
            ),
            Action::Rsvp {
                event,
                status: Some(status),
                ..
            } => (
                "rsvp.set",
                json!({"eventId": id(event), "status": status}),
                "POST",
                format!("/api/v1/events/{}/rsvp", id(event)),
                Some(json!({"status": status})),
            ),
            Action::Rsvp {
                event,
                status: None,
                ..
            } => (
                "rsvp.clear",
                json!({"eventId": id(event)}),
                "DELETE",
                format!("/api/v1/events/{}/rsvp", id(event)),
                None,
            ),
            Action::Attend { event, user } => {
                let user = people.users[*user].to_string();
                (
                    "attendance.mark",
                    json!({"eventId": id(event), "userId": user}),
                    "POST",
                    format!("/api/v1/events/{}/attendance", id(event)),
                    Some(json!({"userId": user})),
                )
            }
        };
        match http {
            None => {
                let reply = self
                    .client
                    .call(op, &who, &nats_body)
                    .await
                    .unwrap_or_else(|e| panic!("[{}] {op}: no reply: {e}", self.label));
                (reply.status, reply.body)
            }
            Some(i) => {
                let reply = self.instances[i].bff(method, &path, &who, http_body).await;
                (reply.status, reply.json())
            }
        }
    }

    /// `event.get` through instance `i`'s gateway, as `caller`.
    async fn get(&self, people: &People, i: usize, event: usize, caller: Option<usize>) -> Value {
        let path = format!("/api/v1/events/{}", self.ids[event]);
        let reply = self.instances[i]
            .bff("GET", &path, &people.who(caller), None)
            .await;
        assert_eq!(
            reply.status, 200,
            "[{}] get e{event} on instance {i}: {}",
            self.label, reply.text
        );
        self.normalize(&reply.json())
    }

    /// A NATS read that must succeed.
    async fn read(&self, people: &People, op: &str, body: Value) -> Value {
        let reply = self
            .client
            .call(op, &people.who(None), &body)
            .await
            .unwrap_or_else(|e| panic!("[{}] {op}: no reply: {e}", self.label));
        assert_eq!(
            reply.status, 200,
            "[{}] {op} {body}: {:?}",
            self.label, reply.body
        );
        reply.body
    }
}

/// What one step looked like: the reply, and the event as every instance
/// served it right after (they must agree).
#[derive(Debug, Clone, PartialEq)]
struct Step {
    status: u16,
    reply: Value,
    view: Value,
}

/// The view fields that say which state an event is in (no caller-specific
/// `myRsvp`).
fn core(view: &Value) -> Value {
    json!({
        "title": view["title"], "capacity": view["capacity"], "status": view["status"],
        "version": view["version"], "rsvpCounts": view["rsvpCounts"],
    })
}

/// Calls through NATS on even steps; through the gateways, in turn, on odd ones.
fn http_instance(step: usize, size: usize) -> Option<usize> {
    (step % 2 == 1).then_some((step / 2) % size)
}

/// Which instance served a write, and who then read its effect.
#[derive(Default)]
struct Coverage {
    /// writes[i]: writes committed by instance i.
    writes: Vec<usize>,
    /// fresh[i][j]: writes committed by instance i that changed the event,
    /// read right after through instance j ≠ i with the change visible.
    fresh: Vec<Vec<usize>>,
    /// Of those, how many moved `version` (updates, cancels).
    fresh_versions: usize,
}

/// Runs the workload. With an oracle (the single instance's steps), every
/// reply and every instance's view after every step must equal it.
async fn run(
    dep: &mut Deployment,
    people: &People,
    actions: &[Action],
    oracle: Option<&[Step]>,
) -> (Vec<Step>, Coverage) {
    let size = dep.instances.len();
    let mut coverage = Coverage {
        writes: vec![0; size],
        fresh: vec![vec![0; size]; size],
        fresh_versions: 0,
    };
    let mut steps = Vec::with_capacity(actions.len());
    let mut last_core: HashMap<usize, Value> = HashMap::new();
    for (k, action) in actions.iter().enumerate() {
        let http = http_instance(k, size);
        let before = dep.batches();
        let (status, body) = dep.call(people, action, http).await;
        let after = dep.batches();
        let writer = (0..size).find(|i| after[*i] > before[*i]);
        let event = action.event(dep.ids.len());
        if let Action::Create { .. } = action {
            assert_eq!(status, 200, "[{}] step {k} {action:?}: {body}", dep.label);
            let id = body["id"].as_str().expect("created id").to_string();
            dep.names.insert(id.clone(), format!("e{event}"));
            dep.ids.push(id);
        }
        let reply = dep.normalize(&body);
        let context = format!(
            "[{}] step {k} {action:?} via {}, committed by {writer:?}",
            dep.label,
            http.map_or("NATS".to_string(), |i| format!("HTTP of instance {i}"))
        );

        // Read-your-writes: every instance serves the state this write left.
        let mut views = Vec::with_capacity(size);
        for i in 0..size {
            views.push(dep.get(people, i, event, action.caller()).await);
        }
        let reference = writer.unwrap_or(0);
        if let Some(i) = (0..size).find(|i| views[*i] != views[reference]) {
            // Say whether the difference was transient (an invalidation
            // that arrived late) or lasting; either way the test fails.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = dep.get(people, i, event, action.caller()).await;
            let later = if again == views[reference] {
                "it served the new state 50 ms later"
            } else {
                "it still differed 50 ms later"
            };
            panic!(
                "{context}: instance {i} served another state than instance {reference} right after \
                 the write was acknowledged ({later})\n  instance {i}: {} myRsvp {}\n  instance {reference}: {} myRsvp {}",
                core(&views[i]),
                views[i]["myRsvp"],
                core(&views[reference]),
                views[reference]["myRsvp"],
            );
        }
        let view = views.swap_remove(0);
        // ... and the state the write's own reply announced.
        if status == 200 && reply.get("version").is_some() {
            assert_eq!(
                view, reply,
                "{context}: a read differs from the write's reply"
            );
        }
        if status == 200 && reply.get("rsvpCounts").is_some() && reply.get("version").is_none() {
            assert_eq!(view["rsvpCounts"], reply["rsvpCounts"], "{context}: counts");
            assert_eq!(view["myRsvp"], reply["myRsvp"], "{context}: myRsvp");
        }

        if let Some(w) = writer {
            coverage.writes[w] += 1;
            let now = core(&view);
            let changed = last_core.get(&event).is_some_and(|old| *old != now);
            if changed {
                for j in (0..size).filter(|j| *j != w) {
                    coverage.fresh[w][j] += 1;
                }
                if last_core[&event]["version"] != now["version"] && size > 1 {
                    coverage.fresh_versions += 1;
                }
            }
        }
        last_core.insert(event, core(&view));

        let step = Step {
            status,
            reply,
            view,
        };
        if let Some(oracle) = oracle {
            assert_eq!(
                step, oracle[k],
                "{context}: the three instances differ from the single instance"
            );
        }
        steps.push(step);
    }
    (steps, coverage)
}

/// Everything the deployments must agree on at the end.
#[derive(Debug, PartialEq)]
struct Final {
    /// Per event: title, capacity, status, version, rsvpCounts.
    views: Vec<Value>,
    /// Per event, per user: `myRsvp` from `event.get` as that user.
    my_rsvp: Vec<Vec<Value>>,
    /// Per event: `rsvp.list` in its order, as (user, status, position).
    rsvps: Vec<Vec<(String, String, Option<i64>)>>,
    /// Per event: the waitlist, as (position, user).
    waitlists: Vec<Vec<(i64, String)>>,
    /// Per event: (attendee, marked by), by attendee.
    attendance: Vec<Vec<(String, String)>>,
    /// Outbox rows per type.
    outbox_counts: BTreeMap<String, i64>,
    /// Per event, in commit order: "type user status<-previous (reason)".
    outbox: Vec<Vec<String>>,
    /// Per event, in commit order: the payloads without their times.
    payloads: Vec<Vec<Value>>,
}

async fn final_state(dep: &Deployment, people: &People) -> Final {
    let size = dep.instances.len();
    let mut f = Final {
        views: vec![],
        my_rsvp: vec![],
        rsvps: vec![],
        waitlists: vec![],
        attendance: vec![],
        outbox_counts: BTreeMap::new(),
        outbox: vec![vec![]; dep.ids.len()],
        payloads: vec![vec![]; dep.ids.len()],
    };
    for (e, id) in dep.ids.iter().enumerate() {
        let mut views = vec![];
        for i in 0..size {
            views.push(core(&dep.get(people, i, e, None).await));
        }
        for (i, v) in views.iter().enumerate() {
            assert_eq!(v, &views[0], "[{}] e{e}: instance {i} differs", dep.label);
        }
        f.views.push(views.swap_remove(0));

        let mut mine = vec![];
        for u in 0..USERS {
            let view = dep.get(people, (e + u) % size, e, Some(u)).await;
            mine.push(view["myRsvp"].clone());
        }

        let page = dep
            .read(people, "rsvp.list", json!({"eventId": id, "limit": 250}))
            .await;
        let items = page["items"].as_array().expect("items");
        assert_eq!(
            page["meta"]["total"],
            json!(items.len()),
            "one page holds all"
        );
        let rsvps: Vec<(String, String, Option<i64>)> = items
            .iter()
            .map(|r| {
                (
                    dep.name(r["userId"].as_str().expect("userId")),
                    r["status"].as_str().expect("status").to_string(),
                    r["waitlistPosition"].as_i64(),
                )
            })
            .collect();
        // `myRsvp` (the actor's cached RSVPs) agrees with the table.
        for (u, my) in mine.iter().enumerate() {
            let listed = rsvps
                .iter()
                .find(|(name, _, _)| *name == format!("u{u}"))
                .map(|(_, s, _)| json!(s))
                .unwrap_or(Value::Null);
            assert_eq!(
                *my, listed,
                "[{}] e{e} u{u}: myRsvp vs rsvp.list",
                dep.label
            );
        }
        f.my_rsvp.push(mine);
        f.rsvps.push(rsvps);

        let page = dep
            .read(
                people,
                "rsvp.list",
                json!({"eventId": id, "status": "waitlisted", "limit": 250}),
            )
            .await;
        let mut waitlist: Vec<(i64, String)> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| {
                (
                    r["waitlistPosition"].as_i64().expect("a position"),
                    dep.name(r["userId"].as_str().expect("userId")),
                )
            })
            .collect();
        waitlist.sort();
        let positions: Vec<i64> = waitlist.iter().map(|(p, _)| *p).collect();
        let want: Vec<i64> = (1..=waitlist.len() as i64).collect();
        assert_eq!(positions, want, "[{}] e{e}: waitlist positions", dep.label);
        f.waitlists.push(waitlist);

        let page = dep
            .read(
                people,
                "attendance.list",
                json!({"eventId": id, "limit": 250}),
            )
            .await;
        let mut marks: Vec<(String, String)> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|a| {
                (
                    dep.name(a["userId"].as_str().expect("userId")),
                    dep.name(a["markedBy"].as_str().expect("markedBy")),
                )
            })
            .collect();
        marks.sort();
        f.attendance.push(marks);
    }

    let rows: Vec<(Uuid, String, Value)> =
        sqlx::query_as("SELECT event_id, event_type, payload FROM outbox ORDER BY seq")
            .fetch_all(&dep.instances[0].db)
            .await
            .expect("outbox rows");
    let index: HashMap<&str, usize> = dep
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for (event, kind, payload) in rows {
        *f.outbox_counts.entry(kind.clone()).or_default() += 1;
        let e = index[event.to_string().as_str()];
        let p = dep.normalize(&payload);
        let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        let line = match kind.as_str() {
            "event.rsvp.changed" => format!(
                "{kind} {} {}<-{} ({})",
                s("user_id"),
                s("status"),
                s("previous_status"),
                s("reason")
            ),
            "event.attendance.marked" => {
                format!("{kind} {} by {}", s("user_id"), s("marked_by"))
            }
            "event.updated" => format!(
                "{kind} by {} {} v{}",
                s("updated_by"),
                p["updated_fields"],
                p["version"]
            ),
            "event.cancelled" => format!("{kind} by {} ({})", s("cancelled_by"), s("reason")),
            _ => format!("{kind} by {} v{}", s("created_by"), p["version"]),
        };
        f.outbox[e].push(line);
        f.payloads[e].push(p);
    }
    f
}

/// Every outbox row reaches the stream once, and exactly one instance
/// publishes.
async fn assert_published(dep: &Deployment) {
    let db = &dep.instances[0].db;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_view WHERE status <> 'published'")
                .fetch_one(db)
                .await
                .expect("pending rows");
        if waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] {waiting} outbox rows still unpublished after 30 s",
            dep.label
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(db)
        .await
        .expect("rows");
    let js = async_nats::jetstream::new(dep.instances[0].nats.clone());
    let mut stream = js
        .get_stream(&dep.instances[0].isolation.stream)
        .await
        .expect("the stream");
    let messages = stream.info().await.expect("stream info").state.messages;
    assert_eq!(
        messages, rows as u64,
        "[{}] stream messages vs outbox rows",
        dep.label
    );
    let leaders = dep
        .instances
        .iter()
        .filter(|app| app.state.publisher.stats.leader.load(Ordering::Relaxed))
        .count();
    assert_eq!(leaders, 1, "[{}] exactly one outbox publisher", dep.label);
}

/// Compares the parts of two final states one by one, naming the event.
fn assert_same(one: &Final, three: &Final) {
    assert_eq!(one.views.len(), three.views.len(), "number of events");
    for e in 0..one.views.len() {
        assert_eq!(one.views[e], three.views[e], "e{e}: view");
        for u in 0..USERS {
            assert_eq!(one.my_rsvp[e][u], three.my_rsvp[e][u], "e{e} u{u}: myRsvp");
        }
        assert_eq!(one.rsvps[e], three.rsvps[e], "e{e}: rsvp.list");
        assert_eq!(one.waitlists[e], three.waitlists[e], "e{e}: waitlist order");
        assert_eq!(one.attendance[e], three.attendance[e], "e{e}: attendance");
        assert_eq!(one.outbox[e], three.outbox[e], "e{e}: outbox sequence");
        assert_eq!(one.payloads[e], three.payloads[e], "e{e}: outbox payloads");
    }
    assert_eq!(
        one.outbox_counts, three.outbox_counts,
        "outbox rows per type"
    );
    assert_eq!(one, three);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_end_in_the_same_state_as_one() {
    let actions = workload();
    let people = People::new();

    let mut single = Deployment::start("1 instance", 1, &people).await;
    let (oracle, _) = run(&mut single, &people, &actions, None).await;
    let one = final_state(&single, &people).await;
    assert_published(&single).await;
    single.shut_down().await;

    // The workload is meaningful: it fills events, builds waitlists,
    // promotes, marks attendance, refuses calls on the cancelled event.
    let refused = oracle.iter().filter(|s| s.status == 409).count();
    let promoted = one
        .outbox
        .iter()
        .flatten()
        .filter(|l| l.contains("(promoted)"))
        .count();
    let waitlisted: usize = one.waitlists.iter().map(Vec::len).sum();
    let marked: usize = one.attendance.iter().map(Vec::len).sum();
    let unchanged_updates = actions
        .iter()
        .zip(&oracle)
        .filter(|(a, s)| {
            matches!(
                a,
                Action::UpdateTitle { .. } | Action::UpdateCapacity { .. }
            ) && s.status == 200
        })
        .count()
        - one.outbox_counts.get("event.updated").copied().unwrap_or(0) as usize;
    println!(
        "workload: {} actions, {} events, outbox {:?}, {refused} refused (409), {promoted} promotions, \
         {waitlisted} still waitlisted, {marked} attendance marks, {unchanged_updates} updates that changed nothing",
        actions.len(),
        one.views.len(),
        one.outbox_counts
    );
    assert_eq!(one.views.len(), EVENTS);
    assert!(refused >= 3, "calls on the cancelled event are refused");
    assert!(promoted >= 3, "waitlisted users get promoted");
    assert!(waitlisted >= 3, "some waitlists remain");
    assert!(marked >= 10, "attendance is marked");
    assert!(unchanged_updates >= 1, "some updates change nothing");
    assert_eq!(one.views[CANCELLED]["status"], "cancelled");

    let mut triple = Deployment::start("3 instances", 3, &people).await;
    let (steps, coverage) = run(&mut triple, &people, &actions, Some(&oracle)).await;
    assert_eq!(steps, oracle);
    let three = final_state(&triple, &people).await;
    assert_published(&triple).await;
    // RSVPs reaching an instance that does not own their scope were handed
    // to the owner: their answers were among those compared above.
    let forwarded: u64 = triple
        .instances
        .iter()
        .map(|app| {
            let shared = app.state.app.registry().shared();
            shared
                .metrics
                .write_forwards
                .with_label_values(&["forwarded"])
                .get()
        })
        .sum();
    println!(
        "three instances: writes committed per instance {:?}; changes read fresh on another instance \
         [writer][reader] {:?}; of which version bumps {}; RSVPs forwarded to their scope's owner {}",
        coverage.writes, coverage.fresh, coverage.fresh_versions, forwarded
    );
    triple.shut_down().await;
    assert!(forwarded >= 20, "only {forwarded} RSVPs were forwarded");

    // Every instance served writes, and every instance read the writes of
    // every other one right after they were acknowledged.
    for (i, n) in coverage.writes.iter().enumerate() {
        assert!(*n >= 20, "instance {i} committed only {n} writes");
    }
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            assert!(
                coverage.fresh[i][j] >= 5,
                "few writes of instance {i} read on instance {j}: {:?}",
                coverage.fresh
            );
        }
    }
    assert!(
        coverage.fresh_versions >= 5,
        "new versions read on another instance: {}",
        coverage.fresh_versions
    );

    assert_same(&one, &three);
}

/// Two instances that poll the outbox an hour apart: `a` publishes (it holds
/// the publisher lock), `b` stands by.
async fn publisher_and_standby() -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(|s| s.outbox_poll_interval = Some("1h".into())).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.state.metrics.outbox_leader.get() != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        a.state.metrics.outbox_leader.get(),
        1,
        "the first instance publishes"
    );
    let b = a
        .spawn_sibling(|s| s.outbox_poll_interval = Some("1h".into()))
        .await;
    (a, b)
}

/// Creates a tenant event through `app`, as the tenant's admin.
async fn create_through(app: &TestApp, tenant: uuid::Uuid, title: &str) {
    let boss = crate::helpers::admin(tenant);
    let created = app
        .bff(
            "POST",
            "/api/v1/events/",
            &boss,
            Some(serde_json::json!({
                "scopeType": "TENANT", "scopeId": tenant.to_string(), "title": title,
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
            })),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
}

/// A change committed on an instance that does not publish the outbox
/// reaches the stream at once: its change note wakes the instance that
/// publishes, which would otherwise find the row only at its next poll
/// (here an hour away).
#[tokio::test]
async fn a_change_committed_on_another_instance_wakes_the_publisher() {
    let (a, b) = publisher_and_standby().await;
    create_through(&b, uuid::Uuid::new_v4(), "Woken").await;
    assert_eq!(
        b.state.metrics.outbox_leader.get(),
        0,
        "the second one does not"
    );
    let n = crate::outbox::wait_for_stream(
        crate::helpers::NATS_URL,
        &a.isolation.stream,
        1,
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        n, 1,
        "the row committed on the other instance waited for the poll"
    );
}

/// A standing-by instance leaves its commits to the instance that publishes
/// (which hears of them by their change notes): it tries the publisher lock
/// only at its ticks, here an hour apart. Trying at every commit opened a
/// Postgres connection each time.
#[tokio::test]
async fn a_standing_by_instance_does_not_try_the_publisher_lock_at_its_commits() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (a, b) = publisher_and_standby().await;
    // Its first tick, at start, tries the lock once.
    let cycles = &b.state.publisher.stats.cycles;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cycles.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = cycles.load(Ordering::Relaxed);
    assert!(before >= 1, "the standing-by instance never tried the lock");
    let tenant = uuid::Uuid::new_v4();
    for i in 0..10 {
        create_through(&b, tenant, &format!("Standing by {i}")).await;
    }
    let n = crate::outbox::wait_for_stream(
        crate::helpers::NATS_URL,
        &a.isolation.stream,
        10,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(n, 10, "the publishing instance sent the other's rows");
    // Each commit's wake reached b's outbox actor at once; the rows reached
    // the stream only after a note, a wake and a cycle on a.
    assert_eq!(b.state.metrics.outbox_leader.get(), 0);
    assert_eq!(
        cycles.load(Ordering::Relaxed),
        before,
        "the standing-by instance tried the lock at its own commits"
    );
}
