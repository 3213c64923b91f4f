//! One-time codes that link a chat user to an operator.
//!
//! A chat button press is trusted as coming from a chat user (the chat
//! service authenticated them), but the gateway must still learn which
//! operator that user is. The chat service shows an unlinked user, and only
//! them, a console link carrying a fresh code; the operator opens it while
//! signed in to the console and confirms, which records `ChatUserLinked`.
//! Both sides are thus proven: the chat service vouches for the user, the
//! console session for the operator. Codes are kept in memory only (a
//! restart voids them), as their BLAKE3 hash, for [`TTL`], and work once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use gatehouse_ledger::event::Nanos;
use gatehouse_ledger::writer::Clock;

use crate::gateway::control::scram::random_bytes;

/// How long a link code works.
pub const TTL: Duration = Duration::from_secs(10 * 60);

/// Most codes outstanding at once; the oldest go first.
const MAX_CODES: usize = 1_024;

/// A chat user waiting to be linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    /// The chat service (`slack`).
    pub service: String,
    /// The service's workspace (Slack's team id).
    pub workspace: String,
    /// The user's id there.
    pub user: String,
    /// The user's name as the service showed it.
    pub display: Option<String>,
}

/// The outstanding codes, by hash.
pub struct ChatLinkCodes {
    clock: Clock,
    codes: Mutex<HashMap<[u8; 32], (ChatUser, Nanos)>>,
}

impl ChatLinkCodes {
    /// No code yet; time from `clock`.
    pub fn new(clock: Clock) -> Self {
        ChatLinkCodes {
            clock,
            codes: Mutex::new(HashMap::new()),
        }
    }

    /// A new code for `user`, valid for [`TTL`]. Earlier codes of the same
    /// user stay valid until they expire.
    pub fn issue(&self, user: ChatUser) -> String {
        let code = B64URL.encode(random_bytes::<32>());
        let now = (self.clock)();
        let mut codes = self.codes.lock().expect("chat link codes");
        codes.retain(|_, (_, expires)| *expires > now);
        if codes.len() >= MAX_CODES {
            if let Some(oldest) = codes.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| *k) {
                codes.remove(&oldest);
            }
        }
        codes.insert(hash(&code), (user, now + TTL.as_nanos() as u64));
        code
    }

    /// The user a code was issued to, if it is still valid (the code stays).
    pub fn peek(&self, code: &str) -> Option<ChatUser> {
        let now = (self.clock)();
        let codes = self.codes.lock().expect("chat link codes");
        codes
            .get(&hash(code))
            .filter(|(_, expires)| *expires > now)
            .map(|(u, _)| u.clone())
    }

    /// Uses a code up: the user it was issued to, if it was still valid.
    pub fn take(&self, code: &str) -> Option<ChatUser> {
        let now = (self.clock)();
        let mut codes = self.codes.lock().expect("chat link codes");
        codes
            .remove(&hash(code))
            .filter(|(_, expires)| *expires > now)
            .map(|(u, _)| u)
    }
}

fn hash(code: &str) -> [u8; 32] {
    *blake3::hash(code.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn user(id: &str) -> ChatUser {
        ChatUser {
            service: "slack".into(),
            workspace: "T1".into(),
            user: id.into(),
            display: None,
        }
    }

    #[test]
    fn a_code_works_once_and_only_within_its_time() {
        let now = Arc::new(AtomicU64::new(1_000));
        let clock_now = now.clone();
        let codes = ChatLinkCodes::new(Arc::new(move || clock_now.load(Ordering::SeqCst)));
        let first = codes.issue(user("U1"));
        let second = codes.issue(user("U2"));
        assert_ne!(first, second);
        assert!(first.len() >= 43, "256 random bits");
        assert_eq!(codes.peek(&first), Some(user("U1")));
        assert_eq!(codes.take(&first), Some(user("U1")));
        assert_eq!(codes.take(&first), None, "used up");
        assert_eq!(codes.peek("not-a-code"), None);
        now.fetch_add(TTL.as_nanos() as u64, Ordering::SeqCst);
        assert_eq!(codes.peek(&second), None, "expired");
        assert_eq!(codes.take(&second), None);
    }
}
