//! Operators of the admin API and their roles, as a fold over events.
//!
//! An operator authenticates with a bearer token; the ledger records only the
//! token's BLAKE3 hash, so a copy of the ledger does not grant access.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gatehouse_ledger::cbor::{Bytes, Cbor, Dec, DecodeError, Enc};
use gatehouse_ledger::cbor_record;
use gatehouse_ledger::event::{ChatUserLinked, EventBody};
use serde::Serialize;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Policy, identities, credentials, operators.
    Admin,
    /// Approve or deny held statements.
    Approver,
    /// Block, unblock, kill sessions.
    Responder,
    /// Read sessions, approvals, state, replays and exports.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Approver, Role::Responder, Role::Auditor];

    /// The role's name in events and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Responder => "responder",
            Role::Auditor => "auditor",
        }
    }

    /// The role called `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// The operator's name, recorded with every action.
    pub name: String,
    /// Granted roles; names not understood by this version are ignored.
    pub roles: BTreeSet<Role>,
    /// Who added the operator.
    pub added_by: String,
    /// Chat users whose button presses act as this operator, in order.
    pub chat: Vec<ChatLink>,
}

/// A chat user linked to an operator (`ChatUserLinked`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ChatLink {
    /// The chat service (`slack`).
    pub service: String,
    /// The service's workspace (Slack's team id).
    pub workspace: String,
    /// The user's id there.
    pub user: String,
    /// The user's name as shown when linked.
    pub display: Option<String>,
}

impl ChatLink {
    fn key(&self) -> ChatKey {
        (
            self.service.clone(),
            self.workspace.clone(),
            self.user.clone(),
        )
    }
}

/// (service, workspace, user): how a chat user is looked up.
type ChatKey = (String, String, String);

/// Every operator, and the index from token hash to operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Operators {
    by_name: BTreeMap<String, Operator>,
    #[serde(skip)]
    by_token: HashMap<Vec<u8>, String>,
    #[serde(skip)]
    by_chat: HashMap<ChatKey, String>,
}

/// The hash under which a token is recorded.
pub fn token_hash(token: &str) -> Vec<u8> {
    blake3::hash(token.as_bytes()).as_bytes().to_vec()
}

impl Operators {
    /// Folds one event in. Adding an existing operator replaces its roles
    /// and token (how a token is rotated).
    /// A removed operator's chat links go with it; a chat user linked
    /// anew leaves its older link.
    pub fn apply(&mut self, body: &EventBody) {
        match body {
            EventBody::OperatorRemoved(e) => {
                self.by_token.retain(|_, name| name != &e.operator);
                self.by_chat.retain(|_, name| name != &e.operator);
                self.by_name.remove(&e.operator);
            }
            EventBody::OperatorAdded(e) => {
                self.by_token.retain(|_, name| name != &e.operator);
                self.by_token
                    .insert(e.token_hash.0.clone(), e.operator.clone());
                let chat = self
                    .by_name
                    .remove(&e.operator)
                    .map(|o| o.chat)
                    .unwrap_or_default();
                self.by_name.insert(
                    e.operator.clone(),
                    Operator {
                        name: e.operator.clone(),
                        roles: e.roles.iter().filter_map(|r| Role::parse(r)).collect(),
                        added_by: e.added_by.clone(),
                        chat,
                    },
                );
            }
            EventBody::ChatUserLinked(e) => self.link(e),
            EventBody::ChatUserUnlinked(e) => {
                self.unlink(&(e.service.clone(), e.workspace.clone(), e.user.clone()))
            }
            _ => {}
        }
    }

    fn link(&mut self, e: &ChatUserLinked) {
        let link = ChatLink {
            service: e.service.clone(),
            workspace: e.workspace.clone(),
            user: e.user.clone(),
            display: e.display.clone(),
        };
        self.unlink(&link.key());
        if let Some(operator) = self.by_name.get_mut(&e.operator) {
            self.by_chat.insert(link.key(), e.operator.clone());
            operator.chat.push(link);
            operator.chat.sort();
        }
    }

    fn unlink(&mut self, key: &ChatKey) {
        if let Some(name) = self.by_chat.remove(key) {
            if let Some(operator) = self.by_name.get_mut(&name) {
                operator.chat.retain(|l| &l.key() != key);
            }
        }
    }

    /// The operator a chat user acts as, if it is linked to one.
    pub fn chat_operator(&self, service: &str, workspace: &str, user: &str) -> Option<&Operator> {
        let key = (service.to_owned(), workspace.to_owned(), user.to_owned());
        self.by_name.get(self.by_chat.get(&key)?)
    }

    /// The operator holding `token`, if any.
    pub fn authenticate(&self, token: &str) -> Option<&Operator> {
        let name = self.by_token.get(&token_hash(token))?;
        self.by_name.get(name)
    }

    /// An operator by name.
    pub fn get(&self, name: &str) -> Option<&Operator> {
        self.by_name.get(name)
    }

    /// The names of the operators holding `role`, in name order.
    pub fn holding(&self, role: Role) -> Vec<&str> {
        self.by_name
            .values()
            .filter(|o| o.roles.contains(&role))
            .map(|o| o.name.as_str())
            .collect()
    }

    /// Whether no operator exists yet.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many operators exist.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every operator, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Operator> {
        self.by_name.values()
    }
}

// Snapshot encodings (crate::snapshot).

