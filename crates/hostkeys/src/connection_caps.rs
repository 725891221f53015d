//! Counting the connections a listener holds, in total and per client address, so
//! that one client (or everyone) cannot take every file descriptor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The connections held now.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_client: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds its most connections.
    Full,
    /// This address holds its most connections.
    ClientFull,
}

/// One admitted connection; its slot is freed when this drops.
#[derive(Debug)]
pub struct Admission {
    caps: Arc<ConnectionCaps>,
    client: IpAddr,
}

impl ConnectionCaps {
    /// Caps of `max_total` connections, `max_per_client` from one address.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a slot for a connection from `client`, if one is free.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admission, Refusal> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let mine = held.by_client.entry(client).or_default();
        if *mine >= self.max_per_client {
            return Err(Refusal::ClientFull);
        }
        *mine += 1;
        held.total += 1;
        Ok(Admission {
            caps: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut held = self.caps.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total -= 1;
        if let Some(mine) = held.by_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_client_cannot_take_every_slot_and_slots_come_back() {
        let caps = ConnectionCaps::new(3, 2);
        let a1 = caps.admit(ip(1)).unwrap();
        let _a2 = caps.admit(ip(1)).unwrap();
        assert_eq!(caps.admit(ip(1)).unwrap_err(), Refusal::ClientFull);
        let _b1 = caps.admit(ip(2)).unwrap();
        assert_eq!(caps.admit(ip(3)).unwrap_err(), Refusal::Full);
        drop(a1);
        let _c1 = caps.admit(ip(3)).unwrap();
        assert_eq!(caps.held.lock().unwrap().total, 3);
    }
}
