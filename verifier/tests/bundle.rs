//! Evidence bundles built from the specification (section 8) by the test
//! helpers, not by the Gatehouse exporter: the verifier must accept correct
//! ones, reject every kind of damage with the right class and event, and
//! keep the command line contract (auto-detection, exit codes 0/1/2, JSON).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use gatehouse_verify::{
    verify_bundle, verify_bundle_bytes, BundleReport, Completeness, FailureClass, VerifierKey,
};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-verify");
const EVENTS: u64 = 40;

fn key() -> Key {
    test_key()
}

fn pinned(k: &Key) -> VerifierKey {
    VerifierKey::parse(&k.verifier()).unwrap()
}

type Selection = (Option<u64>, Option<String>, Option<u64>, Option<u64>);

fn session(s: u64) -> Selection {
    (Some(s), None, None, None)
}

fn identity(i: &str) -> Selection {
    (None, Some(i.into()), None, None)
}

fn range(from: u64, to: u64) -> Selection {
    (None, None, Some(from), Some(to))
}

fn ts(seq: u64) -> u64 {
    T0 + seq * 1000
}

/// The sequence numbers of `events` concerning session `s`.
fn of_session(events: &[Event], s: u64) -> Vec<u64> {
    // Kinds 4 and 9 carry a session (section 8.3); subject_events gives
    // event i the session 1 + i % 3.
    events
        .iter()
        .filter(|e| (e.kind == 4 || e.kind == 9) && 1 + e.seq as u64 % 3 == s)
        .map(|e| e.seq as u64)
        .collect()
}

fn check(parts: &BundleParts, k: &Key, trusted: Option<&str>) -> BundleReport {
    verify_bundle_bytes(&parts.encode(), &pinned(k), trusted, None).unwrap()
}

fn failure(r: &BundleReport) -> (Option<u64>, FailureClass) {
    let f = r
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure:\n{}", r.to_text()));
    (f.seq, f.class)
}

fn intact(r: &BundleReport) {
    assert!(r.is_intact(), "{}", r.to_text());
}

#[test]
fn spec_built_bundles_verify() {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let seqs = of_session(&log.events, 2);
    let b = log.bundle(session(2), &seqs);
    let r = check(&b, &k, None);
    intact(&r);
    assert_eq!(r.seqs, seqs);
    assert_eq!(r.completeness, Some(Completeness::NotProvable));
    assert_eq!(r.checkpoint_size, Some(EVENTS));
    assert!(r.to_text().starts_with(&format!(
        "intact: bundle of {} events of session 2, proven against the checkpoint of size {EVENTS}\n",
        seqs.len()
    )));

    // Kinds 4, 9 and 12 name an identity.
    let ids: Vec<u64> = log
        .events
        .iter()
        .filter(|e| [4, 9, 12].contains(&e.kind) && 1 + e.seq as u64 % 3 == 3)
        .map(|e| e.seq as u64)
        .collect();
    intact(&check(&log.bundle(identity("agent-3"), &ids), &k, None));

    // A time range, then with its boundary events.
    let mut b = log.bundle(range(ts(10), ts(20)), &(10..20).collect::<Vec<_>>());
    let r = check(&b, &k, None);
    intact(&r);
    assert_eq!(r.completeness, Some(Completeness::Contiguous));
    b.before = Some(log.entry(9));
    b.after = Some(log.entry(20));
    let r = check(&b, &k, None);
    intact(&r);
    assert_eq!(r.completeness, Some(Completeness::Proven));
    assert_eq!(r.first_ts, Some(ts(10)));
    assert_eq!(r.last_ts, Some(ts(19)));
    // The whole log needs no boundary events.
    let all = log.bundle(range(0, u64::MAX), &(0..EVENTS).collect::<Vec<_>>());
    assert_eq!(
        check(&all, &k, None).completeness,
        Some(Completeness::Proven)
    );
    // One event in a log of one.
    let one = Log::new(&k, subject_events(1));
    intact(&check(&one.bundle(session(1), &[0]), &k, None));
}

