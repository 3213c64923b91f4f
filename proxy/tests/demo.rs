//! The README's first command must keep working.

#[test]
fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = gatehouse::demo::run(Some(dir.path().join("demo"))).expect("the demo succeeds");
    for file in [
        "ledger.db",
        "verifier.pub",
        "trusted-checkpoint.note",
        "tampered-edit.db",
        "tampered-rollback.db",
    ] {
        assert!(out.join(file).exists(), "{file} is left for the reader");
    }
}
