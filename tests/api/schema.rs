//! The database refuses invalid rows by itself, so a bug elsewhere cannot
//! store one.

use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;

struct Row {
    tenant: Uuid,
    scope_type: &'static str,
    scope_id: String,
    title: String,
    starts: &'static str,
    ends: &'static str,
    visibility: &'static str,
    capacity: Option<i32>,
    location_url: Option<String>,
}

impl Row {
    fn valid() -> Self {
        let tenant = Uuid::new_v4();
        Self {
            tenant,
            scope_type: "TENANT",
            scope_id: tenant.to_string(),
            title: "Board games".into(),
            starts: "2030-01-10T10:00:00Z",
            ends: "2030-01-10T12:00:00Z",
            visibility: "public",
            capacity: None,
            location_url: None,
        }
    }

    async fn insert(&self, db: &PgPool) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO events (id, tenant_id, scope_type, scope_id, title, starts_at, ends_at, visibility, capacity, location_url, created_by)
             VALUES ($1, $2, $3::scope_type, $4, $5, $6::timestamptz, $7::timestamptz, $8::event_visibility, $9, $10, $11)",
        )
        .bind(id)
        .bind(self.tenant)
        .bind(self.scope_type)
        .bind(&self.scope_id)
        .bind(&self.title)
        .bind(self.starts)
        .bind(self.ends)
        .bind(self.visibility)
        .bind(self.capacity)
        .bind(&self.location_url)
        .bind(Uuid::new_v4())
        .execute(db)
        .await?;
        Ok(id)
    }
}

fn constraint(err: sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(e) => e
            .constraint()
            .map(str::to_string)
            .unwrap_or_else(|| e.message().to_string()),
        other => panic!("expected a database error, got {other}"),
    }
}

#[tokio::test]
async fn events_reject_invalid_rows() {
    let app = TestApp::spawn().await;
    let db = &app.db;
    Row::valid()
        .insert(db)
        .await
        .expect("a valid row is accepted");

    let same_time = Row {
        ends: "2030-01-10T10:00:00Z",
        ..Row::valid()
    };
    assert_eq!(
        constraint(same_time.insert(db).await.expect_err("start == end")),
        "events_time_range"
    );

    let empty_title = Row {
        title: "   ".into(),
        ..Row::valid()
    };
    assert!(empty_title.insert(db).await.is_err(), "blank title");

    let long_title = Row {
        title: "é".repeat(256),
        ..Row::valid()
    };
    assert!(long_title.insert(db).await.is_err(), "256-character title");
    let max_title = Row {
        title: "é".repeat(255),
        ..Row::valid()
    };
    max_title
        .insert(db)
        .await
        .expect("255 multibyte characters fit");

    let mut mismatch = Row::valid();
    mismatch.visibility = "community";
    assert_eq!(
        constraint(
            mismatch
                .insert(db)
                .await
                .expect_err("community visibility on a tenant scope")
        ),
        "events_visibility_fits_scope"
    );

    let mut other_tenant = Row::valid();
    other_tenant.scope_id = Uuid::new_v4().to_string();
    assert_eq!(
        constraint(
            other_tenant
                .insert(db)
                .await
                .expect_err("tenant scope of another tenant")
        ),
        "events_tenant_scope_is_tenant"
    );

    let zero = Row {
        capacity: Some(0),
        ..Row::valid()
    };
    assert!(zero.insert(db).await.is_err(), "capacity 0");

    let script = Row {
        location_url: Some("javascript:alert(1)".into()),
        ..Row::valid()
    };
    assert!(script.insert(db).await.is_err(), "javascript: URL");

    let bad_scope = sqlx::query("INSERT INTO events (id, tenant_id, scope_type, scope_id, title, starts_at, ends_at, created_by) VALUES ($1, $2, 'GUILD', 'x', 't', now(), now() + interval '1 hour', $3)")
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .execute(db)
        .await;
    assert!(bad_scope.is_err(), "unknown scope type");
}

#[tokio::test]
async fn rsvps_and_attendance_are_unique_per_user_and_event() {
    let app = TestApp::spawn().await;
    let db = &app.db;
    let row = Row::valid();
    let event = row.insert(db).await.expect("event");
    let user = Uuid::new_v4();
    let insert_rsvp = |status: &'static str, seq: Option<i64>| {
        sqlx::query("INSERT INTO event_rsvps (event_id, user_id, tenant_id, status, waitlist_seq) VALUES ($1, $2, $3, $4::rsvp_status, $5)")
            .bind(event)
            .bind(user)
            .bind(row.tenant)
            .bind(status)
            .bind(seq)
    };
    insert_rsvp("going", None)
        .execute(db)
        .await
        .expect("first RSVP");
    assert!(
        insert_rsvp("interested", None).execute(db).await.is_err(),
        "second RSVP for the same user"
    );

    let other = Uuid::new_v4();
    let waitlisted_without_place = sqlx::query("INSERT INTO event_rsvps (event_id, user_id, tenant_id, status) VALUES ($1, $2, $3, 'waitlisted')")
        .bind(event)
        .bind(other)
        .bind(row.tenant)
        .execute(db)
        .await
        .expect_err("a waitlisted RSVP needs its place in the queue");
    assert_eq!(
        constraint(waitlisted_without_place),
        "event_rsvps_waitlist_order"
    );

    let mark = || {
        sqlx::query("INSERT INTO event_attendance (event_id, user_id, tenant_id, marked_by) VALUES ($1, $2, $3, $4)")
            .bind(event)
            .bind(user)
            .bind(row.tenant)
            .bind(Uuid::new_v4())
    };
    mark().execute(db).await.expect("first mark");
    assert!(
        mark().execute(db).await.is_err(),
        "second mark for the same user"
    );

    let negative =
        sqlx::query("INSERT INTO event_counters (event_id, tenant_id, going) VALUES ($1, $2, -1)")
            .bind(event)
            .bind(row.tenant)
            .execute(db)
            .await;
    assert!(negative.is_err(), "negative counter");
}

#[tokio::test]
async fn outbox_rows_keep_their_state_consistent() {
    let app = TestApp::spawn().await;
    let db = &app.db;
    let insert = |event_type: &'static str, state: &'static str, published: bool| {
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, state, published_at, published_seq)
             VALUES ($1, $2, $3, $4, 'events.out.x.y', '{}'::jsonb, $5::outbox_state, CASE WHEN $6 THEN now() END,
                     CASE WHEN $6 THEN nextval('outbox_published_seq') END)",
        )
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(Uuid::new_v4())
        .bind(event_type)
        .bind(state)
        .bind(published)
    };
    insert("event.created", "pending", false)
        .execute(db)
        .await
        .expect("pending row");
    insert("event.created", "published", true)
        .execute(db)
        .await
        .expect("published row");
    assert!(
        insert("event.deleted", "pending", false)
            .execute(db)
            .await
            .is_err(),
        "unknown type"
    );
    assert!(
        insert("event.created", "published", false)
            .execute(db)
            .await
            .is_err(),
        "published without a time"
    );
    assert!(
        insert("event.created", "pending", true)
            .execute(db)
            .await
            .is_err(),
        "pending with a publish time"
    );

    // Sequence numbers follow insertion; the transaction id is recorded.
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, tx_id::text FROM outbox ORDER BY seq")
            .fetch_all(db)
            .await
            .expect("rows");
    assert_eq!(rows.len(), 2);
    assert!(rows[0].0 < rows[1].0);
    assert!(!rows[0].1.is_empty());
}
