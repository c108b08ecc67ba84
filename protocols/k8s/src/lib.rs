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
//! The connection (TLS with the session's client certificate or token, the WebSocket) and
//! the terminal are the proxy's.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod request;
pub mod status;
