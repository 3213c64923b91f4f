//! `gatehouse export`: write an evidence bundle (docs/ledger-format.md,
//! section 8) from a ledger file, for an auditor to verify offline with
//! `gatehouse-verify BUNDLE --key KEYFILE`.
//!
//! Reads the ledger only; it works while the gateway runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gatehouse_ledger::bundle::{self, ExportRequest, Selection};
use gatehouse_ledger::LedgerReader;

/// What `gatehouse export` asks for, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The ledger file.
    pub ledger: PathBuf,
    /// `--session`.
    pub session: Option<u64>,
    /// `--identity`.
    pub identity: Option<String>,
    /// `--from`, RFC 3339.
    pub from: Option<String>,
    /// `--to`, RFC 3339.
    pub to: Option<String>,
    /// `--out`: the bundle file to create.
    pub out: PathBuf,
    /// `--consistent-with`: checkpoint notes an auditor kept.
    pub consistent_with: Vec<PathBuf>,
    /// `--prove-complete`: disclose the events either side of a time range.
    pub prove_complete: bool,
}

/// What was written, for the command to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// What the bundle selects.
    pub selection: Selection,
    /// Events disclosed that the selection names (not counting boundary
    /// events or statement shapes).
    pub events: usize,
    /// Statement shapes disclosed beside them so that their statements can
    /// be read (docs/ledger-format.md, section 7.2).
    pub shapes: usize,
    /// Boundary events disclosed to prove a time range complete.
    pub boundary_events: usize,
    /// Size of the checkpoint the proofs lead to.
    pub checkpoint_size: u64,
    /// Sizes of the earlier checkpoints the bundle proves consistency with.
    pub consistent_with: Vec<u64>,
    /// Bytes written.
    pub bytes: u64,
    /// `sha256:<hex>` of the file: record it with the bundle.
    pub digest: String,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exported {} events {}",
            self.events,
            describe(&self.selection)
        )?;
        if self.boundary_events > 0 {
            write!(
                f,
                " and {} boundary events proving the range complete",
                self.boundary_events
            )?;
        }
        if self.shapes > 0 {
            write!(
                f,
                " (and the {} statement shapes they refer to)",
                self.shapes
            )?;
        }
        write!(
            f,
            ", with inclusion proofs against the signed checkpoint of size {}",
            self.checkpoint_size
        )?;
        if !self.consistent_with.is_empty() {
            let sizes: Vec<String> = self.consistent_with.iter().map(u64::to_string).collect();
            write!(f, " and consistency proofs from size {}", sizes.join(", "))?;
        }
        write!(f, "; {} bytes", self.bytes)
    }
}

fn describe(selection: &Selection) -> String {
    match selection {
        Selection::Session(s) => format!("of session {s}"),
        Selection::Identity(i) => format!("of identity {i}"),
        Selection::TimeRange { from, to } => format!(
            "from {} to before {}",
            gatehouse_verify::report::rfc3339(*from),
            gatehouse_verify::report::rfc3339(*to)
        ),
    }
}

/// Parses an RFC 3339 time (`2026-11-25T10:00:00Z`, offsets and fractions
/// allowed) to Unix nanoseconds, as `gatehouse state --at` does.
pub fn parse_time(s: &str, flag: &str) -> Result<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("{flag} {s:?} is not an RFC 3339 time such as 2026-11-25T10:00:00Z")
        })?;
    u64::try_from(t.unix_timestamp_nanos()).with_context(|| format!("{flag} {s:?} is before 1970"))
}

/// The selection the options name: exactly one of `--session`,
/// `--identity`, or `--from` with `--to`.
pub fn selection(options: &ExportOptions) -> Result<Selection> {
    match (
        options.session,
        &options.identity,
        &options.from,
        &options.to,
    ) {
        (Some(s), None, None, None) => Ok(Selection::Session(s)),
        (None, Some(i), None, None) => Ok(Selection::Identity(i.clone())),
        (None, None, Some(from), Some(to)) => {
            let (from, to) = (parse_time(from, "--from")?, parse_time(to, "--to")?);
            if from >= to {
                bail!("--from must be before --to: the range would hold no event");
            }
            Ok(Selection::TimeRange { from, to })
        }
        (None, None, Some(_), None) | (None, None, None, Some(_)) => {
            bail!("a time range needs both --from and --to")
        }
        _ => bail!("select the events with exactly one of --session ID, --identity NAME, or --from T --to T"),
    }
}

