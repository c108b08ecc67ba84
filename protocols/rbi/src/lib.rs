//! Remote browser isolation: the user's client shows only pixels of a Chromium that runs
//! next to ztproxy, which may visit only the allowed URLs.
//!
//! ```text
//!  session's parameters ─▶ RbiSettings ─▶ open() ─▶ RbiConnection ─▶ run()
//!  (Keeper's `http`        (settings.rs)   Chromium,   DevTools,       screencast → Engine → pipe
//!   names)                                 profile     Fetch policy    pipe → Engine → Input.*
//! ```
//!
//! * [`policy`]: the URL patterns and the check every request passes (sans-IO).
//! * [`input`]: Guacamole keys and mouse as DevTools input events (sans-IO).
//! * [`engine`]: screencast frames into a framebuffer that sends the client only what
//!   changed, paced by the client's `sync` (sans-IO).
//! * [`browser`]: one Chromium per session, its process group and profile removed with it;
//!   [`cgroup`]: its memory and processes capped, where the platform allows.
//! * [`files`]: downloads to the client and uploads for the page's file inputs, when
//!   allowed (sans-IO but for small reads and writes of the files).
//! * [`gate`] and [`socks`]: the SOCKS 5 proxy every connection of the browser goes
//!   through, which lets it reach only the hosts and ports the patterns name.
//! * [`open`] and [`run`]: the session, reporting navigations and refusals to an
//!   [`Observer`] (the proxy audits them).
//!
//! Nothing here logs a credential, a keystroke or a page's content.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod autofill;
#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "browser")]
pub mod cgroup;
pub mod engine;
pub mod files;
#[cfg(feature = "browser")]
pub mod gate;
pub mod input;
pub mod policy;
#[cfg(feature = "browser")]
mod session;
pub mod settings;
pub mod socks;

#[cfg(feature = "browser")]
pub use session::{EndedBy, Error, Observer, RbiConnection, SessionEnd, audited_url, open, run};
pub use settings::RbiSettings;
