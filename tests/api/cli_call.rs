//! `events-svc call`: the real binary against a running service.

use std::process::Command;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{NATS_URL, Run, TEST_SECRET, TestApp, events_svc, run_blocking};

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// `events-svc call …` with a clean environment aimed at `prefix`.
fn command(prefix: &str, secret: &str) -> Command {
    let mut cmd = events_svc();
    cmd.env("NATS_URL", NATS_URL)
        .env("EVENTS_SUBJECT_PREFIX", prefix)
        .env("BFF_INTERNAL_HMAC_SECRET", secret)
        .arg("call");
    cmd
}

/// Runs the binary off the runtime's threads, so the in-process service
/// keeps answering while we wait.
async fn call_with(prefix: &str, secret: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let cmd = command(prefix, secret);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || run_blocking(cmd, args, stdin))
        .await
        .expect("the runner thread")
}

async fn call(app: &TestApp, args: &[&str]) -> Run {
    call_with(&app.isolation.prefix, TEST_SECRET, args, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_creates_gets_rsvps_lists_and_exports_an_event() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4().to_string();
    let admin = Uuid::new_v4().to_string();
    let alice = Uuid::new_v4().to_string();
    let bob = Uuid::new_v4().to_string();
    let as_user = |user: &str| -> Vec<String> {
        vec![
            "--tenant-id".into(),
            tenant.clone(),
            "--user-id".into(),
            user.to_string(),
        ]
    };
    let body = json!({
        "scopeType": "TENANT", "scopeId": tenant, "title": "Board games",
        "startsAt": "2030-01-10T18:00:00+03:00", "endsAt": "2030-01-10T21:00:00Z",
        "capacity": 1,
    })
    .to_string();

    // Create as a system admin, with a chosen request id.
    let mut args = vec!["event.create".to_string()];
    args.extend(as_user(&admin));
    args.extend([
        "--flags".into(),
        r#"{"system_admin": true}"#.into(),
        "--request-id".into(),
        "cli-create-1".into(),
        body.clone(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let created = call(&app, &args).await;
    assert_eq!(created.code, Some(0), "{created:?}");
    let event = created.json();
    assert_eq!(event["title"], "Board games");
    assert_eq!(event["startsAt"], "2030-01-10T15:00:00Z");
    assert_eq!(event["status"], "scheduled");
    assert_eq!(event["capacity"], 1);
    let id = event["id"].as_str().expect("an id").to_string();

    // A retry with the same request id answers the first result. It must
    // be signed with a new timestamp (whole seconds): an identical signed
    // request would be refused as a replay.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let retried = call(&app, &args).await;
    assert_eq!(retried.code, Some(0), "{retried:?}");
    assert_eq!(retried.json()["id"], id.as_str());

    // Get, with the body read from stdin.
    let mut get = vec!["event.get".to_string()];
    get.extend(as_user(&alice));
    get.push("-".into());
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    let got = call_with(
        &app.isolation.prefix,
        TEST_SECRET,
        &get,
        Some(&json!({"id": id}).to_string()),
    )
    .await;
    assert_eq!(got.code, Some(0), "{got:?}");
    assert_eq!(got.json()["id"], id.as_str());
    assert_eq!(got.json()["myRsvp"], Value::Null);

    // RSVP: Alice takes the only seat, Bob is waitlisted.
    let rsvp = json!({"eventId": id, "status": "going"}).to_string();
    for (user, expected) in [(&alice, "going"), (&bob, "waitlisted")] {
        let mut args = vec!["rsvp.set".to_string()];
        args.extend(as_user(user));
        args.push(rsvp.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let set = call(&app, &args).await;
        assert_eq!(set.code, Some(0), "{set:?}");
        assert_eq!(set.json()["status"], expected, "{set:?}");
        assert_eq!(set.json()["eventId"], id.as_str());
    }

    // List, over JSON this time.
    let mut list = vec!["event.list".to_string()];
    list.extend(as_user(&alice));
    list.extend(["--json".into(), r#"{"limit": 10}"#.into()]);
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    let page = call(&app, &list).await;
    assert_eq!(page.code, Some(0), "{page:?}");
    let page = page.json();
    assert_eq!(page["meta"]["total"], 1, "{page}");
    assert_eq!(page["meta"]["limit"], 10);
    assert_eq!(page["items"][0]["id"], id.as_str());
    assert_eq!(page["items"][0]["myRsvp"], "going");
    assert_eq!(
        page["items"][0]["rsvpCounts"],
        json!({"interested": 0, "going": 1, "not_going": 0, "waitlisted": 1, "pending": 0, "declined": 0})
    );

    // The calendar is printed raw, not as a JSON string.
    let mut ics = vec!["event.ics".to_string()];
    ics.extend(as_user(&alice));
    ics.push(json!({"id": id}).to_string());
    let ics: Vec<&str> = ics.iter().map(String::as_str).collect();
    let calendar = call(&app, &ics).await;
    assert_eq!(calendar.code, Some(0), "{calendar:?}");
    assert!(
        calendar.stdout.starts_with("BEGIN:VCALENDAR\r\n"),
        "{calendar:?}"
    );
    assert!(
        calendar.stdout.contains("SUMMARY:Board games"),
        "{calendar:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reports_error_replies_and_usage_problems() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4().to_string();
    let user = Uuid::new_v4().to_string();
    let missing = Uuid::new_v4().to_string();
    let who = ["--tenant-id", tenant.as_str(), "--user-id", user.as_str()];
    let with = |op: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![op.to_string()];
        args.extend(who.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // An error reply: exit 1, the envelope on stdout, one summary line on stderr.
    let body = json!({"id": missing}).to_string();
    let args = with("event.get", &[&body, "--request-id", "cli-missing-1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let not_found = call(&app, &args).await;
    assert_eq!(not_found.code, Some(1), "{not_found:?}");
    let envelope = not_found.json();
    assert_eq!(envelope["error"]["code"], "NOT_FOUND");
    assert_eq!(envelope["error"]["request_id"], "cli-missing-1");
    assert_eq!(
        not_found.stderr.trim(),
        "error: 404 NOT_FOUND Event not found"
    );

    // A validation error keeps its details on stdout.
    let args = with("event.create", &["--flags", r#"{"system_admin":true}"#]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let invalid = call(&app, &args).await;
    assert_eq!(invalid.code, Some(1), "{invalid:?}");
    assert_eq!(invalid.json()["error"]["code"], "VALIDATION_ERROR");
    assert!(
        invalid.json()["error"]["details"]["fields"]["title"].is_string(),
        "{invalid:?}"
    );
    assert!(
        invalid.stderr.starts_with("error: 422 VALIDATION_ERROR "),
        "{invalid:?}"
    );

    // A wrong secret is refused by the service.
    let args = with("event.list", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = call_with(&app.isolation.prefix, "not-the-secret", &args, None).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: 401 UNAUTHORIZED"),
        "{refused:?}"
    );

    // An unknown operation is a usage error that lists the valid ones.
    let args = with("event.delete", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let unknown = call(&app, &args).await;
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    for op in updspace_events::app::Op::ALL {
        assert!(unknown.stderr.contains(op.name()), "{unknown:?}");
    }
    assert!(unknown.stdout.is_empty(), "{unknown:?}");

    // So is a body that is not a JSON object.
    for bad in ["[1, 2]", "{not json"] {
        let args = with("event.list", &[bad]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = call(&app, &args).await;
        assert_eq!(run.code, Some(2), "{bad}: {run:?}");
        assert!(run.stderr.contains("BODY"), "{bad}: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_exits_69_when_no_service_answers() {
    let prefix = format!("nobody{}", &Uuid::new_v4().simple().to_string()[..12]);
    let tenant = Uuid::new_v4().to_string();
    let user = Uuid::new_v4().to_string();
    let run = call_with(
        &prefix,
        TEST_SECRET,
        &[
            "event.list",
            "--tenant-id",
            &tenant,
            "--user-id",
            &user,
            "--timeout",
            "2s",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, Some(69), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.contains(&prefix)
            && run.stderr.contains("EVENTS_SUBJECT_PREFIX")
            && run.stderr.contains("events-svc"),
        "{run:?}"
    );
}

/// Tenant administration from the command line: the first tenant admin is
/// made with `access grant`, who then manages memberships with `call`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_a_tenant_admin_who_manages_memberships() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4().to_string();
    let boss = Uuid::new_v4().to_string();
    let member = Uuid::new_v4().to_string();
    let mut grant = events_svc();
    grant
        .env("DATABASE_URL", app.isolation.database_url())
        .env("EVENTS_AUTHZ", "local");
    let granted = tokio::task::spawn_blocking({
        let args: Vec<String> = [
            "access",
            "grant",
            "--tenant-id",
            &tenant,
            "--user-id",
            &boss,
            "--role",
            "admin",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        move || run_blocking(grant, args, None)
    })
    .await
    .expect("runner");
    assert_eq!(granted.code, Some(0), "{granted:?}");
    assert!(
        granted.stdout.contains("granted events.admin"),
        "{granted:?}"
    );

    let body = json!({"userId": member, "scopeType": "TEAM", "scopeId": "raid-team"}).to_string();
    let who = ["--tenant-id", tenant.as_str(), "--user-id", boss.as_str()];
    let mut args = vec!["membership.add"];
    args.extend(who);
    args.push(&body);
    let added = call(&app, &args).await;
    assert_eq!(added.code, Some(0), "{added:?}");
    assert_eq!(added.json()["created"], true);
    let mut args = vec!["membership.list"];
    args.extend(who);
    let listed = call(&app, &args).await;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert_eq!(listed.json()["items"][0]["userId"], member);
    // Anyone else is refused, with the code on stderr.
    let mut args = vec![
        "membership.list",
        "--tenant-id",
        tenant.as_str(),
        "--user-id",
    ];
    args.push(&member);
    let refused = call(&app, &args).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("403 FORBIDDEN"), "{refused:?}");
}
