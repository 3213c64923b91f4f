//! `gatehouse`: the gateway and its operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gatehouse::config::Config;
use gatehouse::{commands, demo, export, gateway, init};

/// Gatehouse: a policy-enforcing, recording PostgreSQL gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a ledger, its signing key and its verifier key in a directory.
    Init {
        /// Directory to create (must not already hold a Gatehouse setup).
        #[arg(long)]
        dir: PathBuf,
        /// The log's origin line, also the key name (default: gatehouse/<dir name>).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Serve PostgreSQL clients: judge, record and relay their queries.
    Serve {
        /// The configuration file.
        #[arg(long, default_value = "gatehouse.toml")]
        config: PathBuf,
    },
    /// Manage the policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage agent identities.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Manage gateway credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Manage admin-API operators.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Manage the ledger's signing key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Gateways sharing one control log (docs/cluster.md).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Block an identity on the running gateway: its statements are
    /// cancelled, its sessions end, its logins are refused.
    Block {
        /// The identity.
        identity: String,
        /// Why (recorded, and shown to its sessions).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift a block.
    Unblock {
        /// The identity.
        identity: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End one session on the running gateway.
    Kill {
        /// The session number (see `gatehouse sessions`).
        session: u64,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the running gateway's sessions: a table, or JSON with --json.
    Sessions {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the identities: blocked or disabled, and their working credentials.
    Identities {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List credentials (never their secrets), of one identity or all.
    Credentials {
        /// Only this identity's.
        identity: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the admin API's operators and their roles.
    Operators {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List statements held for approval on the running gateway.
    Approvals {
        /// Also list decided requests.
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approve a held statement (once, or with a grant of its fingerprint).
    Approve {
        /// The request number (see `gatehouse approvals`).
        approval: u64,
        /// Also let the identity run this statement's fingerprint for this
        /// long without asking (90s, 30m, 2h, 1d).
        #[arg(long = "for")]
        duration: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deny a held statement: the agent gets an error with the reason.
    Deny {
        /// The request number.
        approval: u64,
        /// Why (recorded, and shown to the agent).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the grants in force: statement fingerprints identities may run
    /// without approval until a time (left by `approve --for`).
    Grants {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Manage grants.
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// Print the gateway's state as of an instant or an event.
    State {
        /// The ledger file.
        #[arg(long)]
        ledger: PathBuf,
        /// A sequence number or an RFC 3339 time (default: the end of the log).
        #[arg(long)]
        at: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Print only the state hash (BLAKE3 of the state's snapshot
        /// encoding): equal hashes mean equal states.
        #[arg(long, conflicts_with = "json")]
        hash: bool,
        /// Fold the whole ledger from its first event and check every
        /// snapshot in it against the fold; fails on the first mismatch.
        #[arg(long, conflicts_with_all = ["at", "json", "hash"])]
        check: bool,
        /// The verifier key that checks the checkpoint's signature (default:
        /// the verifier.pub beside the ledger).
        #[arg(long, value_name = "KEYFILE")]
        key: Option<PathBuf>,
    },
    /// Export an evidence bundle: the selected events with proofs against
    /// the ledger's latest signed checkpoint, for gatehouse-verify to check
    /// offline. Other events are not revealed.
    Export {
        /// The ledger file (read only; the gateway may be running).
        #[arg(long)]
        ledger: PathBuf,
        /// Every event of this session.
        #[arg(long)]
        session: Option<u64>,
        /// Every event concerning this identity.
        #[arg(long)]
        identity: Option<String>,
        /// Events from this RFC 3339 time (inclusive; with --to).
        #[arg(long, value_name = "T")]
        from: Option<String>,
        /// Events before this RFC 3339 time (exclusive; with --from).
        #[arg(long, value_name = "T")]
        to: Option<String>,
        /// The bundle file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// A checkpoint note an auditor kept: the bundle also proves its
        /// checkpoint extends that one (repeatable).
        #[arg(long, value_name = "NOTE")]
        consistent_with: Vec<PathBuf>,
        /// Time ranges: also disclose the events just before and after the
        /// range, proving the bundle holds every event in it.
        #[arg(long)]
        prove_complete: bool,
    },
    /// Show what a session or an identity did: connections, statements with
    /// their parameters, decisions, approvals, masks, rows as the client saw
    /// them, errors and durations.
    #[command(group(clap::ArgGroup::new("selection").required(true).args(["session", "identity"])))]
    Replay {
        /// The ledger file.
        #[arg(long)]
        ledger: PathBuf,
        /// One session, by number.
        #[arg(long)]
        session: Option<u64>,
        /// Everything one identity did: its sessions, blocks, credentials and failed logins.
        #[arg(long)]
        identity: Option<String>,
        /// The first event shown: a sequence number or an RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// The last event shown: a sequence number or an RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
        /// Machine-readable output.
        #[arg(long, conflicts_with = "html")]
        json: bool,
        /// Write a self-contained HTML report to this file instead.
        #[arg(long, value_name = "OUT")]
        html: Option<PathBuf>,
        /// The verifier key that checks the checkpoint's signature (default:
        /// the verifier.pub beside the ledger).
        #[arg(long, value_name = "KEYFILE")]
        key: Option<PathBuf>,
    },
    /// Run the incident demo and leave its ledger and evidence in a directory.
    Demo {
        /// Directory for the demo's files (default: ./gatehouse-demo-<time>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create the control log named by `[cluster]`, and its signing key
    /// unless the key file exists (a copy from another gateway). Prints
    /// the control log's verifier key.
    Init {
        /// The gateway's configuration file.
        #[arg(long, default_value = "gatehouse.toml")]
        config: PathBuf,
        /// The control log's name in its checkpoints (a new key only).
        #[arg(long, default_value = "gatehouse/control")]
        origin: String,
    },
    /// Retire this gateway for good, with it stopped: its ledger's final
    /// checkpoint is recorded in the control log; it may not start again
    /// under its name, and `gatehouse-verify --cluster` requires its ledger
    /// to end there. Prints that checkpoint.
    Retire {
        /// The gateway's configuration file.
        #[arg(long, default_value = "gatehouse.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Replace the ledger's signing key, with the gateway stopped: a
    /// KeyRotated event, signed by the old key, names the new one, which
    /// signs from then on. Auditors keep pinning the first key:
    /// gatehouse-verify follows the rotations.
    Rotate {
        /// The gateway's configuration file.
        #[arg(long, default_value = "gatehouse.toml")]
        config: PathBuf,
        /// Who is acting (default: $USER).
        #[arg(long)]
        operator: Option<String>,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Remove an operator: its token stops working. Not yourself, and not
    /// the last admin.
    Remove {
        /// The operator's name.
        name: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
    },
    /// Add an operator (or give an existing one new roles and a new token);
    /// prints the token once.
    Add {
        /// The operator's name.
        name: String,
        /// Roles: admin, approver, responder, auditor (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
    },
}

/// How to reach the admin API. Without `--admin`, the address comes from
/// the gateway's config file (`GATEHOUSE_CONFIG`, else `gatehouse.toml` in
/// the current directory, if there is one), so no flag is needed on every
/// command.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API's base URL [default: the [admin] address of the
    /// config file, else http://127.0.0.1:6433].
    #[arg(long, env = "GATEHOUSE_ADMIN")]
    admin: Option<String>,
    /// File holding the operator's bearer token [default: operator.token,
    /// here or beside the config file].
    #[arg(long, env = "GATEHOUSE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificate authority to trust for an https:// admin API
    /// [default: the config's admin certificate, for its own address].
    #[arg(long, env = "GATEHOUSE_ADMIN_CA")]
    admin_ca: Option<PathBuf>,
}

impl AdminArgs {
    fn client(&self) -> Result<gatehouse::admin_client::AdminClient> {
        let found = gatehouse::admin_client::Endpoint::find(
            std::env::var_os("GATEHOUSE_CONFIG").map(PathBuf::from),
        )?;
        let url = self.admin.clone().unwrap_or_else(|| found.url.clone());
        let ca = self.admin_ca.clone().or_else(|| {
            // The config's certificate vouches for the config's address only.
            self.admin.is_none().then(|| found.ca.clone()).flatten()
        });
        let token = self.token_file.clone().unwrap_or(found.token_file);
        gatehouse::admin_client::AdminClient::new(&url, &token, ca.as_deref())
    }
}

#[derive(Subcommand)]
enum GrantCommand {
    /// End a grant before its time: its fingerprint is held for approval
    /// again. (A block of the identity or a revoked credential of it ends
    /// its grants too.)
    Revoke {
        /// The approval request that left the grant (see `gatehouse grants`).
        approval: u64,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and make it the policy in force.
    Apply {
        /// The policy file (TOML).
        file: PathBuf,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
        /// Apply even if deny or mask rules name tables or columns that a
        /// target does not have (each is printed as a warning). Without
        /// it, such a policy is rejected with the line of each name.
        #[arg(long)]
        allow_missing: bool,
    },
    /// Print the policy in force.
    Show {
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the decision for a statement without running it: by the running
    /// gateway's own decision pipeline (views, catalog, masking, grants,
    /// blocks) through its admin API, or with --config by the policy alone.
    Explain {
        /// Judge offline, by the policy alone, from this configuration's
        /// ledger, instead of asking the running gateway.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The identity asking.
        #[arg(long)]
        identity: String,
        /// The target database (default: the gateway's only one; offline:
        /// any, i.e. "*").
        #[arg(long)]
        target: Option<String>,
        /// The SQL to judge.
        #[arg(long)]
        sql: String,
        /// Judge by this policy file instead of the one in force (to try a
        /// file before applying it).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Create an agent identity.
    Create {
        /// The identity's name (the user name it logs in with).
        name: String,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// What the identity is for.
        #[arg(long)]
        description: Option<String>,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
    },
    /// Retire an identity: its sessions end, it can no longer log in, and
    /// it gets no new credentials. Final (`block` is the reversible stop).
    Disable {
        /// The identity.
        name: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
    },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Issue a credential; prints the secret once, on the last line of stdout.
    Issue {
        /// The identity it is for.
        identity: String,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
    },
    /// Revoke a credential.
    Revoke {
        /// The credential id.
        credential: String,
        /// Write to the ledger of a stopped gateway with this config,
        /// instead of going through the running gateway's admin API.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who is acting, when writing offline (default: $USER); through
        /// the API it is the token's operator.
        #[arg(long)]
        operator: Option<String>,
    },
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Init { dir, origin } => {
            let out = init::init(&dir, origin.as_deref())?;
            eprintln!(
                "Initialised {}.\nThe signing key is readable by you only; the verifier key (below, and in {}) is for auditors.\nThe first operator, {}, holds every role; its bearer token is in {} (owner-only).",
                out.config.display(),
                dir.join(init::VERIFIER_KEY).display(),
                init::FIRST_OPERATOR,
                out.operator_token.display()
            );
            println!("{}", out.verifier_key);
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                // No colour codes in a file or a pipe.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            match config.log.format {
                gatehouse::config::LogFormat::Text => logs.init(),
                gatehouse::config::LogFormat::Json => logs.json().init(),
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(gateway::serve(&config))?;
        }
        Command::Policy { command } => match command {
            PolicyCommand::Apply {
                file,
                config,
                admin,
                operator,
                allow_missing,
            } => {
                let warnings = match config {
                    Some(config) => commands::policy_apply(
                        &Config::load(&config)?,
                        &file,
                        commands::operator(operator),
                        allow_missing,
                    )?,
                    None => {
                        let source = commands::read_policy(&file)?;
                        admin.client()?.policy_apply(&source, allow_missing)?
                    }
                };
                for warning in warnings {
                    eprintln!("warning: {warning}");
                }
                eprintln!("policy {} is now in force", file.display());
            }
            PolicyCommand::Show { config, admin } => match config {
                Some(config) => {
                    print!(
                        "{}",
                        commands::current_policy(&Config::load(&config)?)?.source()
                    )
                }
                None => print!("{}", admin.client()?.policy_show()?),
            },
            PolicyCommand::Explain {
                config,
                identity,
                target,
                sql,
                policy,
                admin,
            } => match config {
                Some(config) => print!(
                    "{}",
                    commands::policy_explain(
                        &Config::load(&config)?,
                        &identity,
                        target.as_deref().unwrap_or("*"),
                        &sql,
                        policy.as_deref()
                    )?
                ),
                None => {
                    let source = policy
                        .as_deref()
                        .map(|p| {
                            std::fs::read_to_string(p)
                                .with_context(|| format!("cannot read policy file {}", p.display()))
                        })
                        .transpose()?;
                    let explanation = admin
                        .client()?
                        .policy_explain(&identity, target.as_deref(), &sql, source.as_deref())
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "{e:#}; to judge by the policy alone, without a running gateway, pass --config gatehouse.toml"
                            )
                        })?;
                    print!(
                        "{}",
                        explanation.to_text(&identity, target.as_deref().unwrap_or("its target"))
                    );
                }
            },
        },
        Command::Identity {
            command:
                IdentityCommand::Create {
                    name,
                    config,
                    admin,
                    description,
                    operator,
                },
        } => {
            match config {
                Some(config) => commands::identity_create_offline(
                    &Config::load(&config)?,
                    &name,
                    description,
                    commands::operator(operator),
                )?,
                None => admin
                    .client()?
                    .identity_create(&name, description.as_deref())?,
            }
            eprintln!("identity {name} created");
        }
        Command::Credential { command } => match command {
            CredentialCommand::Issue {
                identity,
                config,
                admin,
                ttl,
                operator,
            } => {
                let (id, secret, expires) = match config {
                    Some(config) => {
                        let issued = commands::credential_issue_offline(
                            &Config::load(&config)?,
                            &identity,
                            commands::parse_duration(&ttl)?,
                            commands::operator(operator),
                        )?;
                        (
                            issued.id,
                            issued.secret,
                            gatehouse_verify::report::rfc3339(issued.expires_at),
                        )
                    }
                    None => admin.client()?.credential_issue(&identity, &ttl)?,
                };
                eprintln!(
                    "credential {id} for {identity}, valid until {expires}; the secret is shown once:"
                );
                println!("{secret}");
            }
            CredentialCommand::Revoke {
                credential,
                config,
                admin,
                reason,
                operator,
            } => {
                match config {
                    Some(config) => commands::credential_revoke_offline(
                        &Config::load(&config)?,
                        &credential,
                        reason,
                        commands::operator(operator),
                    )?,
                    None => admin.client()?.revoke(&credential, &reason)?,
                }
                eprintln!("credential {credential} revoked");
            }
        },
        Command::Operator {
            command:
                OperatorCommand::Add {
                    name,
                    roles,
                    config,
                    admin,
                    operator,
                },
        } => {
            let token = match config {
                Some(config) => {
                    let roles = roles
                        .iter()
                        .map(|r| {
                            gatehouse_engine::operators::Role::parse(r).ok_or_else(|| {
                                anyhow::anyhow!(
                                    "unknown role {r:?}: use admin, approver, responder or auditor"
                                )
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    commands::operator_add_offline(
                        &Config::load(&config)?,
                        &name,
                        &roles,
                        commands::operator(operator),
                    )?
                }
                None => admin.client()?.operator_add(&name, &roles)?,
            };
            eprintln!("operator {name} added; the token is shown once:");
            println!("{token}");
        }
        Command::Block {
            identity,
            reason,
            admin,
        } => {
            admin.client()?.block(&identity, &reason)?;
            eprintln!("{identity} is blocked");
        }
        Command::Unblock {
            identity,
            reason,
            admin,
        } => {
            admin.client()?.unblock(&identity, reason.as_deref())?;
            eprintln!("{identity} is unblocked");
        }
        Command::Kill {
            session,
            reason,
            admin,
        } => {
            admin.client()?.kill(session, &reason)?;
            eprintln!("session {session} ended");
        }
        Command::Identity {
            command:
                IdentityCommand::Disable {
                    name,
                    reason,
                    config,
                    admin,
                    operator,
                },
        } => {
            match config {
                Some(config) => commands::identity_disable_offline(
                    &Config::load(&config)?,
                    &name,
                    reason,
                    commands::operator(operator),
                )?,
                None => admin.client()?.identity_disable(&name, &reason)?,
            }
            eprintln!("identity {name} disabled");
        }
        Command::Operator {
            command:
                OperatorCommand::Remove {
                    name,
                    reason,
                    config,
                    admin,
                    operator,
                },
        } => {
            match config {
                Some(config) => commands::operator_remove_offline(
                    &Config::load(&config)?,
                    &name,
                    reason,
                    commands::operator(operator),
                )?,
                None => admin.client()?.operator_remove(&name, &reason)?,
            }
            eprintln!("operator {name} removed");
        }
        Command::Key {
            command: KeyCommand::Rotate { config, operator },
        } => {
            let rotated =
                commands::key_rotate(&Config::load(&config)?, commands::operator(operator))?;
            println!("{}", rotated.new);
            eprintln!(
                "the ledger's signing key is now {} (it was {}); auditors keep pinning the key the ledger started with (verifier.pub): gatehouse-verify follows the rotation. Bundles exported from now on are signed by the new key: verify them with it",
                rotated.new.label(),
                rotated.old.label()
            );
        }
        Command::Cluster {
            command: ClusterCommand::Init { config, origin },
        } => {
            let config = Config::load(&config)?;
            println!("{}", commands::cluster_init(&config, &origin)?);
            eprintln!(
                "the control log is ready; give every gateway of the cluster the same [cluster] control and a copy of control_key"
            );
        }
        Command::Cluster {
            command: ClusterCommand::Retire { config },
        } => {
            print!("{}", commands::cluster_retire(&Config::load(&config)?)?);
            eprintln!("the gateway is retired: keep its ledger for gatehouse-verify --cluster");
        }
        Command::Identities { json, admin } => {
            let list = admin.client()?.identities()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", identities_table(&list));
            }
        }
        Command::Credentials {
            identity,
            json,
            admin,
        } => {
            let list = admin.client()?.credentials(identity.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", credentials_table(&list));
            }
        }
        Command::Operators { json, admin } => {
            let list = admin.client()?.operators()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", operators_table(&list));
            }
        }
        Command::Sessions { json, admin } => {
            let list = admin.client()?.sessions()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", sessions_table(&list));
            }
        }
        Command::Approvals { all, json, admin } => {
            let list = admin.client()?.approvals(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", approvals_table(&list));
            }
        }
        Command::Approve {
            approval,
            duration,
            admin,
        } => {
            let r = admin.client()?.approve(approval, duration.as_deref())?;
            match (r["status"].as_str(), r["grant_until"].as_str()) {
                (Some("granted"), Some(until)) => eprintln!(
                    "approval {approval} granted: the statement runs, and its fingerprint is granted until {until}"
                ),
                (Some("granted"), None) => {
                    eprintln!("approval {approval} granted: the statement runs")
                }
                _ => eprintln!(
                    "approval {approval}: {} of {} approvers so far; still held",
                    r["approvers"], r["approvers_required"]
                ),
            }
        }
        Command::Deny {
            approval,
            reason,
            admin,
        } => {
            admin.client()?.deny(approval, &reason)?;
            eprintln!("approval {approval} denied");
        }
        Command::Grants { json, admin } => {
            let list = admin.client()?.grants()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", grants_table(&list));
            }
        }
        Command::Grant {
            command:
                GrantCommand::Revoke {
                    approval,
                    reason,
                    admin,
                },
        } => {
            admin.client()?.grant_revoke(approval, &reason)?;
            eprintln!("the grant of approval {approval} is revoked: its statements are held again");
        }
        Command::State {
            ledger,
            at,
            json,
            hash,
            check,
            key,
        } => {
            use gatehouse::state;
            if check {
                let report = state::check_snapshots(&ledger)?;
                if let Some(first) = report.mismatches.first() {
                    anyhow::bail!(
                        "{first}; {} of {} snapshots fail (folded {} events); do not start a gateway from this ledger until its writer is investigated",
                        report.mismatches.len(),
                        report.snapshots,
                        report.events
                    );
                }
                if let Some(problem) = &report.index_problem {
                    anyhow::bail!("{problem}; the snapshots themselves match the fold");
                }
                println!(
                    "{} snapshots match the fold of {} events from the first event",
                    report.snapshots - report.older,
                    report.events
                );
                if report.older > 0 {
                    println!(
                        "{} older snapshots (an earlier Gatehouse's encoding) were not compared; the gateway does not start from them",
                        report.older
                    );
                }
                return Ok(());
            }
            let at = match at {
                Some(a) => a.parse()?,
                None => state::At::Seq(u64::MAX - 1),
            };
            let verified = state::verified_state_at(&ledger, at, key.as_deref())?;
            if !verified.coverage.signed() {
                eprintln!(
                    "gatehouse: warning: the checkpoint's signature was not checked (no verifier key beside the ledger; pass --key): this state is not vouched for"
                );
            }
            if verified.unsigned_not_folded > 0 {
                eprintln!(
                    "gatehouse: {} later events are not under a signed checkpoint yet and were not folded",
                    verified.unsigned_not_folded
                );
            }
            let state = verified.state;
            if hash {
                println!("{}", gatehouse_engine::snapshot::state_hash(&state));
            } else if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                print!("{}", state::state_text(&state));
            }
        }
        Command::Export {
            ledger,
            session,
            identity,
            from,
            to,
            out,
            consistent_with,
            prove_complete,
        } => {
            let exported = export::export(&export::ExportOptions {
                ledger,
                session,
                identity,
                from,
                to,
                out: out.clone(),
                consistent_with,
                prove_complete,
            })?;
            eprintln!(
                "{exported}\nwrote {}; record its digest (below) with it, and verify it with \
                 gatehouse-verify {} --key <verifier key file>",
                out.display(),
                out.display()
            );
            println!("{}", exported.digest);
        }
        Command::Replay {
            ledger,
            session,
            identity,
            from,
            to,
            json,
            html,
            key,
        } => {
            use gatehouse::replay;
            let selection = match (session, identity) {
                (Some(s), _) => replay::Selection::Session(s),
                (None, Some(i)) => replay::Selection::Identity(i),
                (None, None) => unreachable!("clap requires --session or --identity"),
            };
            let window = replay::Window {
                from: from.map(|f| f.parse()).transpose()?,
                to: to.map(|t| t.parse()).transpose()?,
            };
            let replay = replay::load(&ledger, selection, window, key.as_deref())?;
            if let Some(out) = html {
                std::fs::write(&out, replay::html::render(&replay)).with_context(|| {
                    format!(
                        "cannot write the report to {}; check the directory exists and is writable",
                        out.display()
                    )
                })?;
                eprintln!(
                    "wrote the replay of {} ({} events) to {}",
                    replay.timeline.selection,
                    replay.timeline.events.map_or(0, |r| r.count),
                    out.display()
                );
            } else if json {
                write_stdout(&replay::json::render(&replay))?;
            } else {
                write_stdout(&replay::text::render(&replay))?;
            }
        }
        Command::Demo { dir } => {
            demo::run(dir)?;
        }
    }
    Ok(())
}

/// Writes long output; a reader that stops early (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// The running sessions, one line each, aligned.
fn sessions_table(list: &serde_json::Value) -> String {
    if items(list).is_empty() {
        return "no sessions\n".to_owned();
    }
    let header = [
        "SESSION",
        "IDENTITY",
        "TARGET",
        "CLIENT",
        "APPLICATION",
        "STARTED",
        "STATEMENTS",
        "HELD",
        "RUNNING",
        "CURRENT",
    ];
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|s| {
            let text = |k: &str| field(s, k);
            vec![
                s["session"].to_string(),
                text("identity"),
                text("target"),
                text("client_addr"),
                text("application_name"),
                text("started"),
                s["statements"].as_u64().unwrap_or(0).to_string(),
                if s["holding"].as_bool() == Some(true) {
                    "awaiting approval".to_owned()
                } else {
                    "-".to_owned()
                },
                s["running_ms"]
                    .as_u64()
                    .map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                s["current"].as_str().map_or("-".to_owned(), |sql| {
                    // One line, at most 60 characters (the whole text is in --json).
                    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
                    let mut shown: String = flat.chars().take(60).collect();
                    if flat.chars().count() > 60 {
                        shown.push('…');
                    }
                    printable(&shown)
                }),
            ]
        })
        .collect();
    table(&header, rows)
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut l: String = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}  "))
            .collect();
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// A JSON array's items (an empty list for anything else).
fn items(list: &serde_json::Value) -> &[serde_json::Value] {
    list.as_array().map_or(&[], Vec::as_slice)
}

/// A text field of a listed item, printable, `-` when absent.
fn field(item: &serde_json::Value, key: &str) -> String {
    item[key].as_str().map_or("-".to_owned(), printable)
}

/// The identities, one line each.
fn identities_table(list: &serde_json::Value) -> String {
    if items(list).is_empty() {
        return "no identities\n".to_owned();
    }
    let rows = items(list)
        .iter()
        .map(|i| {
            let state = match (i["disabled"].as_str(), i["blocked"].as_str()) {
                (Some(why), _) => format!("disabled: {}", printable(why)),
                (None, Some(why)) => format!("blocked: {}", printable(why)),
                (None, None) => "active".to_owned(),
            };
            vec![
                field(i, "identity"),
                state,
                i["valid_credentials"].as_u64().unwrap_or(0).to_string(),
                field(i, "created_by"),
                field(i, "description"),
            ]
        })
        .collect();
    table(
        &[
            "IDENTITY",
            "STATE",
            "CREDENTIALS",
            "CREATED BY",
            "DESCRIPTION",
        ],
        rows,
    )
}

/// The credentials, one line each.
fn credentials_table(list: &serde_json::Value) -> String {
    if items(list).is_empty() {
        return "no credentials\n".to_owned();
    }
    let rows = items(list)
        .iter()
        .map(|c| {
            vec![
                field(c, "credential"),
                field(c, "identity"),
                match c["revoked"].as_str() {
                    Some(why) => format!("revoked: {}", printable(why)),
                    None => field(c, "status"),
                },
                field(c, "expires_at"),
                field(c, "issued_by"),
            ]
        })
        .collect();
    table(
        &["CREDENTIAL", "IDENTITY", "STATUS", "EXPIRES", "ISSUED BY"],
        rows,
    )
}

/// The operators, one line each.
fn operators_table(list: &serde_json::Value) -> String {
    if items(list).is_empty() {
        return "no operators\n".to_owned();
    }
    let rows = items(list)
        .iter()
        .map(|o| {
            let joined = |key: &str| -> String {
                let texts: Vec<&str> = o[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str())
                    .collect();
                texts.join(", ")
            };
            vec![
                field(o, "operator"),
                joined("roles"),
                field(o, "added_by"),
                joined("chat"),
            ]
        })
        .collect();
    table(&["OPERATOR", "ROLES", "ADDED BY", "CHAT USERS"], rows)
}

fn approvals_table(list: &serde_json::Value) -> String {
    let empty = Vec::new();
    let items = list.as_array().unwrap_or(&empty);
    if items.is_empty() {
        return "no approval requests\n".to_owned();
    }
    let mut out = String::new();
    for a in items {
        let text = |k: &str| a[k].as_str().unwrap_or("-").to_owned();
        out.push_str(&format!(
            "#{} {} · {} (session {}) · rule {} · approvers {}/{} · expires {}\n    {}\n",
            a["approval"],
            text("status"),
            text("identity"),
            a["session"],
            text("rule"),
            a["approvers"].as_array().map_or(0, Vec::len),
            a["approvers_required"],
            text("expires_at"),
            printable(&text("sql")).replace('\n', "\n    "),
        ));
        for (i, p) in a["params"].as_array().into_iter().flatten().enumerate() {
            let shown = match (p["value"].as_str(), p["binary"].as_bool()) {
                (None, _) => "NULL".to_owned(),
                (Some(hex), Some(true)) => format!("\\x{hex} (binary; its type is not recorded)"),
                (Some(v), _) => format!("'{}'", printable(v).replace('\'', "''")),
            };
            out.push_str(&format!("    ${} = {shown}\n", i + 1));
        }
    }
    out
}

fn grants_table(list: &serde_json::Value) -> String {
    let empty = Vec::new();
    let items = list.as_array().unwrap_or(&empty);
    if items.is_empty() {
        return "no grants in force\n".to_owned();
    }
    let mut out = String::new();
    for g in items {
        let text = |k: &str| g[k].as_str().unwrap_or("-").to_owned();
        let approvers: Vec<&str> = g["approvers"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "approval #{} · {} · until {} · approved by {}\n    {}\n",
            g["approval"],
            text("identity"),
            text("until"),
            approvers.join(", "),
            printable(&text("fingerprint")),
        ));
    }
    out
}

/// Text from agents, safe for a terminal: control characters other than
/// newline and tab are shown escaped.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `gatehouse` command lines in the `sh` blocks of a Markdown file,
    /// as argument lists: continuation lines joined, leading environment
    /// assignments dropped, cut at the first pipe, redirection or `&`.
    fn documented_commands(markdown: &str) -> Vec<Vec<String>> {
        let mut commands = Vec::new();
        let mut in_sh = false;
        let mut line = String::new();
        for raw in markdown.lines() {
            let trimmed = raw.trim();
            if trimmed.starts_with("```") {
                in_sh = trimmed == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            if let Some(head) = trimmed.strip_suffix('\\') {
                line.push_str(head);
                line.push(' ');
                continue;
            }
            line.push_str(trimmed);
            let words = shlex::split(&line).unwrap_or_else(|| panic!("unbalanced quotes: {line}"));
            line.clear();
            let words: Vec<String> = words
                .into_iter()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .take_while(|w| !["|", "&", ">", ">>", "2>", "#"].contains(&w.as_str()))
                .collect();
            if words.first().map(String::as_str) == Some("gatehouse") {
                commands.push(words);
            }
        }
        commands
    }

    /// Every `gatehouse` command the README and the runbook show parses with
    /// this binary's arguments: a renamed flag or command fails here, not
    /// in a responder's hands.
    #[test]
    fn documented_command_lines_parse() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut checked = 0;
        for doc in ["README.md", "docs/incident-response.md"] {
            let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
            let commands = documented_commands(&text);
            assert!(
                commands.len() >= 10,
                "{doc}: only {} commands found",
                commands.len()
            );
            for words in commands {
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{doc}: `{}` does not parse:\n{e}", words.join(" "));
                }
                checked += 1;
            }
        }
        assert!(checked >= 35, "only {checked} command lines checked");
    }

    #[test]
    fn command_lines_are_extracted_as_a_shell_reads_them() {
        let doc = "text\n```sh\nA=1 gatehouse serve &   # comment\ngatehouse export --from 'x y' \\\n  --out b | tail\ncd /tmp\n```\n```toml\ngatehouse = 1\n```\n";
        assert_eq!(
            documented_commands(doc),
            vec![
                vec!["gatehouse".to_owned(), "serve".to_owned()],
                vec![
                    "gatehouse".to_owned(),
                    "export".to_owned(),
                    "--from".to_owned(),
                    "x y".to_owned(),
                    "--out".to_owned(),
                    "b".to_owned()
                ],
            ]
        );
    }
}
