//! The steps of a batch that answer commands before anything is decided:
//! refusing replayed requests and claiming the idempotency keys of
//! creates. They only record and look up keys; a command they answer is
//! not decided at all.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CommandResult, Envelope, WriteCommand, WriteOutcome};
use crate::error::AppError;

pub(super) async fn refuse_replays(
    tx: &mut PgConnection,
    commands: &[Envelope],
    results: &mut [Option<CommandResult>],
) -> Result<(), sqlx::Error> {
    let keyed: Vec<(usize, [u8; 32], DateTime<Utc>)> = commands
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.meta.replay_key.map(|k| (i, k, c.meta.replay_expires_at)))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    let mut expiries = Vec::new();
    for (i, key, expires) in &keyed {
        if seen.insert(*key) {
            keys.push(*key);
            expiries.push(*expires);
        } else {
            results[*i] = Some(Err(crate::auth::AuthError::from(
                crate::auth::UnauthorizedReason::Replayed,
            )
            .into()));
        }
    }
    let inserted = crate::store::replays::claim_all(&mut *tx, &keys, &expiries).await?;
    let mut first_use = HashSet::new();
    for (i, key, _) in keyed {
        if results[i].is_some() {
            continue;
        }
        if !inserted.contains(&key) || !first_use.insert(key) {
            results[i] = Some(Err(crate::auth::AuthError::from(
                crate::auth::UnauthorizedReason::Replayed,
            )
            .into()));
        }
    }
    Ok(())
}

/// One create's idempotency record.
struct KeyRow {
    index: usize,
    tenant: Uuid,
    user: Uuid,
    request_id: String,
    hash: String,
    result: Value,
    expires_at: DateTime<Utc>,
}

/// Records the idempotency key of every create before anything is
/// written. A key another transaction holds makes this one wait for it;
/// the earlier result (or a conflict, for a different body) is the answer.
pub(crate) async fn claim_idempotency_keys(
    tx: &mut PgConnection,
    commands: &[Envelope],
    results: &mut [Option<CommandResult>],
) -> Result<(), sqlx::Error> {
    let mut first: HashSet<(Uuid, Uuid, String)> = HashSet::new();
    // Later creates in this batch with a key an earlier one claims: they are
    // answered once the key's owner is known (below), never before. The
    // first claimant may itself lose to a key committed earlier, and its
    // own (never written) event must not reach anyone.
    let mut followers: Vec<(usize, (Uuid, Uuid, String), String)> = Vec::new();
    let mut rows: Vec<KeyRow> = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        let WriteCommand::Create {
            request_hash,
            result,
            ..
        } = &c.command
        else {
            continue;
        };
        let key = (
            Uuid::from(c.meta.tenant),
            Uuid::from(c.meta.actor),
            c.meta.request_id.clone(),
        );
        if first.contains(&key) {
            // The same create twice in one batch: the second is a retry.
            followers.push((i, key, request_hash.clone()));
            continue;
        }
        first.insert(key.clone());
        rows.push(KeyRow {
            index: i,
            tenant: key.0,
            user: key.1,
            request_id: key.2,
            hash: request_hash.clone(),
            result: result.clone(),
            expires_at: c.meta.now + chrono::Duration::hours(24),
        });
    }
    if rows.is_empty() {
        return Ok(());
    }
    let inserted: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (tenant_id, user_id, request_id, operation, request_hash, result, expires_at)
         SELECT t, u, r, 'event.create', h, res, x
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[]) AS q(t, u, r, h, res, x)
         ON CONFLICT (tenant_id, user_id, operation, request_id) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, result = EXCLUDED.result,
                 created_at = now(), expires_at = EXCLUDED.expires_at
             WHERE idempotency_keys.expires_at < now()
         RETURNING tenant_id, user_id, request_id",
    )
    .bind(rows.iter().map(|r| r.tenant).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.user).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.hash.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<(Uuid, Uuid, String)> = inserted.into_iter().collect();
    // Each key's owner: (request hash, result) of the create that holds it.
    let mut owners: HashMap<(Uuid, Uuid, String), Option<(String, Value)>> = HashMap::new();
    for KeyRow {
        index: i,
        tenant,
        user,
        request_id,
        hash,
        result,
        ..
    } in rows
    {
        if inserted.contains(&(tenant, user, request_id.clone())) {
            owners.insert((tenant, user, request_id), Some((hash, result)));
            continue;
        }
        let earlier: Option<(String, Value)> = sqlx::query_as(
            "SELECT request_hash, result FROM idempotency_keys
             WHERE tenant_id = $1 AND user_id = $2 AND operation = 'event.create' AND request_id = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(&request_id)
        .fetch_optional(&mut *tx)
        .await?;
        results[i] = Some(match &earlier {
            Some((earlier_hash, result)) if *earlier_hash == hash => {
                Ok(WriteOutcome::CreatedEarlier {
                    result: result.clone(),
                })
            }
            _ => Err(AppError::IdempotencyConflict),
        });
        owners.insert((tenant, user, request_id), earlier);
    }
    for (i, key, hash) in followers {
        results[i] = Some(match owners.get(&key) {
            Some(Some((owner_hash, result))) if *owner_hash == hash => {
                Ok(WriteOutcome::CreatedEarlier {
                    result: result.clone(),
                })
            }
            _ => Err(AppError::IdempotencyConflict),
        });
    }
    Ok(())
}
