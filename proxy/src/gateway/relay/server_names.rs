//! What PostgreSQL holds under each prepared-statement and portal name,
//! learned from its own answers rather than from the client's messages.
//!
//! A Parse, Bind or Close the gateway forwards may succeed, fail, or be
//! skipped (after an error PostgreSQL skips every message until Sync). The
//! gateway cannot know which until PostgreSQL answers (ParseComplete,
//! BindComplete, CloseComplete, ErrorResponse, or the ReadyForQuery that
//! ends a stretch in which the message got no answer). So each name keeps
//! the versions forwarded for it, newest first, each with the [`Outcome`]
//! of the message that made it, and a lookup answers what the name will
//! hold when PostgreSQL reaches a message sent now:
//!
//! * a version whose message succeeded is what the name holds;
//! * one whose message was skipped, or failed in a way that leaves the
//!   name as it was, gives way to the version before it;
//! * one not yet answered, made in the current stretch (no Sync since), is
//!   taken as made: if its message fails, PostgreSQL skips the new message
//!   too;
//! * one not yet answered from an earlier stretch is [`Lookup::Unsure`]: the
//!   caller waits for its outcome (its Sync has gone upstream, so the answer
//!   is coming) and looks again.
//!
//! Pure: no I/O; the relay resolves outcomes as answers arrive.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// How PostgreSQL dealt with one forwarded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It did what was asked (ParseComplete, BindComplete, CloseComplete).
    Done,
    /// It answered with an error.
    Failed,
    /// It never ran: an earlier error made PostgreSQL skip to Sync.
    Skipped,
}

/// The outcome of one forwarded message, set once when PostgreSQL's answer
/// arrives, awaited by whoever needs it.
#[derive(Debug)]
pub struct Outcome {
    /// The stretch of messages (between Syncs) it was sent in.
    stretch: u64,
    answer: OnceLock<Answer>,
    answered: tokio::sync::Notify,
}

impl Outcome {
    /// The outcome of a message sent in stretch `stretch`.
    pub fn new(stretch: u64) -> Arc<Outcome> {
        Arc::new(Outcome {
            stretch,
            answer: OnceLock::new(),
            answered: tokio::sync::Notify::new(),
        })
    }

    /// Records PostgreSQL's answer (the first one counts) and wakes waiters.
    pub fn resolve(&self, answer: Answer) {
        let _ = self.answer.set(answer);
        self.answered.notify_waiters();
    }

    /// The answer, if it has come.
    pub fn answer(&self) -> Option<Answer> {
        self.answer.get().copied()
    }

    /// Waits for the answer.
    pub async fn wait(&self) -> Answer {
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if let Some(answer) = self.answer() {
                return answer;
            }
            answered.await;
        }
    }
}

/// What a name will hold when PostgreSQL reaches a message sent now.
#[derive(Debug)]
pub enum Lookup<T> {
    /// This.
    Found(Arc<T>),
    /// Nothing: never made, closed, or its making failed.
    Missing,
    /// Depends on a message of an earlier stretch not answered yet: wait for
    /// this outcome, then look again.
    Unsure(Arc<Outcome>),
}

/// What a failed message leaves under its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// What the name held before (a named Parse: PostgreSQL refuses to
    /// replace an existing statement, and a failed Close closes nothing).
    KeepsPrevious,
    /// Nothing (an unnamed Parse drops the old unnamed statement before it
    /// parses; an error aborts the transaction, which drops every portal).
    LeavesNothing,
}

#[derive(Debug)]
struct Version<T> {
    /// `None`: the name was closed.
    value: Option<Arc<T>>,
    outcome: Arc<Outcome>,
    on_failure: OnFailure,
    /// What a skip leaves (see [`Names::set`]).
    on_skip: OnFailure,
    previous: Option<Box<Version<T>>>,
}

impl<T> Version<T> {
    /// Whether nothing before this version can matter any more.
    fn settles(&self) -> bool {
        match self.outcome.answer() {
            Some(Answer::Done) => true,
            Some(Answer::Failed) => self.on_failure == OnFailure::LeavesNothing,
            Some(Answer::Skipped) => self.on_skip == OnFailure::LeavesNothing,
            None => false,
        }
    }
}

/// The statements or the portals of one session, as PostgreSQL holds them.
#[derive(Debug)]
pub struct Names<T> {
    names: HashMap<String, Version<T>>,
}

