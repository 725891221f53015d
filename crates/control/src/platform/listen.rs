//! Where a server listens: the DBA's listen addresses, checked, and changing them.
//!
//! Every address is one PostgreSQL binds to and one its certificate names, so only
//! concrete addresses of this host are accepted: a wildcard (`0.0.0.0`, `::`) would
//! listen on addresses no certificate names, and an address the host does not have
//! would make PostgreSQL skip it with a warning nobody reads.

use std::net::{IpAddr, SocketAddr, TcpListener};

use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};

use super::Platform;
use crate::error::IoContext;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::Error;

/// At most this many listen addresses (each is a name in the certificate).
const MAX_ADDRESSES: usize = 16;
/// Ports tried for one that is free on every listen address.
const PORT_TRIES: usize = 32;

/// The listen addresses of a request (none given: loopback), parsed and checked:
/// IP addresses of this host, no wildcard, no multicast; repeats are dropped.
pub(super) fn listen_addresses(given: &[String]) -> Result<Vec<IpAddr>, Error> {
    if given.is_empty() {
        return Ok(pgcmk_agent::contract::config::loopback_only());
    }
    if given.len() > MAX_ADDRESSES {
        return Err(Error::BadRequest(format!(
            "{} listen addresses given: at most {MAX_ADDRESSES}",
            given.len()
        )));
    }
    let mut addresses = Vec::new();
    for text in given {
        let address = parse(text.trim())?;
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

fn parse(text: &str) -> Result<IpAddr, Error> {
    let address: IpAddr = text.parse().map_err(|_| {
        Error::BadRequest(format!(
            "listen address '{text}' is not an IP address: give IPv4 or IPv6 addresses of this \
             host, e.g. 127.0.0.1,192.0.2.10 (host names are not accepted)"
        ))
    })?;
    if address.is_unspecified() {
        return Err(Error::BadRequest(format!(
            "listen address {address} means every address of the host, which no certificate \
             can name: give the addresses clients connect to"
        )));
    }
    if address.is_multicast() {
        return Err(Error::BadRequest(format!(
            "listen address {address} is a multicast address: give an address of this host"
        )));
    }
    TcpListener::bind(SocketAddr::new(address, 0)).map_err(|e| {
        Error::BadRequest(format!(
            "listen address {address} is not usable on this host ({e}): give addresses of its \
             interfaces (`ip -brief address` lists them)"
        ))
    })?;
    Ok(address)
}

/// A TCP port that is free now on every one of `addresses`.
pub(super) fn free_port(addresses: &[IpAddr]) -> Result<u16, Error> {
    let first = addresses
        .first()
        .copied()
        .unwrap_or(pgcmk_agent::postgres::tls::LOOPBACK);
    for _ in 0..PORT_TRIES {
        let listener =
            TcpListener::bind(SocketAddr::new(first, 0)).ctx(|| "finding a free port")?;
        let port = listener.local_addr().ctx(|| "finding a free port")?.port();
        if addresses[1..]
            .iter()
            .all(|a| TcpListener::bind(SocketAddr::new(*a, port)).is_ok())
        {
            return Ok(port);
        }
    }
    Err(Error::BadRequest(format!(
        "no port is free on every one of the listen addresses {addresses:?}"
    )))
}

/// Whether `port` is free on `address` now, or in use by the server itself.
fn port_usable(address: IpAddr, port: u16, own: &[IpAddr]) -> bool {
    own.contains(&address) || TcpListener::bind(SocketAddr::new(address, port)).is_ok()
}

impl Platform {
    /// Makes the server listen on `given` (IP addresses of this host): its
    /// `agent.json` and row are rewritten and, unless it is stopped, its agent is
    /// restarted with a certificate for the new addresses, and waited for. A
    /// request that is not valid changes nothing.
    pub fn update_listen_addresses(
        &self,
        name: &str,
        given: &[String],
    ) -> Result<ServerRecord, Error> {
        let addresses = listen_addresses(given)?;
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if !server.nodes.is_empty() || server.node_of.is_some() {
            return Err(Error::BadRequest(format!(
                "server '{name}' is highly available: its nodes listen on addresses of their \
                 own (docs/high-availability.md)"
            )));
        }
        self.local_only(&server, "changing the listen addresses")?;
        if let Some(taken) = addresses
            .iter()
            .find(|a| !port_usable(**a, server.port, &server.listen_addresses))
        {
            return Err(Error::BadRequest(format!(
                "port {} of server '{name}' is in use on {taken}: choose other addresses",
                server.port
            )));
        }
        let replicas = self.replicas_of(name)?;
        if !replicas.is_empty() && addresses.first() != server.listen_addresses.first() {
            let names: Vec<String> = replicas.into_iter().map(|r| r.name).collect();
            return Err(Error::BadRequest(format!(
                "server '{name}' has read replicas ({}) that connect to its first listen \
                 address: keep {} first",
                names.join(", "),
                server
                    .listen_addresses
                    .first()
                    .map_or_else(String::new, IpAddr::to_string)
            )));
        }
        let dir = ServerDir::new(&server.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        let running = server.state != ServerState::Stopped;
        if running {
            self.stop_agent(&server.id);
        }
        config.listen_addresses = addresses.clone();
        write_json_atomic(&dir.agent_config(), &config)?;
        let updated = self.store.update_server(&server.id, |s| {
            s.listen_addresses = addresses.clone();
            if running {
                s.state = ServerState::Provisioning;
            }
        })?;
        let shown: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
        self.event(
            &server,
            Actor::Dba,
            "listen addresses changed",
            &format!("now {}", shown.join(", ")),
        )?;
        if running {
            self.spawn_agent(&updated, None)?;
            self.wait_settled(&updated)?;
        }
        self.store.server(&server.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(given: &[&str]) -> String {
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        listen_addresses(&given).unwrap_err().to_string()
    }

    #[test]
    fn loopback_is_the_default_and_repeats_are_dropped() {
        assert_eq!(
            listen_addresses(&[]).unwrap(),
            [pgcmk_agent::postgres::tls::LOOPBACK]
        );
        let given = ["127.0.0.1".to_string(), " 127.0.0.1".into(), "::1".into()];
        let got = listen_addresses(&given).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn bad_addresses_are_refused_saying_why() {
        assert!(refused(&["db.example"]).contains("not an IP address"));
        assert!(refused(&["0.0.0.0"]).contains("every address"));
        assert!(refused(&["::"]).contains("every address"));
        assert!(refused(&["224.0.0.1"]).contains("multicast"));
        // TEST-NET-3: documentation only, never an address of this host.
        assert!(refused(&["203.0.113.7"]).contains("not usable on this host"));
        let many: Vec<String> = (0..=MAX_ADDRESSES)
            .map(|i| format!("127.0.0.{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(refused(&many).contains("at most"));
    }
}
