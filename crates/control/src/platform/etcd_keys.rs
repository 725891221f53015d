//! A highly available server's part of etcd: Patroni keeps its cluster under
//! `/service/SCOPE/` (its default namespace; the scope is the server's id), and in
//! the control plane's own cluster each server has an etcd user and role of its
//! own (`pgcmk-server-SCOPE`) that may read and write there and nowhere else, so
//! that one server's nodes cannot read or move another's leadership. etcd's root
//! user is the control plane's; its password, like each server's, is random and
//! kept sealed in the state store (`docs/high-availability.md`). In an existing
//! cluster the same users are made when the operator gave its root password
//! (`pgcmk serve --etcd-root-password-file`), which stays in memory only.
//!
//! When the server is deleted or a single one again its keys, user and role are
//! removed, so that nothing of the old cluster (its system identifier, its last
//! known position, its leader) is taken for the truth if the server is made highly
//! available once more.

use std::sync::PoisonError;

use pgcmk_agent::contract::ha::etcd_user;
use pgcmk_crypto::SecretBytes;

use super::create::hex_id;
use super::Platform;
use crate::etcd_auth::EtcdAdmin;
use crate::model::ServerRecord;
use crate::store::etcd_user_owner;
use crate::Error;

/// Patroni's default namespace.
const NAMESPACE: &str = "/service/";
/// The owner of the local cluster's root password in the sealed secrets.
const ETCD_ROOT_OWNER: &str = "etcd/root";

/// The keys of cluster `scope`: `[start, end)`, every key with its prefix.
fn cluster_range(scope: &str) -> (String, String) {
    let start = format!("{NAMESPACE}{scope}/");
    // The prefix's last byte ('/') plus one ('0') ends the range.
    let end = format!("{NAMESPACE}{scope}0");
    (start, end)
}

impl Platform {
    /// A secret of `owner`, made (random) and sealed at its first use.
    fn sealed_or_new(&self, owner: &str) -> Result<SecretBytes, Error> {
        if self.store.sealed_identity_secret(owner)?.is_some() {
            return self.secrets.get(&self.store, owner);
        }
        let secret = SecretBytes::new(hex_id()?.into_bytes());
        self.secrets.put(&self.store, owner, &secret)?;
        Ok(secret)
    }

    /// An administrator's client of the etcd cluster at `endpoints`, and whether
    /// it administers the cluster's users: root of the control plane's own cluster
    /// (authentication enabled first if it is not yet), root of an existing
    /// cluster (`pgcmk serve --etcd-endpoints`) whose root password the operator
    /// gave, or else whatever the operator's client certificate may do there.
    fn etcd_admin(&self, endpoints: &[String]) -> Result<(EtcdAdmin, bool), Error> {
        let mut admin = EtcdAdmin::new(self.etcd_http()?, endpoints);
        match &self.config.etcd_tls {
            None => {
                self.wait_etcd_ready(endpoints)?;
                admin.become_root(&self.sealed_or_new(ETCD_ROOT_OWNER)?)?;
                Ok((admin, true))
            }
            Some(given) => match &given.root_password {
                Some(password) => {
                    admin.log_in_as_root(password)?;
                    Ok((admin, true))
                }
                None => Ok((admin, false)),
            },
        }
    }

    /// The password `node`'s Patroni authenticates to etcd with: its server's etcd
    /// user's, that user confined to the server's keys first (made at the first
    /// start of the server's first node, checked at every start). `None` for an
    /// existing cluster whose users the control plane does not administer.
    pub(super) fn etcd_password(&self, node: &ServerRecord) -> Result<Option<SecretBytes>, Error> {
        let Some(place) = &node.node_of else {
            return Ok(None);
        };
        let endpoints = self.etcd_endpoints()?;
        // One at a time: two first uses at once would each make a password.
        let _one = self
            .etcd_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (admin, administered) = self.etcd_admin(&endpoints)?;
        if !administered {
            return Ok(None);
        }
        let password = self.sealed_or_new(&etcd_user_owner(&place.server_id))?;
        let (start, end) = cluster_range(&place.server_id);
        admin.confine_user(&etcd_user(&place.server_id), &password, (&start, &end))?;
        Ok(Some(password))
    }

    /// Removes every key of highly available server `server_id`'s cluster from
    /// etcd at `endpoints`, then its user and role.
    pub(super) fn forget_etcd_cluster(
        &self,
        server_id: &str,
        endpoints: &[String],
    ) -> Result<(), Error> {
        let _one = self
            .etcd_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (admin, administered) = self.etcd_admin(endpoints)?;
        let (start, end) = cluster_range(server_id);
        admin.delete_range((&start, &end))?;
        if administered {
            admin.remove_user(&etcd_user(server_id))?;
        }
        Ok(())
    }

    /// [`Platform::forget_etcd_cluster`] for `server`, at the endpoints its first
    /// node still on disk was given (none left: nothing to reach).
    pub(super) fn forget_etcd_cluster_of(&self, server: &ServerRecord) -> Result<(), Error> {
        let endpoints = server
            .nodes
            .iter()
            .filter_map(|id| self.store.server(id).ok())
            .find_map(|node| Some(self.agent_config_of(&node)?.ha?.etcd_endpoints));
        match endpoints {
            Some(endpoints) => self.forget_etcd_cluster(&server.id, &endpoints),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_holds_the_cluster_and_no_other() {
        let (start, end) = cluster_range("abc");
        let inside = |key: &str| key >= start.as_str() && key < end.as_str();
        assert!(inside("/service/abc/initialize"));
        assert!(inside("/service/abc/members/n-node-1"));
        assert!(!inside("/service/abcd/initialize"));
        assert!(!inside("/service/ab/initialize"));
        assert!(!inside("/service/abc"));
    }
}
