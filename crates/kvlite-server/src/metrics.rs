//! Server metrics, next to the engine's in one Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone)]
pub struct ServerMetrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<OpLabel, Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Upgrades refused and connections closed for bad input.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Bytes held by requests in flight (their budgeted cost).
    pub in_flight_bytes: Gauge,
}

impl ServerMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = ServerMetrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(20e-6, 2.0, 20))
            }),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            rejected: Family::default(),
            in_flight_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("kvlite_server");
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "in_flight_bytes",
            "Bytes held by requests in flight (budgeted)",
            m.in_flight_bytes.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        r.register(
            "requests",
            "Requests by operation and outcome",
            m.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Request duration by operation",
            m.request_seconds.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of protocol messages received",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes of protocol messages sent",
            m.bytes_out.clone(),
        );
        r.register(
            "rejected",
            "Refused upgrades and connections closed for bad input",
            m.rejected.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}