/// Roles as codes 0 admin, 1 approver, 2 responder, 3 auditor (the order of
/// [`Role::ALL`], so a set of roles encodes in increasing order).
impl Cbor for Role {
    fn encode(&self, enc: &mut Enc) {
        let code = Role::ALL.iter().position(|r| r == self).unwrap_or(0);
        enc.uint(code as u64);
    }

    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let offset = dec.offset();
        let code = dec.uint()?;
        usize::try_from(code)
            .ok()
            .and_then(|c| Role::ALL.get(c).copied())
            .ok_or(DecodeError::Unexpected {
                offset,
                expected: "a role code (0 to 3)",
            })
    }
}

cbor_record!(Operator {
    0 => name,
    1 => roles,
    2 => added_by,
    3 => chat,
});

cbor_record!(ChatLink {
    0 => service,
    1 => workspace,
    2 => user,
    3 => display,
});

/// `{0: operators by name, 1: [token hash, operator] pairs by hash}`.
impl Cbor for Operators {
    fn encode(&self, enc: &mut Enc) {
        let tokens: BTreeMap<Bytes, &String> = self
            .by_token
            .iter()
            .map(|(hash, name)| (Bytes(hash.clone()), name))
            .collect();
        enc.map(2);
        enc.uint(0);
        self.by_name.encode(enc);
        enc.uint(1);
        enc.array(tokens.len());
        for (hash, name) in tokens {
            enc.array(2);
            hash.encode(enc);
            name.encode(enc);
        }
    }

    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let offset = dec.offset();
        if dec.map()? != 2 {
            return Err(DecodeError::Unexpected {
                offset,
                expected: "the field count of Operators",
            });
        }
        dec.key(0)?;
        let by_name = BTreeMap::decode(dec)?;
        dec.key(1)?;
        let tokens = BTreeMap::<Bytes, String>::decode(dec)?;
        let by_chat = by_name
            .values()
            .flat_map(|o: &Operator| o.chat.iter().map(|l| (l.key(), o.name.clone())))
            .collect();
        Ok(Operators {
            by_name,
            by_token: tokens.into_iter().map(|(h, n)| (h.0, n)).collect(),
            by_chat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::cbor::Bytes;
    use gatehouse_ledger::event::{ChatUserUnlinked, OperatorAdded, OperatorRemoved};

    fn added(name: &str, roles: &[&str], token: &str) -> EventBody {
        OperatorAdded {
            operator: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            token_hash: Bytes(token_hash(token)),
            added_by: "gatehouse-init".into(),
        }
        .into()
    }

    #[test]
    fn tokens_authenticate_their_operator_and_rotation_retires_the_old_one() {
        let mut ops = Operators::default();
        ops.apply(&added("alice", &["admin", "auditor", "astronaut"], "t1"));
        ops.apply(&added("bob", &["responder"], "t2"));
        let alice = ops.authenticate("t1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.roles, BTreeSet::from([Role::Admin, Role::Auditor]));
        assert!(ops.authenticate("t3").is_none());
        ops.apply(&added("alice", &["auditor"], "t4"));
        assert!(
            ops.authenticate("t1").is_none(),
            "the old token no longer works"
        );
        assert_eq!(
            ops.authenticate("t4").unwrap().roles,
            BTreeSet::from([Role::Auditor])
        );
        assert_eq!(ops.authenticate("t2").unwrap().name, "bob");
    }

    fn linked(operator: &str, user: &str) -> EventBody {
        ChatUserLinked {
            operator: operator.into(),
            service: "slack".into(),
            workspace: "T1".into(),
            user: user.into(),
            display: Some(format!("{user}'s name")),
            linked_by: operator.into(),
        }
        .into()
    }

    #[test]
    fn a_chat_user_acts_for_one_operator_until_unlinked_or_the_operator_goes() {
        let mut ops = Operators::default();
        ops.apply(&added("alice", &["approver"], "t1"));
        ops.apply(&added("bob", &["approver"], "t2"));
        ops.apply(&linked("nobody", "U0"));
        assert!(
            ops.chat_operator("slack", "T1", "U0").is_none(),
            "a link to an unknown operator links nothing"
        );
        ops.apply(&linked("alice", "U1"));
        assert_eq!(
            ops.chat_operator("slack", "T1", "U1").unwrap().name,
            "alice"
        );
        assert!(
            ops.chat_operator("slack", "T2", "U1").is_none(),
            "another workspace"
        );
        // Relinked to bob: alice no longer has it.
        ops.apply(&linked("bob", "U1"));
        assert_eq!(ops.chat_operator("slack", "T1", "U1").unwrap().name, "bob");
        assert!(ops.get("alice").unwrap().chat.is_empty());
        // A token rotation keeps the links; a removal drops them.
        ops.apply(&added("bob", &["approver"], "t3"));
        assert_eq!(ops.chat_operator("slack", "T1", "U1").unwrap().name, "bob");
        let encoded = gatehouse_ledger::cbor::to_vec(&ops);
        let decoded: Operators = gatehouse_ledger::cbor::decode_canonical(&encoded).unwrap();
        assert_eq!(decoded, ops);
        assert_eq!(
            decoded.chat_operator("slack", "T1", "U1").unwrap().name,
            "bob"
        );
        ops.apply(&linked("alice", "U2"));
        ops.apply(
            &ChatUserUnlinked {
                operator: "alice".into(),
                service: "slack".into(),
                workspace: "T1".into(),
                user: "U2".into(),
                unlinked_by: "alice".into(),
                reason: "left the team".into(),
            }
            .into(),
        );
        assert!(ops.chat_operator("slack", "T1", "U2").is_none());
        ops.apply(
            &OperatorRemoved {
                operator: "bob".into(),
                removed_by: "alice".into(),
                reason: "gone".into(),
            }
            .into(),
        );
        assert!(ops.chat_operator("slack", "T1", "U1").is_none());
    }
}
