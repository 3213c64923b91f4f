//! State shared by every session of one gateway process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use gatehouse_engine::classify::classify;
use gatehouse_engine::identities::Identities;
use gatehouse_engine::policy::Policy;
use gatehouse_engine::Classification;
use gatehouse_ledger::Ledger;

use crate::config::Target;

/// Classifications of recently seen SQL texts. The simple protocol and
/// unnamed extended-protocol statements re-send the same text again and
/// again; parsing costs 10-50 µs, a lookup well under one.
#[derive(Default)]
pub struct VerdictCache {
    map: Mutex<HashMap<String, Arc<Classification>>>,
}

/// Most entries kept; the cache is cleared when full (cheap, and a burst of
/// one-off statements cannot grow it without bound).
const CACHE_ENTRIES: usize = 10_000;

impl VerdictCache {
    /// The classification of `sql`, from the cache or freshly computed.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if let Some(c) = self.map.lock().expect("cache lock").get(sql) {
            return c.clone();
        }
        let c = Arc::new(classify(sql));
        let mut map = self.map.lock().expect("cache lock");
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(sql.to_owned(), c.clone());
        c
    }
}

/// Where a client's cancel key leads upstream.
#[derive(Clone)]
pub struct CancelTarget {
    /// The upstream target.
    pub target: Arc<Target>,
    /// The upstream (pid, secret).
    pub key: (i32, i32),
}

/// Everything sessions share.
pub struct Shared {
    /// The audit ledger writer.
    pub ledger: Ledger,
    /// Upstream targets by name.
    pub targets: HashMap<String, Arc<Target>>,
    /// Identities and credentials (projection of ledger events).
    pub identities: RwLock<Identities>,
    /// The live policy (projection of PolicyChanged events).
    pub policy: RwLock<Arc<Policy>>,
    /// Classification cache.
    pub verdicts: VerdictCache,
    /// Client cancel keys handed out by the gateway.
    pub cancel_keys: Mutex<HashMap<(i32, i32), CancelTarget>>,
    /// Largest client frame accepted.
    pub max_frame: usize,
    /// Secret for the fake SCRAM salts of unknown identities, so a login
    /// attempt cannot tell whether an identity exists.
    pub salt_secret: [u8; 32],
    next_session: AtomicU64,
    /// Set when the gateway is stopping; sessions end themselves.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Builds the shared state; sessions are numbered from `first_session`.
    pub fn new(
        ledger: Ledger,
        targets: Vec<Target>,
        identities: Identities,
        policy: Policy,
        max_frame: usize,
        first_session: u64,
    ) -> Self {
        Shared {
            ledger,
            targets: targets
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            identities: RwLock::new(identities),
            policy: RwLock::new(Arc::new(policy)),
            verdicts: VerdictCache::default(),
            cancel_keys: Mutex::new(HashMap::new()),
            max_frame,
            salt_secret: super::scram::random_bytes(),
            next_session: AtomicU64::new(first_session),
            shutdown: tokio::sync::watch::channel(false).0,
        }
    }

    /// A new session number, unique within the ledger.
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }
}
