//! Kubernetes connections: the API server's remote-command protocol, as `kubectl exec -it`
//! speaks it, without I/O.
//!
//! ```text
//!  GET /api/v1/namespaces/{ns}/pods/{pod}/exec?command=…&container=…&stdin=true&stdout=true&tty=true
//!  Upgrade: websocket
//!  Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io
//!                                   │ 101, one protocol chosen
//!                                   ▼
//!  binary frames: [channel][payload]   0 stdin → · 1 stdout ← · 2 stderr ← · 3 status ←
//!                                      4 resize → {"Width":cols,"Height":rows} · 255 close (v5)
//! ```
//!
//! * [`request`]: the exec or attach request's path and query, with every name checked so
//!   nothing from a session can change the path.
//! * [`channel`]: the subprotocol the server chose, and the frames both ways, bounded against
//!   a hostile server.
//! * [`status`]: the status channel's `metav1.Status` — success, an exit code, or the
//!   server's reason — and the Status body of a refused upgrade, as words for the user.
//!
//! * [`K8sSettings`]: guacd 1.6's `kubernetes` parameters (and `bearer-token`, `attach`).
//! * [`connect`]: TLS with the session's trust and credentials, the request, the upgrade; a
//!   refusal is an [`Error`] with the server's reason.
//! * [`run`]: the session on a [`zt_terminal::Terminal`]: output to the screen, keys to
//!   stdin, the client's `size` to the resize stream, and the status stream's exit status in
//!   the [`SessionEnd`].
//!
//! It does not record, audit, decide policy or read configuration: the proxy does. Nothing
//! here logs a credential or a keystroke.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
mod connect;
pub mod error;
pub mod request;
mod session;
pub mod settings;
pub mod status;

pub use connect::{CONNECT_TIMEOUT, K8sConnection, connect};
pub use error::Error;
pub use session::{EndedBy, MAX_TO_TARGET, SessionEnd, run};
pub use settings::{Credentials, K8sSettings, ServerTrust};
