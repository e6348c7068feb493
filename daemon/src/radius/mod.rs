//! The RADIUS front: `otpd serve` answers PAP Access-Requests and
//! Status-Server from configured clients with the core's verdict.
//!
//! * `codec`: otpd's own packet codec (pure, fuzzable).
//! * `clients`: which configured client a source address belongs to.
//! * `cache`: the reply cache that answers retransmissions.
//! * `droplog`: rate-limited logging of dropped datagrams.
//! * `ratelimit`: limits on failed attempts per user and per source.
//! * `sockets`: reading the sockets, and the kernel's count of drops.
//! * `turn`: which core thread reads the sockets.
//! * `server`: the core threads, reload and shutdown.

mod cache;
mod clients;
pub mod codec;
mod droplog;
pub mod ratelimit;
mod server;
mod sockets;
mod turn;

pub use clients::{ClientError, ClientTable};
pub use server::{Dropped, ServeError, State, serve};
