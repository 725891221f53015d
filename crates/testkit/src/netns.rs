//! A second host for tests that need a client at a non-loopback address: a
//! network namespace of the test's own, joined to this host by a veth pair with a
//! /30 subnet. The host end's address is one a server can listen on; a command run
//! in the namespace ([`PeerHost::command`]) connects from the peer's address.
//! Both go when the guard drops (deleting the namespace deletes the pair), also
//! when the test fails. Needs root.

use std::net::Ipv4Addr;
use std::process::Command;

/// A network namespace joined to this host by a veth pair.
pub struct PeerHost {
    namespace: String,
    host_link: String,
    /// This host's address on the pair (a server may listen on it).
    pub host_address: Ipv4Addr,
    /// The namespace's address on the pair (where its clients connect from).
    pub peer_address: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

impl PeerHost {
    /// Creates the namespace and the pair, named and numbered after this process
    /// and `index` (so tests and test binaries running at once do not collide),
    /// in 10.231.0.0/16, which only these test hosts use.
    pub fn create(index: u8) -> Self {
        let pid = std::process::id();
        let slot = (pid % 4096) * 4 + u32::from(index % 4);
        let [_, _, third, fourth] = (slot * 4).to_be_bytes();
        let peer = Self {
            namespace: format!("pgcmk-{pid}-{index}"),
            host_link: format!("pgv{}h{index}", pid % 1_000_000),
            host_address: Ipv4Addr::new(10, 231, third, fourth + 1),
            peer_address: Ipv4Addr::new(10, 231, third, fourth + 2),
        };
        let peer_link = format!("pgv{}n{index}", pid % 1_000_000);
        let (ns, host_link) = (peer.namespace.as_str(), peer.host_link.as_str());
        let host_cidr = format!("{}/30", peer.host_address);
        let peer_cidr = format!("{}/30", peer.peer_address);
        let made = ip(&["netns", "add", ns])
            .and_then(|()| {
                ip(&[
                    "link", "add", host_link, "type", "veth", "peer", "name", &peer_link,
                ])
            })
            .and_then(|()| ip(&["link", "set", &peer_link, "netns", ns]))
            .and_then(|()| ip(&["addr", "add", &host_cidr, "dev", host_link]))
            .and_then(|()| ip(&["link", "set", host_link, "up"]))
            .and_then(|()| ip(&["-n", ns, "addr", "add", &peer_cidr, "dev", &peer_link]))
            .and_then(|()| ip(&["-n", ns, "link", "set", &peer_link, "up"]))
            .and_then(|()| ip(&["-n", ns, "link", "set", "lo", "up"]));
        if let Err(e) = made {
            drop(peer);
            panic!("{e}");
        }
        peer
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace, program]);
        cmd
    }
}

impl Drop for PeerHost {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.namespace]);
        // Gone with the namespace's end already, unless that was never moved there.
        let _ = ip(&["link", "delete", &self.host_link]);
    }
}
