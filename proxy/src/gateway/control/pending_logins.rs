//! Connections that have not logged in yet, counted per client address.
//!
//! `[listen] max_connections` caps all connections; one address opening
//! hundreds that never log in could still take them all and keep every
//! agent out. So before login each address may hold only so many
//! connections; a connection stops counting once it has logged in, or when
//! it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The per-address counts and their cap.
#[derive(Debug)]
pub struct PendingLogins {
    per_address: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PendingLogins {
    /// At most `per_address` connections per address before login.
    pub fn new(per_address: usize) -> Arc<PendingLogins> {
        Arc::new(PendingLogins {
            per_address,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The cap, for messages.
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    /// Counts a new connection from `ip`; `None` when the address is at
    /// its cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<PendingLogin>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        Some(Arc::new(PendingLogin {
            logins: self.clone(),
            ip,
            done: AtomicBool::new(false),
        }))
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// One connection not logged in yet; stops counting at login or drop.
#[derive(Debug)]
pub struct PendingLogin {
    logins: Arc<PendingLogins>,
    ip: IpAddr,
    done: AtomicBool,
}

impl PendingLogin {
    /// The connection logged in: it no longer counts.
    pub fn logged_in(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            self.logins.release(self.ip);
        }
    }

    /// Whether it has logged in.
    pub fn is_logged_in(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        self.logged_in();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_capped_until_its_connections_log_in_or_end() {
        let logins = PendingLogins::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = logins.admit(a).unwrap();
        let second = logins.admit(a).unwrap();
        assert!(logins.admit(a).is_none());
        assert!(
            logins.admit(b).is_some(),
            "other addresses are not affected"
        );
        first.logged_in();
        assert!(first.is_logged_in());
        let third = logins.admit(a).expect("a login frees a place");
        assert!(logins.admit(a).is_none());
        drop(second);
        assert!(
            logins.admit(a).is_some(),
            "an ended connection frees a place"
        );
        first.logged_in();
        drop(first);
        drop(third);
        assert!(logins.counts.lock().unwrap().len() <= 1);
    }
}
