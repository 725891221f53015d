//! A small least-recently-used cache of unsealed private keys, so hot keys skip
//! unsealing and parsing while memory stays bounded however many keys exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgcmk_crypto::rsa::RsaPrivateKey;

/// Unsealed private keys by `vault/name/version`.
pub struct KeyCache {
    inner: Mutex<Lru>,
}

struct Lru {
    map: HashMap<String, (Arc<RsaPrivateKey>, u64)>,
    tick: u64,
    capacity: usize,
}

impl KeyCache {
    /// A cache holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Lru {
                map: HashMap::new(),
                tick: 0,
                capacity: capacity.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached key, marking it recently used.
    pub fn get(&self, id: &str) -> Option<Arc<RsaPrivateKey>> {
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        lru.map.get_mut(id).map(|(key, used)| {
            *used = tick;
            key.clone()
        })
    }

    /// Caches a key, evicting the least recently used one when full.
    pub fn insert(&self, id: &str, key: Arc<RsaPrivateKey>) {
        let mut lru = self.lock();
        if lru.map.len() >= lru.capacity && !lru.map.contains_key(id) {
            if let Some(oldest) = lru
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                lru.map.remove(&oldest);
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.map.insert(id.to_string(), (key, tick));
    }

    /// Drops every cached version of a key (after purge or restore).
    pub fn forget_key(&self, vault: &str, name: &str) {
        let prefix = format!("{vault}/{name}/");
        self.lock().map.retain(|k, _| !k.starts_with(&prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcmk_crypto::rsa::RsaKeySize;

    #[test]
    fn evicts_least_recently_used_and_forgets_purged_keys() {
        let key = Arc::new(RsaPrivateKey::generate(RsaKeySize::Bits2048).unwrap());
        let cache = KeyCache::new(2);
        cache.insert("v/a/1", key.clone());
        cache.insert("v/b/1", key.clone());
        assert!(cache.get("v/a/1").is_some());
        cache.insert("v/c/1", key.clone());
        assert!(cache.get("v/b/1").is_none(), "b was least recently used");
        assert!(cache.get("v/a/1").is_some());
        cache.forget_key("v", "a");
        assert!(cache.get("v/a/1").is_none());
        assert!(cache.get("v/c/1").is_some());
    }
}
