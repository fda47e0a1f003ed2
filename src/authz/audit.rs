//! The audit log: who used elevated rights (system admin bypass, role
//! changes, DSAR). Rows are written by a background task in batches so the
//! request path never waits for them, and nothing is dropped: callers wait
//! for queue space when the writer falls behind.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub tenant_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
}

#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEntry>,
}

impl AuditLog {
    /// Starts the writer; it stops when every `AuditLog` clone is dropped,
    /// after writing what it holds.
    pub fn start(db: PgPool) -> Self {
        Self::start_joinable(db).0
    }

    /// The same, with the writer's task: once every clone is dropped, it
    /// ends after writing what it holds (a short-lived command waits for it
    /// before exiting, so no entry is lost).
    pub fn start_joinable(db: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(10_000);
        let task = tokio::spawn(writer(db, rx));
        (Self { tx }, task)
    }

    pub async fn record(&self, entry: AuditEntry) {
        if self.tx.send(entry).await.is_err() {
            tracing::error!("audit writer is gone; an audit entry could not be recorded");
        }
    }
}

async fn writer(db: PgPool, mut rx: mpsc::Receiver<AuditEntry>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 500).await > 0 {
        let mut attempt = 0u32;
        loop {
            match insert(&db, &batch).await {
                Ok(()) => break,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::warn!(error = %e, rows = batch.len(), "writing audit rows failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = batch.len(), entries = ?batch, "audit rows could not be written");
                    break;
                }
            }
        }
        batch.clear();
    }
}

async fn insert(db: &PgPool, batch: &[AuditEntry]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::new_v4()).collect();
    let tenants: Vec<Option<Uuid>> = batch.iter().map(|e| e.tenant_id).collect();
    let actors: Vec<Option<Uuid>> = batch.iter().map(|e| e.actor_user_id).collect();
    let actions: Vec<&str> = batch.iter().map(|e| e.action).collect();
    let target_types: Vec<&str> = batch.iter().map(|e| e.target_type).collect();
    let target_ids: Vec<Option<String>> = batch
        .iter()
        .map(|e| e.target_id.as_deref().map(fit_column))
        .collect();
    let request_ids: Vec<Option<String>> = batch
        .iter()
        .map(|e| e.request_id.as_deref().map(fit_column))
        .collect();
    let details: Vec<Value> = batch.iter().map(|e| e.details.clone()).collect();
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_user_id, action, target_type, target_id, request_id, details)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[])",
    )
    .bind(ids)
    .bind(tenants)
    .bind(actors)
    .bind(actions)
    .bind(target_types)
    .bind(target_ids)
    .bind(request_ids)
    .bind(details)
    .execute(db)
    .await?;
    Ok(())
}

/// A caller-supplied text (the request id) as the 255-character columns
/// take it: NUL removed (Postgres text cannot hold it) and cut to 255
/// characters. Without this, one long `X-Request-Id` failed the insert of
/// its whole batch, and after the retries every entry in it was lost.
fn fit_column(s: &str) -> String {
    s.chars().filter(|c| *c != '\0').take(255).collect()
}
