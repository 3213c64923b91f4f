//! Rebuilding the gateway's state from its ledger.

use std::path::Path;

use anyhow::{Context, Result};
use gatehouse_engine::state::GatewayState;
use gatehouse_ledger::LedgerReader;

/// A point in the log: a sequence number, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Up to and including this event.
    Seq(u64),
    /// Up to the last event whose timestamp is at or before this (Unix ns).
    Time(u64),
}

impl std::str::FromStr for At {
    type Err = anyhow::Error;

    /// A sequence number (`1234`) or an RFC 3339 time (`2026-11-25T10:00:00Z`).
    fn from_str(s: &str) -> Result<At> {
        if let Ok(seq) = s.parse::<u64>() {
            return Ok(At::Seq(seq));
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{s:?} is neither a sequence number nor an RFC 3339 time such as 2026-11-25T10:00:00Z"))?;
        let ns = t.unix_timestamp_nanos();
        if ns < 0 {
            anyhow::bail!("{s:?} is before 1970");
        }
        Ok(At::Time(ns as u64))
    }
}

/// The state as of `at`: every event up to that point folded in.
pub fn state_at(path: &Path, at: At) -> Result<GatewayState> {
    let reader = LedgerReader::open(path)?;
    let end = match at {
        At::Seq(seq) => seq.saturating_add(1),
        At::Time(ts) => reader.first_at_or_after(ts.saturating_add(1))?,
    };
    let mut state = GatewayState::default();
    for stored in reader.events(0..end) {
        let stored = stored.with_context(|| format!("cannot replay {}", path.display()))?;
        state.apply(&stored.event);
    }
    Ok(state)
}

/// Replays every event of the ledger at `path` into a [`GatewayState`].
pub fn load_state(path: &Path) -> Result<GatewayState> {
    let reader = LedgerReader::open(path)?;
    let mut state = GatewayState::default();
    for stored in reader.events(0..u64::MAX) {
        let stored = stored.with_context(|| format!("cannot replay {}", path.display()))?;
        state.apply(&stored.event);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_parses_sequence_numbers_and_rfc3339_times() {
        assert_eq!("17".parse::<At>().unwrap(), At::Seq(17));
        assert_eq!(
            "1970-01-01T00:00:01.5Z".parse::<At>().unwrap(),
            At::Time(1_500_000_000)
        );
        assert_eq!(
            "1970-01-01T01:00:01+01:00".parse::<At>().unwrap(),
            At::Time(1_000_000_000)
        );
        assert!("yesterday".parse::<At>().is_err());
    }

    #[test]
    fn state_at_an_event_and_at_an_instant() {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::init::init(&dir.path().join("gh"), Some("gatehouse.test/state")).unwrap();
        let config = crate::config::Config::load(&out.config).unwrap();
        crate::commands::identity_create_offline(&config, "bot", None, "t".into()).unwrap();
        let reader = LedgerReader::open(&config.ledger.path).unwrap();
        let created = reader.len().unwrap() - 1;
        let before = state_at(&config.ledger.path, At::Seq(created - 1)).unwrap();
        assert!(before.identities.get("bot").is_none());
        assert_eq!(before.events, created);
        let after = state_at(&config.ledger.path, At::Seq(created)).unwrap();
        assert!(after.identities.get("bot").is_some());
        let created_at = reader.get(created).unwrap().unwrap().event.ts;
        assert_eq!(
            state_at(&config.ledger.path, At::Time(created_at)).unwrap(),
            after
        );
        assert_eq!(
            state_at(&config.ledger.path, At::Time(created_at - 1)).unwrap(),
            before
        );
    }
}
