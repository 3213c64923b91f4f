//! Policy, decisions and projections: pure functions of ledger events.
