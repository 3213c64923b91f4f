//! Rebuilding the gateway's state from its ledger.

use std::path::Path;

use anyhow::{Context, Result};
use gatehouse_engine::state::GatewayState;
use gatehouse_ledger::LedgerReader;

/// Replays every event of the ledger at `path` into a [`GatewayState`].
pub fn load_state(path: &Path) -> Result<GatewayState> {
    let reader = LedgerReader::open(path)?;
    let mut state = GatewayState::default();
    for stored in reader.events(0..u64::MAX) {
        let stored = stored.with_context(|| format!("cannot replay {}", path.display()))?;
        state.apply(&stored.event.body);
    }
    Ok(state)
}