impl<T> Default for Names<T> {
    fn default() -> Self {
        Names {
            names: HashMap::new(),
        }
    }
}

impl<T> Names<T> {
    /// A message making `name` hold `value` was forwarded. `on_failure` and
    /// `on_skip` say what the name holds if it fails or is skipped.
    pub fn set(
        &mut self,
        name: &str,
        value: T,
        outcome: Arc<Outcome>,
        on_failure: OnFailure,
        on_skip: OnFailure,
    ) {
        self.push(name, Some(Arc::new(value)), outcome, on_failure, on_skip);
    }

    /// A Close of `name` was forwarded.
    pub fn close(&mut self, name: &str, outcome: Arc<Outcome>) {
        self.push(
            name,
            None,
            outcome,
            OnFailure::KeepsPrevious,
            OnFailure::KeepsPrevious,
        );
    }

    /// Forgets `name` without a message upstream (it is gone in PostgreSQL
    /// for another reason, e.g. an SQL CLOSE of a cursor).
    pub fn forget(&mut self, name: &str) {
        self.names.remove(name);
    }

    fn push(
        &mut self,
        name: &str,
        value: Option<Arc<T>>,
        outcome: Arc<Outcome>,
        on_failure: OnFailure,
        on_skip: OnFailure,
    ) {
        let mut previous = self.names.remove(name).map(Box::new);
        if let Some(p) = previous.as_mut() {
            prune(p);
        }
        self.names.insert(
            name.to_owned(),
            Version {
                value,
                outcome,
                on_failure,
                on_skip,
                previous,
            },
        );
    }

    /// What `name` holds for a message sent now, in stretch `current`.
    pub fn lookup(&self, name: &str, current: u64) -> Lookup<T> {
        let mut version = self.names.get(name);
        while let Some(v) = version {
            let fallback = match v.outcome.answer() {
                Some(Answer::Done) => return found(v),
                None if v.outcome.stretch == current => return found(v),
                None => return Lookup::Unsure(v.outcome.clone()),
                Some(Answer::Failed) => v.on_failure,
                Some(Answer::Skipped) => v.on_skip,
            };
            if fallback == OnFailure::LeavesNothing {
                return Lookup::Missing;
            }
            version = v.previous.as_deref();
        }
        Lookup::Missing
    }

    /// Whether `name` may hold something in PostgreSQL: any version made
    /// under it and not settled as gone. For refusals, which must not miss.
    pub fn may_hold(&self, name: &str) -> bool {
        let mut version = self.names.get(name);
        while let Some(v) = version {
            if v.value.is_some() {
                return true;
            }
            if v.settles() {
                return false;
            }
            version = v.previous.as_deref();
        }
        false
    }

    /// Whether any name may hold something (see [`Names::may_hold`]).
    pub fn any(&self) -> bool {
        self.names.keys().any(|n| self.may_hold(n))
    }
}

fn found<T>(v: &Version<T>) -> Lookup<T> {
    match &v.value {
        Some(value) => Lookup::Found(value.clone()),
        None => Lookup::Missing,
    }
}