#[test]
fn malformed_bundles_are_rejected_as_a_whole() {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let good = log.bundle(session(1), &of_session(&log.events, 1));
    let malformed = |bytes: &[u8]| {
        let r = verify_bundle_bytes(bytes, &pinned(&k), None, None).unwrap();
        assert_eq!(
            failure(&r),
            (None, FailureClass::BundleMalformed),
            "{}",
            r.to_text()
        );
        r
    };
    let mut bytes = good.encode();
    bytes.push(0);
    malformed(&bytes);
    // A non-shortest head: the same value, another encoding.
    let bytes = good.encode();
    let mut longer = bytes[..1].to_vec();
    longer.extend_from_slice(&[0x00]); // key 0
    longer.extend_from_slice(&[0x78, 19]); // text length in a one-byte argument
    longer.extend_from_slice(&bytes[3..]);
    malformed(&longer);
    let mut v = good.clone();
    v.format = "gatehouse-bundle-v2".into();
    let r = malformed(&v.encode());
    assert!(r.failure.unwrap().message.contains("gatehouse-bundle-v2"));
    let mut v = good.clone();
    v.selection = (Some(1), Some("agent-1".into()), None, None);
    malformed(&v.encode());
    let mut v = good.clone();
    v.selection = range(5, 5);
    malformed(&v.encode());
    let mut v = good.clone();
    v.before = Some(log.entry(0));
    malformed(&v.encode());
    let mut v = good.clone();
    v.events.clear();
    malformed(&v.encode());
    malformed(b"not a bundle");
}

#[test]
fn event_failures_name_the_event() {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let seqs = of_session(&log.events, 1);
    let good = log.bundle(session(1), &seqs);
    let at = 3;
    let seq = seqs[at];
    let case = |edit: &dyn Fn(&mut BundleParts), want: (Option<u64>, FailureClass)| {
        let mut b = good.clone();
        edit(&mut b);
        let r = check(&b, &k, None);
        assert_eq!(failure(&r), want, "{}", r.to_text());
        if let Some(seq) = want.0 {
            assert!(r.to_text().starts_with(&format!("FAILED at seq {seq}: ")));
        }
    };
    // An altered record that is still canonical.
    case(
        &|b| {
            let r = &mut b.events[at].1;
            let last = r.len() - 1;
            r[last] ^= 1;
        },
        (Some(seq), FailureClass::InclusionInvalid),
    );
    case(
        &|b| b.events[at].1.insert(0, 0xa4),
        (Some(seq), FailureClass::NonCanonical),
    );
    case(
        &|b| b.events[at].0 += 3,
        (Some(seq + 3), FailureClass::SequenceMismatch),
    );
    case(
        &|b| b.events[at].2[5] ^= 0x10,
        (Some(seq), FailureClass::InclusionInvalid),
    );
    case(
        &|b| {
            b.events[at].2.truncate(32);
        },
        (Some(seq), FailureClass::InclusionInvalid),
    );
    // A forged event with a borrowed proof.
    case(
        &|b| {
            let free = seq + 1;
            let forged = subject_event(free, ts(free), 4, 1, "agent-1");
            let proof = b.events[at].2.clone();
            b.events.insert(at + 1, (free, forged.data, proof));
        },
        (Some(seq + 1), FailureClass::InclusionInvalid),
    );
    // An authentic event of another session.
    let stranger = of_session(&log.events, 2)[0];
    case(
        &|b| {
            let i = b.events.iter().position(|e| e.0 > stranger).unwrap();
            b.events.insert(i, log.entry(stranger));
        },
        (Some(stranger), FailureClass::NotSelected),
    );
    // Duplicated, reordered.
    case(
        &|b| {
            let e = b.events[at].clone();
            b.events.insert(at, e);
        },
        (Some(seq), FailureClass::SequenceGap),
    );
    case(
        &|b| b.events.swap(at, at + 1),
        (Some(seq), FailureClass::SequenceGap),
    );
    // An authentic event outside the selected time range.
    let mut b = log.bundle(range(ts(10), ts(20)), &(10..21).collect::<Vec<_>>());
    assert_eq!(
        failure(&check(&b, &k, None)),
        (Some(20), FailureClass::NotSelected)
    );
    // A hole in a time range.
    b.events.truncate(10);
    b.events.remove(4);
    assert_eq!(
        failure(&check(&b, &k, None)),
        (Some(14), FailureClass::SequenceGap)
    );
}

