//! `gatehouse-verify --cluster`: a cluster's control log, then the ledger
//! of every gateway it enrolled, each against its last anchor
//! (docs/cluster.md).
//!
//! The control log is verified like any ledger, with its own key. Its
//! `GatewayEnrolled` events (kind 35: gateway, ledger key) say which
//! ledgers must exist; its `GatewayAnchored` events (kind 36: gateway,
//! checkpoint note) say what each must still hold. Each gateway's ledger
//! is then verified with its enrolled key and its latest anchor as a
//! trusted checkpoint, so a ledger that is missing, rolled back below its
//! anchor or rewritten fails, whatever it says about itself.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::cbor;
use crate::ledger::Ledger;
use crate::note::VerifierKey;
use crate::report::Report;
use crate::verify::{verify_ledger_with, VerifyError, VerifyOptions};

/// The kind code of `GatewayEnrolled`.
pub const GATEWAY_ENROLLED: u64 = 35;
/// The kind code of `GatewayAnchored`.
pub const GATEWAY_ANCHORED: u64 = 36;
/// The kind code of `GatewayRetired`.
pub const GATEWAY_RETIRED: u64 = 37;

/// One enrolled gateway and what became of its ledger.
#[derive(Debug, Clone)]
pub struct MemberReport {
    /// Its name in the cluster.
    pub gateway: String,
    /// The key its ledger is verified with, as enrolled.
    pub key: String,
    /// Its latest anchor (checkpoint note), if it anchored any.
    pub anchor: Option<String>,
    /// Its final checkpoint note, if it was retired.
    pub retired: Option<String>,
    /// The ledger verified, if one was given.
    pub ledger: Option<PathBuf>,
    /// The ledger's report, when it could be verified.
    pub report: Option<Report>,
    /// Why this member fails, if it does.
    pub failure: Option<String>,
}

/// The outcome of verifying a cluster.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// The control log's own report.
    pub control: Report,
    /// Every enrolled gateway, in order of enrolment.
    pub members: Vec<MemberReport>,
    /// Ledgers given for names the control log never enrolled.
    pub unknown: Vec<String>,
}

impl ClusterReport {
    /// Whether the control log and every enrolled gateway's ledger passed.
    pub fn is_intact(&self) -> bool {
        self.control.is_intact()
            && self.members.iter().all(|m| m.failure.is_none())
            && self.unknown.is_empty()
    }

    /// The report for a person.
    pub fn to_text(&self) -> String {
        let mut out = format!("control log: {}", self.control.to_text());
        if !out.ends_with('\n') {
            out.push('\n');
        }
        for m in &self.members {
            match &m.failure {
                None => out.push_str(&format!(
                    "gateway {}: intact, {} events{}\n",
                    m.gateway,
                    m.report.as_ref().map_or(0, |r| r.events),
                    if m.retired.is_some() {
                        ", retired, ending at its final note"
                    } else if m.anchor.is_some() {
                        ", holding its last anchor"
                    } else {
                        ", no anchor yet"
                    }
                )),
                Some(why) => out.push_str(&format!("gateway {}: FAILED: {why}\n", m.gateway)),
            }
        }
        for name in &self.unknown {
            out.push_str(&format!(
                "FAILED: a ledger was given for {name}, which the control log never enrolled\n"
            ));
        }
        out.push_str(if self.is_intact() {
            "cluster: intact\n"
        } else {
            "cluster: FAILED\n"
        });
        out
    }

    /// One JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "intact": self.is_intact(),
            "control": self.control.to_json(),
            "members": self.members.iter().map(|m| serde_json::json!({
                "gateway": m.gateway,
                "key": m.key,
                "anchor": m.anchor,
                "retired": m.retired.is_some(),
                "ledger": m.ledger.as_ref().map(|p| p.display().to_string()),
                "report": m.report.as_ref().map(Report::to_json),
                "failure": m.failure,
            })).collect::<Vec<_>>(),
            "unknown": self.unknown,
        })
    }
}

