//! `gatehouse-verify LEDGER|BUNDLE --key KEYFILE [--trusted-checkpoint NOTEFILE] [--save-checkpoint NOTEFILE] [--json]`
//! `gatehouse-verify --cluster CONTROL --key CONTROLKEY --member NAME=LEDGER ...`
//!
//! The input is a ledger file or an evidence bundle (`gatehouse export`);
//! which one is told from the file's first bytes, or forced with `--bundle`.
//!
//! Exit status: 0 the ledger or bundle is intact, 1 it failed a check, 2 the
//! verification could not be carried out (usage, I/O, not a ledger or
//! bundle, unusable key or trusted checkpoint). Scripts can rely on these
//! three values.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use gatehouse_verify::bundle;
use gatehouse_verify::{
    verify_bundle, verify_ledger_with, BundleReport, Report, VerifierKey, VerifyOptions,
};

/// Verify a Gatehouse ledger (every event, hash and signed checkpoint) or an
/// evidence bundle (every disclosed event's bytes and inclusion proof, and
/// the signed checkpoint), trusting nothing stored in the file.
#[derive(Parser)]
#[command(name = "gatehouse-verify", version)]
struct Args {
    /// The ledger file (an SQLite database, opened read-only), a ledger in
    /// segments (its path, or the directory holding `<ledger>.NNNNNN`
    /// files: verified in order as one log), one segment's file, or an
    /// evidence bundle (written by `gatehouse export`).
    #[arg(value_name = "LEDGER|DIR|BUNDLE")]
    input: PathBuf,
    /// File holding the log's verifier key, `<name>+<key id>+<base64 key>`.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// File holding a checkpoint note saved earlier from this ledger; the
    /// ledger must still contain exactly what it covers.
    #[arg(long, value_name = "NOTEFILE")]
    trusted_checkpoint: Option<PathBuf>,
    /// Ledgers: a checkpoint note saved earlier (`--save-checkpoint`) after
    /// verifying the ledger up to it, signed by the key given with --key:
    /// only the events after it are read, and they must extend exactly the
    /// tree it signs. For an auditor who verified yesterday and checks today.
    #[arg(long, value_name = "NOTEFILE", conflicts_with = "trusted_checkpoint")]
    from_checkpoint: Option<PathBuf>,
    /// Ledgers: when the ledger is intact, write its final checkpoint note
    /// to this new file, to keep (off the gateway host) and pass later as
    /// `--trusted-checkpoint`. An existing file is never overwritten.
    #[arg(long, value_name = "NOTEFILE")]
    save_checkpoint: Option<PathBuf>,
    /// Ledgers: fail on events after the last checkpoint in a format-2
    /// ledger too, instead of reporting them as its unsigned tail.
    #[arg(long)]
    strict: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Treat the input as an evidence bundle even if its first bytes do not
    /// say so: a bundle whose header was damaged is then reported as a
    /// failed bundle (exit 1) rather than as a file that is not a ledger
    /// (exit 2).
    #[arg(long)]
    bundle: bool,
    /// Bundles: the digest `gatehouse export` printed (`sha256:<hex>`); the
    /// bundle must be exactly that one. Without it, a bundle with events
    /// removed from a session or identity selection still verifies.
    #[arg(long, value_name = "DIGEST")]
    expect_digest: Option<String>,
    /// The input is a cluster's control log (docs/cluster.md), verified
    /// with --key; then the ledger of every gateway it enrolled, given with
    /// --member, is verified with its enrolled key against its last anchor.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: a gateway's ledger, `NAME=PATH` (repeat for each).
    #[arg(long, value_name = "NAME=PATH", requires = "cluster")]
    member: Vec<String>,
}

/// What was verified.
enum Outcome {
    Ledger(Report),
    Bundle(BundleReport),
    Cluster(gatehouse_verify::ClusterReport),
}

impl Outcome {
    fn is_intact(&self) -> bool {
        match self {
            Outcome::Ledger(r) => r.is_intact(),
            Outcome::Bundle(r) => r.is_intact(),
            Outcome::Cluster(r) => r.is_intact(),
        }
    }

    fn to_text(&self) -> String {
        match self {
            Outcome::Ledger(r) => r.to_text(),
            Outcome::Bundle(r) => r.to_text(),
            Outcome::Cluster(r) => r.to_text(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Outcome::Ledger(r) => r.to_json(),
            Outcome::Bundle(r) => r.to_json(),
            Outcome::Cluster(r) => r.to_json(),
        }
    }
}

/// Exit status when the ledger is intact.
const EXIT_INTACT: u8 = 0;
/// Exit status when the ledger failed a check.
const EXIT_FAILED: u8 = 1;
/// Exit status when verification could not run (clap uses it for usage
/// errors too).
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => return usage_error(error),
    };
    match run(&args) {
        Ok(report) => {
            let text = if args.json {
                format!("{}\n", report.to_json())
            } else {
                report.to_text()
            };
            // A reader that stops early (`| head`) is not an error of the
            // verification: the exit status still tells the verdict.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            if let Some(path) = &args.save_checkpoint {
                if report.is_intact() {
                    eprintln!("final checkpoint saved to {}", path.display());
                } else {
                    eprintln!(
                        "checkpoint not saved to {}: the ledger did not verify",
                        path.display()
                    );
                }
            }
            ExitCode::from(if report.is_intact() {
                EXIT_INTACT
            } else {
                EXIT_FAILED
            })
        }
        Err(error) => {
            let message = format!("{error:#}");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "status": "error", "error": message })
                );
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Clap's own handling (help and version exit 0, usage errors exit 2), except
/// that a script that asked for `--json` gets its error as JSON too.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os().skip(1).any(|a| a == "--json");
    let is_usage_error = !matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    );
    if wants_json && is_usage_error {
        let message = error.render().to_string();
        println!(
            "{}",
            serde_json::json!({ "status": "error", "error": message.trim_end() })
        );
        return ExitCode::from(EXIT_ERROR);
    }
    error.exit()
}