#[test]
fn boundary_events_must_prove_the_range() {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let mut b = log.bundle(range(ts(10), ts(20)), &(10..20).collect::<Vec<_>>());
    b.before = Some(log.entry(9));
    b.after = Some(log.entry(20));
    intact(&check(&b, &k, None));
    let case = |edit: &dyn Fn(&mut BundleParts), want: (Option<u64>, FailureClass)| {
        let mut c = b.clone();
        edit(&mut c);
        assert_eq!(failure(&check(&c, &k, None)), want);
    };
    case(
        &|c| c.before = Some(log.entry(8)),
        (Some(8), FailureClass::BoundaryInvalid),
    );
    case(
        &|c| c.after = Some(log.entry(21)),
        (Some(21), FailureClass::BoundaryInvalid),
    );
    case(
        &|c| {
            c.events.pop();
        },
        (Some(20), FailureClass::BoundaryInvalid),
    );
    // The range claims to start earlier than the event before it.
    case(
        &|c| c.selection = range(ts(9), ts(20)),
        (Some(9), FailureClass::BoundaryInvalid),
    );
    case(
        &|c| c.selection = range(ts(10), ts(21)),
        (Some(20), FailureClass::BoundaryInvalid),
    );
    case(
        &|c| c.after.as_mut().unwrap().2[0] ^= 1,
        (Some(20), FailureClass::InclusionInvalid),
    );
    // An empty range between two events is proven by those two alone.
    let mut empty = log.bundle(range(ts(9) + 1, ts(10)), &[]);
    empty.before = Some(log.entry(9));
    empty.after = Some(log.entry(10));
    let r = check(&empty, &k, None);
    intact(&r);
    assert_eq!((r.events, r.completeness), (0, Some(Completeness::Proven)));
    // Event 10 left out between them: reported at the boundary event that
    // is checked first, the one before.
    empty.after = Some(log.entry(11));
    assert_eq!(
        failure(&check(&empty, &k, None)),
        (Some(9), FailureClass::BoundaryInvalid)
    );
}

#[test]
fn timestamps_going_back_are_reported() {
    let k = key();
    // Authentic, signed, and out of time order: event 12 is stamped
    // before event 6, the session's event before it.
    let mut events = subject_events(20);
    events[12] = subject_event(12, ts(1), 4, 1, "agent-1");
    let log = Log::new(&k, events);
    let seqs = of_session(&log.events, 1);
    assert!(seqs.contains(&6) && seqs.contains(&12));
    let b = log.bundle(session(1), &seqs);
    assert_eq!(
        failure(&check(&b, &k, None)),
        (Some(12), FailureClass::TimestampBackwards)
    );
}