/// A record's kind and its body's two text fields, for kinds 35, 36 and
/// 37 (body `{0: gateway, 1: key or checkpoint}`).
fn gateway_record(record: &[u8]) -> Option<(u64, String, String)> {
    let (kind, mut c) = cbor::record_body(record)?;
    if ![GATEWAY_ENROLLED, GATEWAY_ANCHORED, GATEWAY_RETIRED].contains(&kind) {
        return None;
    }
    if c.map().ok()? != 2 {
        return None;
    }
    c.key(0).ok()?;
    let gateway = c.text().ok()?.to_owned();
    c.key(1).ok()?;
    let value = c.text().ok()?.to_owned();
    Some((kind, gateway, value))
}

/// Verifies the control log at `control` with `key`, then each enrolled
/// gateway's ledger from `ledgers` (name, path).
pub fn verify_cluster(
    control: &Path,
    key: &VerifierKey,
    ledgers: &[(String, PathBuf)],
) -> Result<ClusterReport, VerifyError> {
    let control_report = verify_ledger_with(control, key, VerifyOptions::default())?;
    let mut enrolled: Vec<(String, String)> = Vec::new();
    let mut anchors: BTreeMap<String, String> = BTreeMap::new();
    let mut retired: BTreeMap<String, String> = BTreeMap::new();
    if control_report.is_intact() {
        let log = Ledger::open(control)?;
        log.for_each_event(|row| {
            if let Some((kind, gateway, value)) = row.data.ok().and_then(gateway_record) {
                if kind == GATEWAY_ENROLLED {
                    if !enrolled.iter().any(|(g, _)| *g == gateway) {
                        enrolled.push((gateway, value));
                    }
                } else if kind == GATEWAY_RETIRED {
                    retired.insert(gateway, value);
                } else {
                    anchors.insert(gateway, value);
                }
            }
            ControlFlow::<()>::Continue(())
        })?;
    }
    let members = enrolled
        .into_iter()
        .map(|(gateway, key)| {
            // A retired gateway's final note is its last anchor.
            let end = retired.get(&gateway).cloned();
            let anchor = end.clone().or_else(|| anchors.get(&gateway).cloned());
            let ledger = ledgers
                .iter()
                .find(|(name, _)| *name == gateway)
                .map(|(_, p)| p.clone());
            let mut member = MemberReport {
                gateway: gateway.clone(),
                key: key.clone(),
                anchor: anchor.clone(),
                retired: end.clone(),
                ledger: ledger.clone(),
                report: None,
                failure: None,
            };
            let Some(path) = ledger else {
                member.failure = Some(format!(
                    "no ledger given: the control log enrolled {gateway}; pass --member {gateway}=PATH"
                ));
                return member;
            };
            let member_key = match VerifierKey::parse(&key) {
                Ok(k) => k,
                Err(e) => {
                    member.failure = Some(format!("its enrolled key {key:?} is unusable: {e}"));
                    return member;
                }
            };
            match verify_ledger_with(
                &path,
                &member_key,
                VerifyOptions {
                    trusted_checkpoint: anchor.as_deref(),
                    ..VerifyOptions::default()
                },
            ) {
                Ok(report) => {
                    if let Some(f) = &report.failure {
                        member.failure = Some(format!(
                            "{} at seq {}: {}",
                            f.class.as_str(),
                            f.seq,
                            f.message
                        ));
                    } else if let Some(end) = &end {
                        if report.final_checkpoint.as_deref() != Some(end.as_str())
                            || report.unsigned_tail.is_some()
                        {
                            member.failure = Some(format!(
                                "{gateway} was retired with its ledger ending at the checkpoint of size {}, but the ledger goes on after it ({} events)",
                                end.lines().nth(1).unwrap_or("?"),
                                report.events
                            ));
                        }
                    }
                    member.report = Some(report);
                }
                Err(e) => member.failure = Some(e.to_string()),
            }
            member
        })
        .collect::<Vec<_>>();
    let unknown = ledgers
        .iter()
        .filter(|(name, _)| !members.iter().any(|m| m.gateway == *name))
        .map(|(name, _)| name.clone())
        .collect();
    Ok(ClusterReport {
        control: control_report,
        members,
        unknown,
    })
}
