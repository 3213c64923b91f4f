//! The gateway's state as one fold over ledger events.
//!
//! There is no other store: at start-up the gateway replays the ledger
//! through [`GatewayState::apply`], and every later change is an event
//! folded in the same way.

use gatehouse_ledger::event::EventBody;

use crate::identities::Identities;

/// Everything the gateway derives from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayState {
    /// Identities and their credentials.
    pub identities: Identities,
    /// The source of the policy in force (the last applied), if any.
    pub policy_source: Option<String>,
    /// The highest session number used, so new sessions never reuse one.
    pub last_session: u64,
}

impl GatewayState {
    /// Folds one event in.
    pub fn apply(&mut self, body: &EventBody) {
        self.identities.apply(body);
        if let EventBody::PolicyChanged(p) = body {
            self.policy_source = Some(p.source.clone());
        }
        if let Some(s) = body.session() {
            self.last_session = self.last_session.max(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::cbor::Bytes;
    use gatehouse_ledger::event::{PolicyChanged, SessionClosed};

    #[test]
    fn last_policy_wins_and_sessions_are_counted() {
        let mut s = GatewayState::default();
        for src in ["a", "b"] {
            s.apply(
                &PolicyChanged {
                    operator: "o".into(),
                    source: src.into(),
                    digest: Bytes(vec![]),
                }
                .into(),
            );
        }
        s.apply(
            &SessionClosed {
                session: 41,
                identity: "x".into(),
                reason: "r".into(),
                statements: 0,
            }
            .into(),
        );
        assert_eq!(s.policy_source.as_deref(), Some("b"));
        assert_eq!(s.last_session, 41);
    }
}