#[test]
fn keys_checkpoints_and_consistency() {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let seqs = of_session(&log.events, 3);
    let good = log.bundle(session(3), &seqs);
    // Another key.
    let other = Key::new(ORIGIN, 8);
    let r = verify_bundle_bytes(&good.encode(), &pinned(&other), None, None).unwrap();
    assert_eq!(failure(&r), (None, FailureClass::KeyMismatch));
    let mut relabelled = good.clone();
    relabelled.key = pinned(&other).label();
    let r = verify_bundle_bytes(&relabelled.encode(), &pinned(&other), None, None).unwrap();
    assert_eq!(failure(&r), (None, FailureClass::SignatureInvalid));
    // A signed note that is not a checkpoint.
    let mut b = good.clone();
    b.checkpoint = k.sign("hello\n");
    assert_eq!(
        failure(&check(&b, &k, None)),
        (None, FailureClass::CheckpointInvalid)
    );
    // Another log's checkpoint, same key.
    let other_log = Log::new(&k, subject_events(EVENTS + 1));
    let mut b = good.clone();
    b.checkpoint = other_log.note(EVENTS + 1);
    assert_eq!(
        failure(&check(&b, &k, None)),
        (Some(seqs[0]), FailureClass::InclusionInvalid)
    );

    // Consistency proofs, checked with and without a trusted checkpoint.
    let mut b = good.clone();
    b.consistency = vec![log.consistency(7), log.consistency(20)];
    let r = check(&b, &k, Some(&log.note(20)));
    intact(&r);
    assert_eq!(r.consistent_with, vec![7, 20]);
    assert_eq!(r.trusted_checkpoint, Some(20));
    assert!(r.to_text().contains("your trusted checkpoint of size 20"));
    intact(&check(&good, &k, Some(&log.note(EVENTS))));
    assert_eq!(
        failure(&check(&good, &k, Some(&log.note(20)))),
        (None, FailureClass::ConsistencyUnproven)
    );
    let mut bad = b.clone();
    bad.consistency[1].1[3] ^= 1;
    assert_eq!(
        failure(&check(&bad, &k, None)),
        (None, FailureClass::ProofInvalid)
    );
    let mut bad = b.clone();
    bad.consistency.swap(0, 1);
    assert_eq!(
        failure(&check(&bad, &k, None)),
        (None, FailureClass::BundleMalformed)
    );
    // A fork: the log as the auditor saw it at size 20 had other events.
    let mut forked_events = subject_events(EVENTS);
    forked_events[12] = subject_event(12, ts(12), 19, 0, "");
    let seen = Log::new(&k, forked_events);
    let kept = seen.note(20);
    let r = check(&b, &k, Some(&kept));
    assert_eq!(failure(&r), (None, FailureClass::Forked));
    let evidence = &r.failure.as_ref().unwrap().evidence;
    assert_eq!(evidence[0], kept);
    assert_eq!(evidence[1], log.note(20));
    assert_eq!(evidence[2], log.note(EVENTS));
    assert!(r.to_text().contains("evidence 3 of 3:\n"));
    // ...and at the bundle checkpoint's own size.
    let r = check(&good, &k, Some(&seen.note(EVENTS)));
    assert_eq!(failure(&r), (None, FailureClass::Forked));
    // A trusted checkpoint newer than the bundle's.
    let newer = Log::new(&k, subject_events(EVENTS + 5));
    assert_eq!(
        failure(&check(&good, &k, Some(&newer.note(EVENTS + 5)))),
        (None, FailureClass::ConsistencyUnproven)
    );
}