/// `gatehouse export`: builds the bundle and writes it to `options.out`,
/// which must not exist yet (evidence is never overwritten).
pub fn export(options: &ExportOptions) -> Result<Exported> {
    let selection = selection(options)?;
    let mut consistent_with = Vec::new();
    for path in &options.consistent_with {
        let note = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the checkpoint note {} — pass a file holding a signed checkpoint note \
                 saved from this ledger",
                path.display()
            )
        })?;
        // Copy-paste and shell redirection drop or add final newlines; a
        // note ends with exactly one, which is not part of what was signed.
        consistent_with.push(format!("{}\n", note.trim_end()));
    }
    if options.out.exists() {
        bail!(
            "{} already exists; evidence is never overwritten — choose another --out path",
            options.out.display()
        );
    }
    let reader = LedgerReader::open(&options.ledger)?;
    let request = ExportRequest {
        selection: selection.clone(),
        consistent_with,
        prove_complete: options.prove_complete,
    };
    let bundle = bundle::export(&reader, &request)
        .with_context(|| format!("cannot export from {}", options.ledger.display()))?;
    let bytes = bundle.to_bytes();
    write_new(&options.out, &bytes)?;
    // Shapes held as context: outside a time range's span, or any shape of
    // a session's or an identity's bundle (they concern no subject).
    let shapes = bundle
        .events
        .iter()
        .filter_map(|e| gatehouse_ledger::event::RecordHead::parse(&e.record.0).ok())
        .filter(|head| head.kind == gatehouse_ledger::EventKind::StatementShape)
        .filter(|head| match &selection {
            Selection::TimeRange { from, to } => !(*from..*to).contains(&head.ts),
            _ => true,
        })
        .count();
    Ok(Exported {
        selection,
        events: bundle.events.len() - shapes,
        shapes,
        boundary_events: usize::from(bundle.before.is_some()) + usize::from(bundle.after.is_some()),
        checkpoint_size: bundle.checkpoint_size(),
        consistent_with: bundle.consistency_sizes(),
        bytes: bytes.len() as u64,
        digest: bundle::digest(&bytes),
    })
}

/// Creates `path` (refusing an existing file), writes `bytes` and syncs;
/// removes the partial file if anything fails.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {}; check the directory exists and is writable",
                path.display()
            )
        })?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::event::{Action, Protocol, SessionOpened, Statement, StatementClass};
    use gatehouse_ledger::note::NoteSigner;
    use gatehouse_ledger::{EventBody, Ledger, WriterOptions};

    fn options() -> ExportOptions {
        ExportOptions {
            ledger: "l".into(),
            out: "o".into(),
            ..ExportOptions::default()
        }
    }

    #[test]
    fn exactly_one_selection_is_accepted() {
        let mut o = options();
        assert!(selection(&o).is_err());
        o.session = Some(3);
        assert_eq!(selection(&o).unwrap(), Selection::Session(3));
        o.identity = Some("bot".into());
        assert!(selection(&o).is_err());
        o.session = None;
        assert_eq!(selection(&o).unwrap(), Selection::Identity("bot".into()));
        let mut o = options();
        o.from = Some("1970-01-01T00:00:01Z".into());
        assert!(selection(&o).unwrap_err().to_string().contains("both"));
        o.to = Some("1970-01-01T00:00:02.5+00:00".into());
        assert_eq!(
            selection(&o).unwrap(),
            Selection::TimeRange {
                from: 1_000_000_000,
                to: 2_500_000_000
            }
        );
        o.to = Some("1970-01-01T00:00:01Z".into());
        assert!(selection(&o).is_err(), "empty range");
        o.to = Some("yesterday".into());
        assert!(selection(&o).unwrap_err().to_string().contains("RFC 3339"));
    }

    fn statement(query: u64) -> EventBody {
        Statement {
            session: 1,
            identity: "agent".into(),
            query,
            sql: format!("SELECT * FROM orders WHERE id = {query}"),
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
            action: Action::Allow,
            rule: Some("reads".into()),
            class: StatementClass::Read,
            tables: vec!["public.orders".into()],
            columns: vec![],
            message: None,
        }
        .into()
    }

    #[test]
    fn shapes_are_counted_apart_from_the_selected_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut writer = WriterOptions::new(
            &path,
            NoteSigner::from_seed("gatehouse.test/export", [3; 32]).unwrap(),
        );
        writer.sign_every = std::time::Duration::ZERO;
        let ledger = Ledger::open(writer).unwrap();
        let opened: EventBody = SessionOpened {
            session: 1,
            identity: "agent".into(),
            target: "shop".into(),
            client_addr: "127.0.0.1:1".into(),
            application_name: None,
            credential: None,
            tls: false,
        }
        .into();
        ledger
            .append_blocking(&[opened, statement(1), statement(2)])
            .unwrap();
        ledger.close();
        let exported = export(&ExportOptions {
            ledger: path,
            session: Some(1),
            identity: None,
            from: None,
            to: None,
            out: dir.path().join("session.bundle"),
            consistent_with: vec![],
            prove_complete: false,
        })
        .unwrap();
        assert_eq!((exported.events, exported.shapes), (3, 1));
        assert!(exported
            .to_string()
            .starts_with("exported 3 events of session 1 (and the 1 statement shapes"));
    }
}
