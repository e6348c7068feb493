//! The RADIUS clients (NAS) of the configuration, looked up by source
//! address: the most specific network that contains the address wins, so a
//! host entry can override its subnet's entry. Two entries for the same
//! network are refused when the table is built, since which one applies
//! would be a guess.

use std::net::IpAddr;
use std::sync::Arc;

use otpd_core::config::RadiusClientConfig;

use super::codec::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("radius clients '{0}' and '{1}' both cover {2}: give each network one entry")]
    Duplicate(String, String, ipnet::IpNet),
}

#[derive(Debug, Clone)]
pub struct ClientTable {
    /// Sorted by prefix length, longest first. Shared: each request in
    /// flight holds its client.
    clients: Vec<Arc<Client>>,
}

/// A client as the listener uses it: its configuration, and its secret
/// keyed for Message-Authenticator once rather than per packet.
#[derive(Debug)]
pub struct Client {
    pub config: RadiusClientConfig,
    pub secret: Secret,
}

impl Client {
    pub fn new(config: RadiusClientConfig) -> Self {
        let secret = Secret::new(config.secret.as_bytes());
        Client { config, secret }
    }
}

impl ClientTable {
    pub fn new(clients: &[RadiusClientConfig]) -> Result<Self, ClientError> {
        let mut list: Vec<RadiusClientConfig> = Vec::with_capacity(clients.len());
        for c in clients {
            let net = c.address.trunc();
            if let Some(other) = list.iter().find(|o| o.address.trunc() == net) {
                return Err(ClientError::Duplicate(other.name.clone(), c.name.clone(), net));
            }
            let mut c = c.clone();
            c.address = net;
            list.push(c);
        }
        list.sort_by_key(|c| std::cmp::Reverse(c.address.prefix_len()));
        Ok(ClientTable { clients: list.into_iter().map(|c| Arc::new(Client::new(c))).collect() })
    }

    /// The client for a source address (IPv4-mapped IPv6 addresses are
    /// taken as IPv4, as a dual-stack socket reports them).
    pub fn find(&self, ip: IpAddr) -> Option<&Arc<Client>> {
        let ip = ip.to_canonical();
        self.clients.iter().find(|c| c.config.address.contains(&ip))
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, net: &str, secret: &str) -> RadiusClientConfig {
        RadiusClientConfig {
            name: name.into(),
            address: net.parse().unwrap(),
            secret: zeroize::Zeroizing::new(secret.into()),
            realm: None,
            require_message_authenticator: true,
        }
    }

    #[test]
    fn most_specific_network_wins() {
        let t =
            ClientTable::new(&[client("lan", "10.0.0.0/8", "a"), client("vpn", "10.1.2.3/32", "b")]).unwrap();
        assert_eq!(t.find("10.1.2.3".parse().unwrap()).unwrap().config.name, "vpn");
        assert_eq!(t.find("10.1.2.4".parse().unwrap()).unwrap().config.name, "lan");
        assert_eq!(t.find("::ffff:10.1.2.3".parse().unwrap()).unwrap().config.name, "vpn");
        assert!(t.find("192.168.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn same_network_twice_is_refused() {
        let e =
            ClientTable::new(&[client("a", "10.0.0.0/8", "x"), client("b", "10.1.0.0/8", "y")]).unwrap_err();
        assert!(e.to_string().contains("'a' and 'b'"), "{e}");
    }

    #[test]
    fn ipv6_clients() {
        let t = ClientTable::new(&[client("v6", "::1/128", "a")]).unwrap();
        assert!(t.find("::1".parse().unwrap()).is_some());
        assert!(t.find("127.0.0.1".parse().unwrap()).is_none());
    }
}