#[test]
fn the_expected_digest_pins_the_exact_bundle() {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let seqs = of_session(&log.events, 1);
    let b = log.bundle(session(1), &seqs);
    let bytes = b.encode();
    let digest = gatehouse_verify::bundle_verify::digest(&bytes);
    assert_eq!(digest, format!("sha256:{}", hex(&sha256(&[&bytes]))));
    let r = verify_bundle_bytes(&bytes, &pinned(&k), None, Some(&digest)).unwrap();
    intact(&r);
    // A copy with an event removed is a valid bundle of fewer events
    // (section 8.4), but not the one exported.
    let mut fewer = b.clone();
    fewer.events.remove(2);
    let r = verify_bundle_bytes(&fewer.encode(), &pinned(&k), None, None).unwrap();
    intact(&r);
    let r = verify_bundle_bytes(&fewer.encode(), &pinned(&k), None, Some(&digest)).unwrap();
    assert_eq!(failure(&r), (None, FailureClass::DigestMismatch));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The command line.

struct Files {
    dir: tempfile::TempDir,
    bundle: std::path::PathBuf,
    key: std::path::PathBuf,
    digest: String,
    log_note: String,
}

fn files() -> Files {
    let k = key();
    let log = Log::new(&k, subject_events(EVENTS));
    let b = log.bundle(session(2), &of_session(&log.events, 2));
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("evidence.bundle");
    let bytes = b.encode();
    std::fs::write(&bundle, &bytes).unwrap();
    let key = dir.path().join("ledger.pub");
    std::fs::write(&key, format!("{}\n", k.verifier())).unwrap();
    Files {
        digest: gatehouse_verify::bundle_verify::digest(&bytes),
        log_note: log.note(EVENTS),
        dir,
        bundle,
        key,
    }
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn cli_detects_bundles_and_keeps_the_exit_codes() {
    let f = files();
    let o = run(&[&f.bundle, &"--key", &f.key]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).starts_with("intact: bundle of "), "{}", out(&o));
    assert!(out(&o).contains(&format!("digest: {}\n", f.digest)));
    let o = run(&[
        &f.bundle,
        &"--key",
        &f.key,
        &"--json",
        &"--expect-digest",
        &f.digest,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["status"], "intact");
    assert_eq!(j["input"], "bundle");
    assert_eq!(j["selection"]["session"], 2);
    assert_eq!(j["complete"], "not_provable");
    // A trusted checkpoint file without its final newline, or with a blank
    // line after it.
    let note = f.dir.path().join("kept.note");
    std::fs::write(&note, f.log_note.trim_end()).unwrap();
    assert_eq!(
        run(&[&f.bundle, &"--key", &f.key, &"--trusted-checkpoint", &note])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(&note, format!("{}\n\n", f.log_note)).unwrap();
    assert_eq!(
        run(&[&f.bundle, &"--key", &f.key, &"--trusted-checkpoint", &note])
            .status
            .code(),
        Some(0)
    );

    // Tampered: exit 1, the event named.
    let mut bytes = std::fs::read(&f.bundle).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    let tampered = f.dir.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let o = run(&[&tampered, &"--key", &f.key]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).starts_with("FAILED"), "{}", out(&o));
    let o = run(&[&tampered, &"--key", &f.key, &"--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["status"], "failed");
    // The wrong digest.
    let other = format!("sha256:{}", "0".repeat(64));
    let o = run(&[&f.bundle, &"--key", &f.key, &"--expect-digest", &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("digest_mismatch"));

    // A damaged header: taken for a ledger unless --bundle says otherwise.
    let mut bytes = std::fs::read(&f.bundle).unwrap();
    bytes[5] = b'X';
    let headless = f.dir.path().join("headless.bundle");
    std::fs::write(&headless, &bytes).unwrap();
    let o = run(&[&headless, &"--key", &f.key]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[&headless, &"--key", &f.key, &"--bundle"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).starts_with("FAILED: bundle_malformed: "),
        "{}",
        out(&o)
    );
    // Usage and input errors: exit 2.
    assert_eq!(
        run(&[&f.bundle, &"--key", &f.key, &"--expect-digest", &"abc"])
            .status
            .code(),
        Some(2)
    );
    let ledger = f.dir.path().join("audit.ledger");
    build(&ledger, &key(), &events(3), &[3]);
    let o = run(&[&ledger, &"--key", &f.key, &"--expect-digest", &f.digest]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("applies to evidence bundles"));
    let missing = f.dir.path().join("missing.bundle");
    assert_eq!(
        run(&[&missing, &"--key", &f.key, &"--bundle"])
            .status
            .code(),
        Some(2)
    );
    let forged = f.dir.path().join("forged.note");
    std::fs::write(&forged, Key::new(ORIGIN, 9).sign(&format!("{ORIGIN}\n1\n"))).unwrap();
    let o = run(&[
        &f.bundle,
        &"--key",
        &f.key,
        &"--trusted-checkpoint",
        &forged,
    ]);
    assert_eq!(o.status.code(), Some(2));
    // The ledger path is unchanged.
    assert_eq!(run(&[&ledger, &"--key", &f.key]).status.code(), Some(0));
}

#[test]
fn verify_bundle_reads_files() {
    let f = files();
    let key = VerifierKey::parse(std::fs::read_to_string(&f.key).unwrap().trim()).unwrap();
    intact(&verify_bundle(&f.bundle, &key, None, Some(&f.digest)).unwrap());
    assert!(verify_bundle(Path::new("/nonexistent/x.bundle"), &key, None, None).is_err());
}
