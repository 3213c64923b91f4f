//! Crash safety: a writer killed with SIGKILL in the middle of a stream of
//! appends leaves a ledger that reopens, verifies intact, and holds every
//! event whose append had returned.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{Ledger, LedgerReader, WriterOptions};

fn key() -> gatehouse_verify::VerifierKey {
    let signer = NoteSigner::from_seed("gatehouse.bench/ledger", [11; 32]).unwrap();
    gatehouse_verify::VerifierKey::parse(&signer.verifier().to_string()).unwrap()
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut acknowledged_total = 0u64;
    // Several rounds: each kill lands at a different point of a batch.
    for (round, kill_after) in [300u64, 1_111, 2_500].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse-bench"))
            .args(["append-stream", "--ledger"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the appending process");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acknowledged = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (acknowledged.len() as u64) < kill_after && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(l)) => acknowledged.push(l.parse::<u64>().unwrap()),
                _ => break,
            }
        }
        child.kill().expect("SIGKILL the writer");
        // Receipts printed before the kill landed are acknowledged too.
        for l in lines.map_while(Result::ok) {
            acknowledged.push(l.parse::<u64>().unwrap());
        }
        child.wait().unwrap();
        assert!(
            acknowledged.len() as u64 >= kill_after,
            "round {round}: the writer produced only {} receipts",
            acknowledged.len()
        );

        let report = gatehouse_verify::verify_ledger(&path, &key(), None).unwrap();
        assert!(report.is_intact(), "round {round}: {:?}", report.failure);
        let held = LedgerReader::open(&path).unwrap().len().unwrap();
        let max = *acknowledged.iter().max().unwrap();
        assert!(
            held > max,
            "round {round}: acknowledged event {max} missing; ledger holds {held}"
        );
        assert_eq!(report.events, held);
        acknowledged_total += acknowledged.len() as u64;
    }
    // The writer reopens the crashed ledger and continues it.
    let options = WriterOptions::new(
        &path,
        NoteSigner::from_seed("gatehouse.bench/ledger", [11; 32]).unwrap(),
    );
    let ledger = Ledger::open(options).unwrap();
    let before = LedgerReader::open(&path).unwrap().len().unwrap();
    assert!(before >= acknowledged_total);
    let r = ledger
        .append_blocking(&[gatehouse_ledger::event::ApprovalExpired {
            approval: 1,
            session: 1,
            identity: "crash-test".into(),
        }
        .into()])
        .unwrap();
    assert_eq!(r[0].seq, before);
    ledger.close();
    assert!(gatehouse_verify::verify_ledger(&path, &key(), None)
        .unwrap()
        .is_intact());
}