/// Drops the versions behind the first one that settles the name: no
/// lookup can reach them, and a client re-parsing one name forever must not
/// grow the chain.
fn prune<T>(version: &mut Version<T>) {
    let mut v = version;
    loop {
        if v.settles() {
            v.previous = None;
            return;
        }
        match v.previous.as_deref_mut() {
            Some(p) => v = p,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: OnFailure = OnFailure::KeepsPrevious;
    const NOTHING: OnFailure = OnFailure::LeavesNothing;

    fn value(l: Lookup<&'static str>) -> Option<&'static str> {
        match l {
            Lookup::Found(v) => Some(*v),
            Lookup::Missing => None,
            Lookup::Unsure(_) => panic!("unsure"),
        }
    }

    #[test]
    fn an_unanswered_message_of_the_current_stretch_counts_as_done() {
        let mut names = Names::default();
        names.set("s", "SELECT 1", Outcome::new(0), KEEP, KEEP);
        assert_eq!(value(names.lookup("s", 0)), Some("SELECT 1"));
        assert_eq!(value(names.lookup("t", 0)), None);
    }

    #[test]
    fn an_unanswered_message_of_an_earlier_stretch_is_unsure_until_answered() {
        let mut names = Names::default();
        let parse = Outcome::new(0);
        names.set("s", "SELECT 1", parse.clone(), KEEP, KEEP);
        assert!(matches!(names.lookup("s", 1), Lookup::Unsure(_)));
        parse.resolve(Answer::Done);
        assert_eq!(value(names.lookup("s", 1)), Some("SELECT 1"));
    }

    /// asyncpg's statement cache: Parse, then an Execute in the same stretch
    /// is cancelled. The Parse was answered before the error: the statement
    /// exists, whatever failed after it.
    #[test]
    fn an_error_after_a_parse_complete_leaves_the_statement() {
        let mut names = Names::default();
        let parse = Outcome::new(0);
        names.set("__asyncpg_stmt_1__", "SELECT $1", parse.clone(), KEEP, KEEP);
        parse.resolve(Answer::Done);
        // (the Execute after it failed: nothing about the name changes)
        assert_eq!(
            value(names.lookup("__asyncpg_stmt_1__", 3)),
            Some("SELECT $1")
        );
    }

    #[test]
    fn a_skipped_parse_leaves_the_statement_before_it() {
        let mut names = Names::default();
        let first = Outcome::new(0);
        names.set("", "SELECT 'old'", first.clone(), NOTHING, KEEP);
        first.resolve(Answer::Done);
        let second = Outcome::new(1);
        names.set("", "DELETE FROM orders", second.clone(), NOTHING, KEEP);
        second.resolve(Answer::Skipped);
        assert_eq!(value(names.lookup("", 2)), Some("SELECT 'old'"));
    }

    #[test]
    fn a_failed_unnamed_parse_leaves_nothing_and_a_failed_named_one_the_old() {
        let mut names = Names::default();
        for (name, on_failure, left) in [("", NOTHING, None), ("s", KEEP, Some("SELECT 'old'"))] {
            let first = Outcome::new(0);
            names.set(name, "SELECT 'old'", first.clone(), on_failure, KEEP);
            first.resolve(Answer::Done);
            let second = Outcome::new(1);
            names.set(name, "SELEC oops", second.clone(), on_failure, KEEP);
            second.resolve(Answer::Failed);
            assert_eq!(value(names.lookup(name, 2)), left, "{name:?}");
        }
    }

    #[test]
    fn close_hides_the_name_unless_it_failed_or_was_skipped() {
        let mut names = Names::default();
        let parse = Outcome::new(0);
        names.set("s", "SELECT 1", parse.clone(), KEEP, KEEP);
        parse.resolve(Answer::Done);
        let close = Outcome::new(1);
        names.close("s", close.clone());
        assert_eq!(value(names.lookup("s", 1)), None);
        assert!(names.may_hold("s"), "not settled yet");
        close.resolve(Answer::Skipped);
        assert_eq!(value(names.lookup("s", 2)), Some("SELECT 1"));
        let close = Outcome::new(2);
        names.close("s", close.clone());
        close.resolve(Answer::Done);
        assert_eq!(value(names.lookup("s", 3)), None);
        assert!(!names.may_hold("s"));
        assert!(!names.any());
    }

    #[test]
    fn portals_do_not_survive_an_error() {
        let mut names = Names::default();
        let bind = Outcome::new(0);
        names.set("p", "SELECT 1", bind.clone(), NOTHING, NOTHING);
        bind.resolve(Answer::Done);
        let rebind = Outcome::new(1);
        names.set("p", "SELECT 2", rebind.clone(), NOTHING, NOTHING);
        rebind.resolve(Answer::Skipped);
        assert_eq!(value(names.lookup("p", 2)), None);
    }

    #[test]
    fn settled_versions_are_pruned() {
        let mut names = Names::default();
        for i in 0..1000 {
            let o = Outcome::new(i);
            names.set("", "SELECT 1", o.clone(), NOTHING, KEEP);
            o.resolve(Answer::Done);
        }
        let mut depth = 0;
        let mut v = names.names.get("");
        while let Some(x) = v {
            depth += 1;
            v = x.previous.as_deref();
        }
        assert!(depth <= 2, "{depth}");
    }

    #[tokio::test]
    async fn waiting_ends_when_the_answer_comes() {
        let o = Outcome::new(0);
        let waiter = {
            let o = o.clone();
            tokio::spawn(async move { o.wait().await })
        };
        tokio::task::yield_now().await;
        o.resolve(Answer::Failed);
        o.resolve(Answer::Done);
        assert_eq!(waiter.await.unwrap(), Answer::Failed);
    }
}
