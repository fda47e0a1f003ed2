//! Names on the NATS side that every layer shares: the subjects of the
//! request API, of domain events and of notes between instances, and the
//! micro-service identity. Plain strings, no connection.

/// Name of the NATS micro service (`$SRV.PING.events` etc.).
pub const SERVICE_NAME: &str = "events";
/// Queue group shared by every instance, so each request is served once.
pub const QUEUE_GROUP: &str = "events";

/// Subject names, all under one configurable prefix.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}.v1.<op>`: request/reply commands.
    pub fn command(&self, op: &str) -> String {
        format!("{}.v1.{op}", self.prefix)
    }

    /// `{prefix}.internal.changes`: cache invalidation notes between instances.
    pub fn internal_changes(&self) -> String {
        format!("{}.internal.changes", self.prefix)
    }

    /// `{prefix}.internal.writes.<instance>`: writes another instance hands
    /// to this one, the owner of their scope.
    pub fn internal_writes(&self, instance: &str) -> String {
        format!("{}.internal.writes.{instance}", self.prefix)
    }

    /// `{prefix}.out.>`: everything the stream captures.
    pub fn stream_filter(&self) -> String {
        format!("{}.out.>", self.prefix)
    }

    /// `{prefix}.out.<tenant_id>.>`: every domain event of one tenant.
    pub fn tenant_events(&self, tenant_id: &uuid::Uuid) -> String {
        format!("{}.out.{tenant_id}.>", self.prefix)
    }

    /// `{prefix}.out.<tenant_id>.<type>`: one published domain event.
    pub fn domain_event(&self, tenant_id: &uuid::Uuid, event_type: &str) -> String {
        format!("{}.out.{tenant_id}.{event_type}", self.prefix)
    }
}

/// The replay bucket of a stream: `<stream>_REPLAYS` (its JetStream stream is
/// `KV_<stream>_REPLAYS`).
pub fn replay_bucket(stream: &str) -> String {
    format!("{stream}_REPLAYS")
}
