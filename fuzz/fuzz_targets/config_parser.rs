//! The configuration file on arbitrary text: `Config::parse`, then what
//! `Otpd::open` and `otpd serve` build from it (the policies, the event
//! handlers with their realms, the RADIUS client table), then the policy
//! lookups a login makes. Errors are expected; panics are bugs.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use otpd_core::Config;
use otpd_core::Realms;
use otpd_core::events::Events;
use otpd_core::policy::{Policies, PolicyQuery, Scope};
use otpd_daemon::radius::ClientTable;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    let mut config = match Config::parse(path, &text) {
        Ok(config) => config,
        Err(e) => {
            // The message must name the file and be one line.
            let message = e.to_string();
            assert!(message.starts_with("fuzz.toml"), "{message}");
            return;
        }
    };

    if let Ok(clients) = ClientTable::new(&config.radius.clients) {
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let _ = clients.find(ip);
        }
    }

    let policies = match Policies::from_config(&config.policies, path) {
        Ok(policies) => policies,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let queries = [
        PolicyQuery::default(),
        PolicyQuery {
            realm: Some("corp"),
            resolver: Some("corp-users"),
            user: Some("alice"),
            client: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            realm_only: false,
        },
        PolicyQuery { realm: Some("CORP"), user: Some("Alice"), realm_only: true, ..PolicyQuery::default() },
    ];
    let actions: Vec<&'static str> = policies.all().iter().flat_map(|p| p.actions.keys().copied()).collect();
    for q in &queries {
        for policy in policies.all() {
            let _ = Policies::mismatch(policy, q);
        }
        for action in &actions {
            for scope in [Scope::Enrollment, Scope::Authentication] {
                let _ = policies.union(scope, action, q);
                let _ = policies.texts(scope, action, q);
                let _ = policies.flag(scope, action, q);
                let _ = policies.unique_text(scope, action, q);
                let _ = policies.unique_int(scope, action, q);
            }
            let _ = policies.limit(action, q);
        }
    }

    // The realms without their resolvers: opening a resolver reads the file
    // it names, and a fuzzed path may name anything on this machine.
    config.resolvers.clear();
    let Ok(realms) = Realms::open(&config) else { return };
    match Events::from_config(&config.events, path, &realms) {
        Ok(events) => {
            let _ = format!("{:?}", events.all());
            for event in ["token_init", "validate_check", "token_assign", "token_lost"] {
                let _ = events.listens(event);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
