//! Prometheus metrics (`GET /metrics`).
//!
//! Counters on the data path are pre-resolved label children (cloned `Counter`s share their
//! atomic), so the hot path pays one relaxed atomic add per chunk and no map lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use zt_api::control::{Conversation, EndReason, Origin, Transport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    transport: &'static str,
    conversation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    origin: &'static str,
    kind: &'static str,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_created: Family<SessionLabels, Counter>,
    sessions_ended: Family<ReasonLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    control_refused: Family<ListenerLabels, Counter>,
    /// Sessions alive now.
    pub sessions_active: Gauge,
    /// Bytes relayed towards targets.
    pub bytes_to_target: Counter,
    /// Bytes relayed towards clients.
    pub bytes_to_client: Counter,
    /// Tunnelled connections opened.
    pub connections_total: Counter,
    /// Tunnelled connections open now.
    pub connections_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ztproxy");
        let sessions_created = Family::<SessionLabels, Counter>::default();
        registry.register(
            "sessions_created",
            "Sessions created through the control API",
            sessions_created.clone(),
        );
        let sessions_ended = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sessions_ended",
            "Sessions ended, by reason",
            sessions_ended.clone(),
        );
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions alive now",
            sessions_active.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register("bytes", "Bytes relayed, by direction", bytes.clone());
        let bytes_to_target = bytes
            .get_or_create(&DirectionLabels {
                direction: "to_target",
            })
            .clone();
        let bytes_to_client = bytes
            .get_or_create(&DirectionLabels {
                direction: "to_client",
            })
            .clone();
        let connections_total = Counter::default();
        registry.register(
            "connections",
            "Tunnelled TCP connections opened",
            connections_total.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            "connections_active",
            "Tunnelled TCP connections open now",
            connections_active.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Errors, by origin and kind", errors.clone());
        let control_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "control_refused",
            "Control API connections closed unserved because the listener's budget was full",
            control_refused.clone(),
        );
        Self {
            registry,
            sessions_created,
            sessions_ended,
            errors,
            control_refused,
            sessions_active,
            bytes_to_target,
            bytes_to_client,
            connections_total,
            connections_active,
        }
    }

    /// Counts a created session.
    pub fn session_created(&self, transport: Transport, conversation: Conversation) {
        self.sessions_created
            .get_or_create(&SessionLabels {
                transport: transport.as_str(),
                conversation: conversation.as_str(),
            })
            .inc();
    }

    /// Counts an ended session.
    pub fn session_ended(&self, reason: EndReason) {
        self.sessions_ended
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts an error. `kind` is a fixed, secret-free label.
    pub fn error(&self, origin: Origin, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                origin: origin.as_str(),
                kind,
            })
            .inc();
    }

    /// Counts a control API connection refused by `listener`'s budget (`"unix"`, `"tcp"`).
    pub fn control_refused(&self, listener: &'static str) {
        self.control_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let metrics = Metrics::new();
        metrics.session_created(Transport::Quic, Conversation::Tunnel);
        metrics.bytes_to_target.inc_by(5);
        metrics.error(Origin::Target, "target_refused");
        metrics.control_refused("tcp");
        let text = metrics.encode();
        for needle in [
            "ztproxy_sessions_created_total{transport=\"quic\",conversation=\"tunnel\"} 1",
            "ztproxy_bytes_total{direction=\"to_target\"} 5",
            "ztproxy_errors_total{origin=\"target\",kind=\"target_refused\"} 1",
            "ztproxy_sessions_active 0",
            "ztproxy_control_refused_total{listener=\"tcp\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
