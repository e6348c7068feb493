//! Link flags of pam_otpd.so, which every PAM login loads afresh (the
//! module's load and unload are a good part of a login's cost):
//! * `-z nodelete`: dlclose leaves it mapped. Unmapping a module of
//!   several MB costs a login about as much as loading it, and a Rust
//!   library's thread-local destructors must never outlive their code.
//! * `-z pack-relative-relocs` where the C library can load it (glibc 2.36
//!   and later): the module's thousands of relative relocations as a compact
//!   table (DT_RELR) the loader applies faster (about 0.1 ms a login here).

use std::process::Command;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    let target_gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    let same_host = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    if target_gnu_linux && same_host && glibc_at_least(2, 36) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc (`getconf GNU_LIBC_VERSION`: `glibc 2.36`).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
