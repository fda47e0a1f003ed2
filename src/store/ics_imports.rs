//! The keys of events imported from iCalendar (`event.import`): which
//! event each (tenant, scope, UID, RECURRENCE-ID) became, with the
//! fingerprint of the values it was last imported with.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{EventId, Scope, TenantId};

/// `(UID, RECURRENCE-ID)`.
pub type Key = (String, String);

/// What a key was imported as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub event: EventId,
    pub fingerprint: Vec<u8>,
}

/// The recorded keys among `keys`, for the scope.
pub async fn known(
    conn: &mut PgConnection,
    tenant: TenantId,
    scope: &Scope,
    keys: &[Key],
) -> Result<HashMap<Key, Known>, sqlx::Error> {
    let uids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let rids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let rows: Vec<(String, String, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT k.uid, k.recurrence_id, k.event_id, k.fingerprint
         FROM ics_import_keys k
         JOIN unnest($4::text[], $5::text[]) AS w(uid, rid)
           ON k.uid = w.uid AND k.recurrence_id = w.rid
         WHERE k.tenant_id = $1 AND k.scope_type = $2::scope_type AND k.scope_id = $3",
    )
    .bind(Uuid::from(tenant))
    .bind(scope.scope_type().as_str())
    .bind(scope.scope_id().as_str())
    .bind(&uids)
    .bind(&rids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(uid, rid, event, fingerprint)| {
            (
                (uid, rid),
                Known {
                    event: event.into(),
                    fingerprint,
                },
            )
        })
        .collect())
}

/// Records (or moves on) the keys and their fingerprints.
pub async fn record(
    conn: &mut PgConnection,
    tenant: TenantId,
    scope: &Scope,
    entries: &[(Key, EventId, [u8; 32])],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let uids: Vec<&str> = entries.iter().map(|e| e.0.0.as_str()).collect();
    let rids: Vec<&str> = entries.iter().map(|e| e.0.1.as_str()).collect();
    let events: Vec<Uuid> = entries.iter().map(|e| Uuid::from(e.1)).collect();
    let prints: Vec<Vec<u8>> = entries.iter().map(|e| e.2.to_vec()).collect();
    sqlx::query(
        "INSERT INTO ics_import_keys (tenant_id, scope_type, scope_id, uid, recurrence_id,
                                      event_id, fingerprint)
         SELECT $1, $2::scope_type, $3, w.uid, w.rid, w.event, w.print
         FROM unnest($4::text[], $5::text[], $6::uuid[], $7::bytea[]) AS w(uid, rid, event, print)
         ON CONFLICT (tenant_id, scope_type, scope_id, uid, recurrence_id)
         DO UPDATE SET event_id = EXCLUDED.event_id, fingerprint = EXCLUDED.fingerprint,
                       updated_at = now()",
    )
    .bind(Uuid::from(tenant))
    .bind(scope.scope_type().as_str())
    .bind(scope.scope_id().as_str())
    .bind(&uids)
    .bind(&rids)
    .bind(&events)
    .bind(&prints)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
