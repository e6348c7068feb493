//! The daemon side of otpd: the RADIUS front (`otpd serve`), the local
//! socket it answers pam_otpd on, its logging and its switch to an
//! unprivileged user.
//! A library so that the binary, the tests, the fuzz targets and the load
//! generator share one codec and one listener; the admin CLI lives in the
//! binary (`main.rs`).

pub mod load;
pub mod local_socket;
pub mod logging;
pub mod privilege;
pub mod radius;
pub mod usage;
