//! Where the service listens. Its URLs are identities — key ids, token audiences
//! and every node agent's identity endpoint contain them — so the service's address
//! is chosen once (a free loopback port on the first start, or `--listen`), stored in
//! the database and bound again at every start; each vault keeps the port it got at
//! creation. A port taken by another process is an error that says what to do,
//! never a reason to move.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::storage::{Store, META};
use crate::Error;

/// The META record holding the service's address.
const STORED_ADDRESS: &str = "listen_address";

/// The first start's address when `--listen` is not given: a free loopback port.
const FIRST_START: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// One of the service's listeners, as messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The management API, the token endpoints and the managed-identity endpoint.
    Service,
    /// A vault's data plane (its own port, fixed when it was created).
    Vault(String),
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service => f.write_str("the vault service"),
            Self::Vault(name) => write!(f, "vault '{name}'"),
        }
    }
}

impl Listener {
    /// How the operator may move this listener instead, if at all.
    pub fn how_to_move(&self) -> &'static str {
        match self {
            Self::Service => {
                "; to move the service on purpose instead, start it with --listen IP:PORT \
                 (clients and control planes follow its service.json)"
            }
            Self::Vault(_) => "",
        }
    }
}

/// The address to bind the service to: `given` by `--listen`, else the `stored` one,
/// else (first start) a free loopback port. A given port 0 ("any free port") keeps
/// the stored address when it is on the same IP, so a command line that says
/// `--listen 127.0.0.1:0` at every start still gets one address for good.
pub fn choose(given: Option<SocketAddr>, stored: Option<SocketAddr>) -> SocketAddr {
    match (given, stored) {
        (Some(given), Some(stored)) if given.port() == 0 && given.ip() == stored.ip() => stored,
        (Some(given), _) => given,
        (None, Some(stored)) => stored,
        (None, None) => FIRST_START,
    }
}

/// Binds the service's address (see [`choose`]) and stores what was bound, so that
/// the next start binds it again.
pub async fn bind_service(store: &Store, given: Option<SocketAddr>) -> Result<TcpListener, Error> {
    let stored: Option<SocketAddr> = store.get(META, STORED_ADDRESS)?;
    let listener = bind(choose(given, stored), Listener::Service).await?;
    let bound = local_address(&listener)?;
    if stored != Some(bound) {
        if let Some(old) = stored {
            tracing::warn!(
                "the vault service moves from {old} to {bound} (--listen): clients, control \
                 planes and node agents find it through service.json"
            );
        }
        store.write(|tx| tx.put(META, STORED_ADDRESS, &bound))?;
    }
    Ok(listener)
}

/// Binds `address` for `listener`; a port in use is [`Error::AddressInUse`].
pub async fn bind(address: SocketAddr, listener: Listener) -> Result<TcpListener, Error> {
    TcpListener::bind(address).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::AddressInUse { listener, address }
        } else {
            Error::io("binding a port on", address.to_string(), e)
        }
    })
}

/// The address a listener is bound to (its port, when port 0 was asked for).
pub fn local_address(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address of", "a listener", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_stored_address_wins_unless_another_is_given() {
        let stored = Some(addr("127.0.0.1:41000"));
        for (given, stored, chosen) in [
            (None, None, "127.0.0.1:0"),
            (None, stored, "127.0.0.1:41000"),
            (Some(addr("127.0.0.1:0")), None, "127.0.0.1:0"),
            (Some(addr("127.0.0.1:0")), stored, "127.0.0.1:41000"),
            (Some(addr("127.0.0.1:42000")), stored, "127.0.0.1:42000"),
            (Some(addr("127.0.0.2:0")), stored, "127.0.0.2:0"),
            (Some(addr("[::1]:0")), stored, "[::1]:0"),
        ] {
            assert_eq!(choose(given, stored), addr(chosen), "{given:?} {stored:?}");
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_named_with_what_to_do() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = squatter.local_addr().unwrap();
        let err = bind(taken, Listener::Vault("kv1".into()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("vault 'kv1' cannot listen on {taken}")),
            "{err}"
        );
        assert!(
            err.contains(&format!("stop the process holding port {}", taken.port())),
            "{err}"
        );
        assert!(
            !err.contains("--listen"),
            "a vault's port cannot move: {err}"
        );
        let err = bind(taken, Listener::Service)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen IP:PORT"), "{err}");
    }
}
