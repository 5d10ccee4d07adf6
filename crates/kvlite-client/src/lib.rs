//! How a kvlite client reaches `kvlite serve`: [`RemoteTransport`], one
//! WebSocket per process shared by every database, implementing
//! [`kvlite_api::Transport`]. (In process, the engine itself is the
//! transport: `kvlite_engine::LocalTransport`.) It carries the storage
//! engine's own request, response and error types; what only a network can
//! do — lose a connection, leave a commit's outcome unknown — it resolves
//! itself where it can (reconnecting, asking for a commit's status) and
//! reports as [`kvlite_api::Error::Unavailable`] or
//! [`kvlite_api::Error::OutcomeUnknown`] where it cannot.

mod remote;

pub use remote::{MAX_ADDED_LATENCY, RemoteOptions, RemoteTransport};
