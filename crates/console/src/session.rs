//! Signed-in browser sessions, kept on the server only: the browser holds a random
//! 256-bit session id in a cookie, never who it is or what it may do. A session
//! ends when it is signed out, when it has been idle for its time-out, or when it
//! reaches its absolute lifetime, whichever comes first; every check takes "now"
//! from the caller, so expiry is tested without waiting.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgcmk_crypto::{ct_eq, random};

/// Sessions kept at most: signing in once more ends the oldest.
pub const MAX_SESSIONS: usize = 64;

/// Random bytes of a session id and of a CSRF token.
const ID_BYTES: usize = 32;

/// How long sessions last.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Ends after this long without a request.
    pub idle: Duration,
    /// Ends this long after signing in, however busy.
    pub absolute: Duration,
}

impl Default for SessionLimits {
    /// 30 minutes idle, 8 hours in all.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(8 * 3600),
        }
    }
}

/// A signed-in session as a request sees it.
#[derive(Clone, Debug)]
pub struct Session<W> {
    /// Who signed in.
    pub who: W,
    /// The token every form of this session must carry back.
    pub csrf: CsrfToken,
    /// A message for the next page (what the last action did), taken once.
    pub notice: Option<Notice>,
}

/// A one-time message shown at the top of the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// True for a refusal or failure.
    pub failed: bool,
    /// What happened, as plain text (escaped when shown).
    pub text: String,
}

/// A session's anti-forgery token (64 hex characters). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The token, for a hidden form field.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `presented` is this token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken(REDACTED)")
    }
}

/// A new session's id, to be set as the cookie. `Debug` hides it.
pub struct SessionId(String);

impl SessionId {
    /// The id, for the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(REDACTED)")
    }
}

struct Entry<W> {
    id: String,
    session: Session<W>,
    started: Instant,
    last_seen: Instant,
}

/// The sessions of one console.
pub struct Sessions<W> {
    limits: SessionLimits,
    entries: Mutex<Vec<Entry<W>>>,
}

impl<W: Clone> Sessions<W> {
    /// No sessions yet.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Starts a session for `who`, who has just proved their credential.
    pub fn open(&self, who: W, now: Instant) -> Result<SessionId, pgcmk_crypto::Error> {
        let id = random::hex_id(ID_BYTES)?;
        let csrf = CsrfToken(random::hex_id(ID_BYTES)?);
        let mut entries = self.lock();
        self.drop_expired(&mut entries, now);
        if entries.len() >= MAX_SESSIONS {
            entries.remove(0);
        }
        entries.push(Entry {
            id: id.clone(),
            session: Session {
                who,
                csrf,
                notice: None,
            },
            started: now,
            last_seen: now,
        });
        Ok(SessionId(id))
    }

    /// The live session whose id is `id`, its idle time restarted and its notice
    /// taken; `None` when there is none or it expired.
    pub fn find(&self, id: &str, now: Instant) -> Option<Session<W>> {
        let mut entries = self.lock();
        self.drop_expired(&mut entries, now);
        // Every id is compared in full, in constant time: how long the answer takes
        // says nothing about how much of an id was right.
        let mut index = None;
        for (i, e) in entries.iter().enumerate() {
            if ct_eq(e.id.as_bytes(), id.as_bytes()) {
                index = Some(i);
            }
        }
        let entry = &mut entries[index?];
        entry.last_seen = now;
        let session = entry.session.clone();
        entry.session.notice = None;
        Some(session)
    }

    /// Leaves `notice` for the next page of session `id`.
    pub fn notify(&self, id: &str, notice: Notice) {
        if let Some(e) = self
            .lock()
            .iter_mut()
            .find(|e| ct_eq(e.id.as_bytes(), id.as_bytes()))
        {
            e.session.notice = Some(notice);
        }
    }

    /// Ends session `id` (signing out).
    pub fn close(&self, id: &str) {
        self.lock()
            .retain(|e| !ct_eq(e.id.as_bytes(), id.as_bytes()));
    }

    /// Sessions alive now.
    pub fn count(&self, now: Instant) -> usize {
        let mut entries = self.lock();
        self.drop_expired(&mut entries, now);
        entries.len()
    }

    fn drop_expired(&self, entries: &mut Vec<Entry<W>>, now: Instant) {
        entries.retain(|e| {
            now.saturating_duration_since(e.last_seen) < self.limits.idle
                && now.saturating_duration_since(e.started) < self.limits.absolute
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry<W>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions<&'static str> {
        Sessions::new(SessionLimits {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(300),
        })
    }

    #[test]
    fn a_session_is_found_by_its_id_only() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.open("alice", t0).unwrap();
        let b = s.open("bob", t0).unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(s.find(a.as_str(), t0).unwrap().who, "alice");
        assert_eq!(s.find(b.as_str(), t0).unwrap().who, "bob");
        let mut wrong = a.as_str().to_string();
        wrong.replace_range(63.., if wrong.ends_with('0') { "1" } else { "0" });
        for id in [&wrong[..], "", &a.as_str()[..63]] {
            assert!(s.find(id, t0).is_none(), "{id}");
        }
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_lifetime() {
        let s = sessions();
        let t0 = Instant::now();
        let id = s.open("alice", t0).unwrap();
        let idle = s.open("idle", t0).unwrap();
        // Busy every 50 s: alive past the idle time-out, gone at the absolute one.
        for step in 1..6 {
            let now = t0 + Duration::from_secs(50 * step);
            assert!(s.find(id.as_str(), now).is_some(), "at {step}");
        }
        assert!(s
            .find(idle.as_str(), t0 + Duration::from_secs(61))
            .is_none());
        assert!(s.find(id.as_str(), t0 + Duration::from_secs(300)).is_none());
        assert_eq!(s.count(t0 + Duration::from_secs(300)), 0);
    }

    #[test]
    fn signing_out_ends_the_session_and_the_oldest_goes_beyond_the_cap() {
        let s = sessions();
        let t0 = Instant::now();
        let first = s.open("first", t0).unwrap();
        let ids: Vec<_> = (0..MAX_SESSIONS)
            .map(|_| s.open("other", t0).unwrap())
            .collect();
        assert!(s.find(first.as_str(), t0).is_none(), "evicted");
        assert_eq!(s.count(t0), MAX_SESSIONS);
        s.close(ids[0].as_str());
        assert!(s.find(ids[0].as_str(), t0).is_none());
        assert_eq!(s.count(t0), MAX_SESSIONS - 1);
    }

    #[test]
    fn the_csrf_token_is_per_session_and_a_notice_is_shown_once() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.open("a", t0).unwrap();
        let b = s.open("b", t0).unwrap();
        let csrf_a = s.find(a.as_str(), t0).unwrap().csrf;
        let csrf_b = s.find(b.as_str(), t0).unwrap().csrf;
        assert!(csrf_a.matches(csrf_a.as_str()));
        assert!(!csrf_a.matches(csrf_b.as_str()));
        assert!(!csrf_a.matches(""));
        assert!(!format!("{csrf_a:?}").contains(csrf_a.as_str()));
        let notice = Notice {
            failed: false,
            text: "stopped".into(),
        };
        s.notify(a.as_str(), notice.clone());
        assert_eq!(s.find(a.as_str(), t0).unwrap().notice, Some(notice));
        assert_eq!(s.find(a.as_str(), t0).unwrap().notice, None);
    }
}