fn read(path: &Path, what: &str, hint: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {} — {hint}", path.display()))
}

/// Whether the file at `path` starts with the evidence bundle header.
/// Unreadable files are "no": the ledger path then reports the problem.
fn looks_like_bundle(path: &Path) -> bool {
    use std::io::Read as _;
    let mut prefix = [0u8; bundle::HEADER.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut prefix))
        .map(|()| bundle::is_bundle(&prefix))
        .unwrap_or(false)
}

fn run(args: &Args) -> Result<Outcome> {
    let key_text = read(
        &args.key,
        "key file",
        "pass the file holding the ledger's verifier key",
    )?;
    if key_text.trim_start().starts_with("PRIVATE+KEY+") {
        anyhow::bail!(
            "key file {} holds the ledger's private signing key — pass the verifier key \
             (<name>+<key id>+<base64 key>) instead, and keep the signing key secret",
            args.key.display()
        );
    }
    let key = VerifierKey::parse(key_text.trim()).with_context(|| {
        format!(
            "key file {} does not hold a verifier key — it must contain one line \
             <name>+<key id>+<base64 key>, as printed when the ledger key was created",
            args.key.display()
        )
    })?;
    let note_file = |path: &Option<PathBuf>, what: &str| -> Result<Option<String>> {
        let Some(path) = path else {
            return Ok(None);
        };
        let note = read(
            path,
            what,
            "pass the file holding a checkpoint note saved from this ledger",
        )?;
        // Editors, copy-paste and shell redirection drop the final
        // newline or add blank lines; a note ends with exactly one
        // newline, part of the last signature line, not of what was
        // signed.
        Ok(Some(format!("{}\n", note.trim_end())))
    };
    let trusted = note_file(&args.trusted_checkpoint, "trusted checkpoint")?;
    let from = note_file(&args.from_checkpoint, "checkpoint to verify from")?;
    if let Some(digest) = &args.expect_digest {
        let hex = digest.trim();
        let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!(
                "--expect-digest {digest:?} is not a SHA-256 digest — pass it as gatehouse export \
                 printed it, sha256: followed by 64 hex digits"
            );
        }
    }
    if args.cluster {
        if trusted.is_some() || from.is_some() || args.save_checkpoint.is_some() || args.bundle {
            anyhow::bail!(
                "--cluster verifies each gateway against the anchors in the control log; \
                 drop --trusted-checkpoint, --from-checkpoint, --save-checkpoint and --bundle"
            );
        }
        let members = args
            .member
            .iter()
            .map(|m| {
                m.split_once('=')
                    .filter(|(name, path)| !name.is_empty() && !path.is_empty())
                    .map(|(name, path)| (name.to_owned(), PathBuf::from(path)))
                    .with_context(|| {
                        format!("--member {m:?} must be NAME=PATH, a gateway's name and its ledger")
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Outcome::Cluster(gatehouse_verify::verify_cluster(
            &args.input,
            &key,
            &members,
        )?));
    }
    let is_bundle = args.bundle || looks_like_bundle(&args.input);
    if let Some(path) = &args.save_checkpoint {
        if is_bundle {
            anyhow::bail!(
                "--save-checkpoint applies to ledgers, but {} is an evidence bundle — keep \
                 checkpoints from the ledger itself",
                args.input.display()
            );
        }
        if path.exists() {
            anyhow::bail!(
                "{} already exists — --save-checkpoint never overwrites a kept checkpoint; \
                 choose a new file name",
                path.display()
            );
        }
    }
    if is_bundle && from.is_some() {
        anyhow::bail!(
            "--from-checkpoint applies to ledgers, but {} is an evidence bundle — a bundle is \
             verified whole; pass a kept checkpoint with --trusted-checkpoint",
            args.input.display()
        );
    }
    if is_bundle {
        return Ok(Outcome::Bundle(verify_bundle(
            &args.input,
            &key,
            trusted.as_deref(),
            args.expect_digest.as_deref(),
        )?));
    }
    if args.expect_digest.is_some() {
        anyhow::bail!(
            "--expect-digest applies to evidence bundles, but {} is not one — pass a bundle \
             written by gatehouse export, or drop --expect-digest",
            args.input.display()
        );
    }
    let report = verify_ledger_with(
        &args.input,
        &key,
        VerifyOptions {
            trusted_checkpoint: trusted.as_deref(),
            from_checkpoint: from.as_deref(),
            progress: !args.json && std::io::stderr().is_terminal(),
            strict: args.strict,
        },
    )?;
    if let (Some(path), Some(note)) = (&args.save_checkpoint, &report.final_checkpoint) {
        if report.is_intact() {
            save_note(path, note)?;
        }
    }
    Ok(Outcome::Ledger(report))
}

/// Writes a checkpoint note to a file that must not exist yet; a partly
/// written file is removed, so no truncated note is ever kept. (The same
/// idiom as `gatehouse export`'s, written again: this crate depends on no
/// other of the workspace.)
fn save_note(path: &Path, note: &str) -> Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} to save the checkpoint — choose a new file in a writable directory",
                path.display()
            )
        })?;
    file.write_all(note.as_bytes())
        .and_then(|()| file.sync_all())
        .inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
        .with_context(|| format!("cannot write the checkpoint to {}", path.display()))
}
