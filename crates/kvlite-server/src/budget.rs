//! Byte budgets for requests in flight: one for the whole server, one per
//! namespace (so one tenant cannot take all of it). A request holds its
//! estimated cost from both until its answer is sent; a connection whose
//! request waits for budget reads nothing more meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kvlite_proto::msg::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budgets count KiB, so a semaphore's permits cover any realistic size.
const UNIT: usize = 1024;
/// What a request costs beyond its message.
const OVERHEAD: usize = 16 << 10;

pub(crate) struct Budgets {
    server: Arc<Semaphore>,
    server_units: usize,
    per_namespace_units: usize,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

/// Both permits of a request; dropping it gives the bytes back.
pub(crate) struct Held {
    _namespace: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
    units: usize,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec_by((self.units * UNIT) as i64);
    }
}

/// The bytes a request may hold while it runs: the message and its decoded
/// copy, and what the engine builds for it (an encoded delta, pages read,
/// the answer).
pub(crate) fn cost(request: &Request, message_bytes: usize, preload_budget: usize) -> usize {
    let page = kvlite_proto::PAGE_SIZE;
    let work = match request {
        // Decoded pages, their LTX encoding, the KV write set.
        Request::Commit { .. } | Request::CommitChunk { .. } => 2 * message_bytes,
        // The pages read, and the encoded answer.
        Request::GetPages { pgnos, .. } | Request::GetPagesAt { pgnos, .. } => {
            2 * pgnos.len() * (page + 16)
        }
        // The changed-page list of the answer.
        Request::BeginRead { .. } => 8 * kvlite_api::MAX_CHANGED_PAGES,
        Request::Open { .. } => 2 * preload_budget,
        _ => 0,
    };
    message_bytes + work + OVERHEAD
}

impl Budgets {
    pub fn new(
        server_bytes: usize,
        per_namespace_bytes: usize,
        in_flight: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        let server_units = (server_bytes / UNIT).max(1);
        Budgets {
            server: Arc::new(Semaphore::new(server_units)),
            server_units,
            per_namespace_units: (per_namespace_bytes / UNIT).clamp(1, server_units),
            namespaces: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    fn namespace(&self, ns: &str) -> Arc<Semaphore> {
        let mut map = self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(ns.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace_units)))
            .clone()
    }

    /// Wait for `bytes` from namespace `ns`'s budget and the server's. A
    /// request larger than a budget takes all of it (it runs alone).
    /// `None` if the budgets were closed.
    pub async fn acquire(&self, ns: &str, bytes: usize) -> Option<Held> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.per_namespace_units);
        let namespace = self
            .namespace(ns)
            .acquire_many_owned(units as u32)
            .await
            .ok()?;
        let server = self
            .server
            .clone()
            .acquire_many_owned(units.min(self.server_units) as u32)
            .await
            .ok()?;
        self.in_flight.inc_by((units * UNIT) as i64);
        Some(Held {
            _namespace: namespace,
            _server: server,
            units,
            gauge: self.in_flight.clone(),
        })
    }
}
