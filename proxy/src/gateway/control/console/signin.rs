//! Console sign-in: an operator token exchanged once for a server-side
//! session, so the token never sits in the browser.
//!
//! The cookie holds a random session key; the gateway keeps only its
//! BLAKE3 hash, with the operator's name, a per-session form token (every
//! POST must carry it) and the session's times. A session ends when idle
//! for [`IDLE`], [`ABSOLUTE`] after sign-in, at sign-out, or when the
//! gateway restarts. Roles are never cached here: each request looks the
//! operator up, so a removed operator or a changed role takes effect at
//! once. Time comes from an injected clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use gatehouse_ledger::event::Nanos;
use gatehouse_ledger::writer::Clock;

use crate::gateway::control::scram::random_bytes;

/// A console session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// A console session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);

/// Most console sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The operator who signed in.
    pub operator: String,
    /// The token every form of this session carries.
    pub form_token: String,
}

#[derive(Debug)]
struct Entry {
    signed_in: SignedIn,
    started: Nanos,
    last_seen: Nanos,
}

/// The console's sessions, by the hash of their cookie value.
pub struct ConsoleSessions {
    clock: Clock,
    sessions: Mutex<HashMap<[u8; 32], Entry>>,
}

impl ConsoleSessions {
    /// No session yet; time from `clock`.
    pub fn new(clock: Clock) -> Self {
        ConsoleSessions {
            clock,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `operator`: the cookie value to set, and the
    /// session.
    pub fn start(&self, operator: &str) -> (String, SignedIn) {
        let key = B64URL.encode(random_bytes::<32>());
        let signed_in = SignedIn {
            operator: operator.to_owned(),
            form_token: B64URL.encode(random_bytes::<24>()),
        };
        let now = (self.clock)();
        let mut sessions = self.sessions.lock().expect("console sessions lock");
        sessions.retain(|_, e| live(e, now));
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, e)| e.started)
                .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            hash(&key),
            Entry {
                signed_in: signed_in.clone(),
                started: now,
                last_seen: now,
            },
        );
        (key, signed_in)
    }

    /// The session a cookie value names, if it is live; the request counts
    /// as activity.
    pub fn find(&self, key: &str) -> Option<SignedIn> {
        let now = (self.clock)();
        let mut sessions = self.sessions.lock().expect("console sessions lock");
        let h = hash(key);
        match sessions.get_mut(&h) {
            Some(e) if live(e, now) => {
                e.last_seen = now;
                Some(e.signed_in.clone())
            }
            Some(_) => {
                sessions.remove(&h);
                None
            }
            None => None,
        }
    }

    /// Ends the session a cookie value names.
    pub fn end(&self, key: &str) {
        self.sessions
            .lock()
            .expect("console sessions lock")
            .remove(&hash(key));
    }
}

fn live(e: &Entry, now: Nanos) -> bool {
    let since = |t: Nanos| Duration::from_nanos(now.saturating_sub(t));
    since(e.last_seen) < IDLE && since(e.started) < ABSOLUTE
}

fn hash(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// Whether two form tokens are equal, in time independent of where they
/// differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn clock() -> (Arc<AtomicU64>, ConsoleSessions) {
        let now = Arc::new(AtomicU64::new(1_000));
        let c = now.clone();
        (
            now,
            ConsoleSessions::new(Arc::new(move || c.load(Ordering::SeqCst))),
        )
    }

    fn advance(now: &AtomicU64, by: Duration) {
        now.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let (now, sessions) = clock();
        let (key, signed_in) = sessions.start("alice");
        assert_eq!(sessions.find(&key), Some(signed_in.clone()));
        advance(&now, IDLE - Duration::from_secs(1));
        assert_eq!(sessions.find(&key), Some(signed_in));
        advance(&now, IDLE - Duration::from_secs(1));
        assert!(sessions.find(&key).is_some(), "activity kept it alive");
        advance(&now, IDLE);
        assert_eq!(sessions.find(&key), None);
    }

    #[test]
    fn a_session_ends_at_its_absolute_expiry_however_busy() {
        let (now, sessions) = clock();
        let (key, _) = sessions.start("alice");
        let step = Duration::from_secs(20 * 60);
        let mut elapsed = Duration::ZERO;
        while elapsed + step < ABSOLUTE {
            advance(&now, step);
            elapsed += step;
            assert!(sessions.find(&key).is_some());
        }
        advance(&now, step);
        assert_eq!(sessions.find(&key), None);
    }

    #[test]
    fn sign_out_ends_a_session_and_keys_are_not_guessable() {
        let (_, sessions) = clock();
        let (a, signed_a) = sessions.start("alice");
        let (b, signed_b) = sessions.start("bob");
        assert_ne!(a, b);
        assert_ne!(signed_a.form_token, signed_b.form_token);
        assert_eq!(sessions.find("not-a-key"), None);
        sessions.end(&a);
        assert_eq!(sessions.find(&a), None);
        assert!(sessions.find(&b).is_some());
    }

    #[test]
    fn form_tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }
}
