use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use quire::admin::{self, KeySpec};
use quire::config::{Config, ServeArgs};
use quire::domain::keys::{parse_duration_secs, parse_scopes};
use std::process::ExitCode;

/// The system allocator, journaling the document a worker was on when an allocation failed
/// (the process aborts then; the next start quarantines that document).
#[global_allocator]
static ALLOC: quire::alloc_journal::Recording = quire::alloc_journal::Recording;

#[derive(Parser)]
#[command(
    name = "quire",
    version,
    about = "Self-hosted document structuring pipeline"
)]
struct Cli {
    /// SQLite database file (`:memory:` = a temporary file deleted at exit).
    #[arg(long, global = true, env = "QUIRE_DB", default_value = "quire.db")]
    db: String,
    /// Log lines as text, or as one flat JSON object per line (time, level, target, message, the
    /// request id and the access log's fields) for Loki, ELK and the like.
    #[arg(
        long,
        global = true,
        env = "QUIRE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Manage organizations.
    Orgs {
        #[command(subcommand)]
        cmd: OrgsCmd,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Measure throughput, rerun latency, progress under load and memory (see README).
    Bench {
        /// Documents in the measured run (default 10,000; 800 with --model-stub).
        #[arg(long)]
        docs: Option<usize>,
        /// Executor worker threads (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Measure model extraction instead, against a stub model server that answers after
        /// --stub-latency-ms with --stub-in-flight calls at once.
        #[arg(long)]
        model_stub: bool,
        /// Also measure PDF intake and OCR (Tesseract where installed) on generated invoices.
        #[arg(long)]
        documents: bool,
        /// A file holding an earlier run's summary (its last JSON line): print the change of
        /// every figure against it.
        #[arg(long, value_name = "FILE")]
        compare: Option<std::path::PathBuf>,
        /// With --model-stub: how long the stub takes to answer.
        #[arg(long, default_value_t = 200)]
        stub_latency_ms: u64,
        /// With --model-stub: calls in flight at once (the model's concurrency).
        #[arg(long, default_value_t = 16)]
        stub_in_flight: usize,
        /// Every Nth document fails its gate and is held for review (1: every document, a
        /// queue as long as the run).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
        held_every: u64,
        /// Subscribe a webhook to every event while measuring, delivered to a local receiver
        /// (the figures with and without it show what delivery costs the executor).
        #[arg(long)]
        webhook_sink: bool,
        /// Serve the database from this many nodes (PostgreSQL only): this process and
        /// `quire serve` children, each with its share of the cores as workers.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
        nodes: u64,
        /// Charge every request to a rate limit of this many per minute (0, the default: no
        /// limit), to measure what the check costs: on PostgreSQL a round trip to the bucket
        /// the nodes share. Set it above what the bench sends, e.g. 100000000.
        #[arg(long, default_value_t = 0)]
        rate_limit: u32,
    },
    /// A guided tour on a live instance that stays up until Ctrl-C (a temporary database
    /// unless --db names one; logs at warn unless RUST_LOG says otherwise).
    Demo {
        /// Extract with this OpenAI-compatible model server: URL[,key=value…] with the keys
        /// of `serve --model` (e.g. http://127.0.0.1:11434/v1,model=qwen2.5:7b); else the
        /// built-in rules.
        #[arg(long)]
        model: Option<String>,
    },
    /// Remove the versions and verdicts that reruns superseded more than a while ago, then give
    /// the space back (safe while the service runs; see README, Retention).
    Purge {
        /// Keep what was superseded more recently than this, e.g. 90d, 12h, 0s.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: std::time::Duration,
        /// Only this organization (by name or id); every organization when left out.
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
    },
    /// Copy the database consistently while the service runs (SQLite online backup).
    Backup {
        /// Destination file (must not exist).
        path: std::path::PathBuf,
    },
    /// Show the configuration `serve` would run with.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Read one document from stdin into pages (the service runs this in a confined child).
    #[command(hide = true)]
    ReadDocument {
        /// The document's binary media type.
        #[arg(long)]
        mime: String,
        /// The reading limits as JSON.
        #[arg(long)]
        limits: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (flags, QUIRE_* variables, --config file, defaults) as
    /// TOML that `--config` reads back; secrets are masked.
    Print(ServeArgs),
}

#[derive(Subcommand)]
enum OrgsCmd {
    /// Create an organization (names are unique).
    Create {
        /// The organization's name.
        name: String,
    },
    /// List organizations.
    List,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key and print it once.
    Create {
        /// The organization the key acts for, by name or id (see `quire orgs list`).
        #[arg(long)]
        org: String,
        /// Comma-separated scopes: read, write, extract.
        #[arg(long, default_value = "extract,read,write")]
        scopes: String,
        /// A name for the key; reviewers' decisions carry it unless X-Reviewer is sent.
        #[arg(long, default_value = "cli key")]
        name: String,
        /// Lifetime such as 30d, 12h, 45m.
        #[arg(long)]
        expires_in: Option<String>,
        /// Requests per minute for this key (overrides the service default; 0 = unlimited).
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id (see `quire keys list`).
        id: String,
    },
}

/// An age such as `90d`, `12h` or `0s`.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (write e.g. 90d, 12h or 0s)"))
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory
/// stays in them: with a dozen busy threads the peak grew with the size of the run (93 MB after
/// 100,000 documents). Two arenas keep it flat (65 MB). Rust and SQLite allocate through
/// mimalloc, so what is left on glibc's malloc (the C library's own buffers) does not queue on
/// the two arenas' locks.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The `--config` file named on the command line or in QUIRE_CONFIG, if any.
fn config_file() -> Option<std::path::PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        if a == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(p.into());
        }
    }
    std::env::var_os("QUIRE_CONFIG").map(Into::into)
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    if !quire::store::allocator::use_mimalloc() {
        eprintln!("warning: SQLite keeps the C library's allocator");
    }
    quire::alloc_journal::enable();
    if let Some(path) = config_file() {
        if let Err(e) = quire::config::load_file(&path) {
            return fail(e);
        }
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Whether --db (or QUIRE_DB) was given at all: `demo` and `bench` use a database of their
    // own unless one is named, even when it is named `quire.db`.
    let db_given = !matches!(
        matches.value_source("db"),
        Some(clap::parser::ValueSource::DefaultValue) | None
    );
    // The demo talks to a person in a terminal: its service's access log would bury the tour,
    // so it logs warnings only unless RUST_LOG asks for more.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    let format = match cli.log_format {
        LogFormat::Text => quire::logging::Format::Text,
        LogFormat::Json => quire::logging::Format::Json,
    };
    if let Err(e) = quire::logging::init(format, default_level) {
        return fail(format!("cannot start logging: {e}"));
    }
    match cli.command {
        Command::Serve(args) => serve(Config::from_args(cli.db, &args), args.ready_json),
        Command::ReadDocument { mime, limits } => {
            match quire::intake::child::serve_child(&mime, &limits) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Bench {
            docs,
            workers,
            model_stub,
            documents,
            compare,
            stub_latency_ms,
            stub_in_flight,
            held_every,
            webhook_sink,
            nodes,
            rate_limit,
        } => {
            // Read before measuring: a missing or unreadable file fails in a second, not after
            // the five minutes of the run.
            let earlier = match compare.as_deref().map(quire::tools::bench::read_summary) {
                Some(Err(e)) => return fail(e),
                Some(Ok(v)) => Some(v),
                None => None,
            };
            let db = db_given.then(|| cli.db.clone());
            let summary = if model_stub {
                quire::tools::bench_model::run(quire::tools::bench_model::ModelBenchArgs {
                    docs: docs.unwrap_or(800),
                    latency: std::time::Duration::from_millis(stub_latency_ms),
                    in_flight: stub_in_flight,
                    workers,
                })
            } else {
                quire::tools::bench::run(quire::tools::bench::BenchArgs {
                    docs: docs.unwrap_or(10_000),
                    workers,
                    db,
                    held_every: held_every as usize,
                    webhook_sink,
                    documents,
                    nodes: nodes as usize,
                    rate_limit,
                })
            };
            match summary {
                Ok(summary) => {
                    if let Some(earlier) = &earlier {
                        quire::tools::bench::print_comparison(earlier, &summary);
                    }
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Demo { model } => {
            match quire::tools::demo::run(db_given.then(|| cli.db.clone()), model) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Purge { older_than, org } => {
            let db = match admin::open(&cli.db) {
                Ok(db) => db,
                Err(e) => return fail(e),
            };
            let org_id = match org {
                None => None,
                Some(org) => match db.read(|c| quire::store::orgs::find_by_name_or_id(c, &org)) {
                    Ok(Some(o)) => Some(o.id),
                    Ok(None) => return fail(format!("no organization '{org}' (by name or id)")),
                    Err(e) => return fail(e),
                },
            };
            let stop = std::sync::atomic::AtomicBool::new(false);
            let purged = quire::engine::retention::purge(&db, org_id.as_deref(), older_than, &stop)
                .and_then(|mut r| {
                    r.bytes_after = quire::engine::retention::truncate_wal(&db)?;
                    Ok(r)
                });
            match purged {
                Ok(r) => {
                    println!(
                        "purged {} superseded version(s) and {} verdict(s) of {} restarted document(s); {} → {} bytes",
                        r.versions, r.verdicts, r.documents, r.bytes_before, r.bytes_after
                    );
                    if !r.file_shrinks {
                        eprintln!("this database was created before incremental vacuum: the freed space is reused by later writes, and the file keeps its size");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Backup { path } => {
            let db = match admin::open(&cli.db) {
                Ok(db) => db,
                Err(e) => return fail(e),
            };
            match quire::store::backup(&db, &path) {
                Ok(()) => {
                    eprintln!("backed up {} to {}", cli.db, path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Config {
            cmd: ConfigCmd::Print(args),
        } => {
            let mut out = format!("db = {}\n", toml::Value::String(cli.db.clone()));
            match toml::to_string(&args) {
                Ok(t) => out.push_str(&t),
                Err(e) => return fail(e),
            }
            print!("{out}");
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            // Written whole and then copied out, so a reader that closes early (`| head`) ends
            // the copy quietly instead of a panic inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "quire", &mut script);
            use std::io::Write;
            match std::io::stdout().write_all(&script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Orgs { cmd } => {
            let db = match admin::open(&cli.db) {
                Ok(db) => db,
                Err(e) => return fail(e),
            };
            match cmd {
                OrgsCmd::Create { name } => match admin::create_org(&db, &name) {
                    Ok(o) => {
                        println!("created organization {} ({})", o.name, o.id);
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                },
                OrgsCmd::List => match db.read(quire::store::orgs::list) {
                    Ok(list) => {
                        println!("id\tname\tcreated_at");
                        if list.is_empty() {
                            eprintln!("no organizations yet: quire orgs create NAME");
                        }
                        for o in list {
                            println!("{}\t{}\t{}", o.id, o.name, o.created_at);
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                },
            }
        }
        Command::Keys { cmd } => {
            let db = match admin::open(&cli.db) {
                Ok(db) => db,
                Err(e) => return fail(e),
            };
            keys(&db, cmd)
        }
    }
}

fn keys(db: &quire::store::Db, cmd: KeysCmd) -> ExitCode {
    match cmd {
        KeysCmd::Create {
            org,
            scopes,
            name,
            expires_in,
            rate_limit,
        } => {
            let scopes = match parse_scopes(&scopes) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let expires = match expires_in.as_deref().map(parse_duration_secs).transpose() {
                Ok(e) => e,
                Err(e) => return fail(e),
            };
            let spec = KeySpec {
                org: &org,
                name: &name,
                scopes: &scopes,
                expires_in_secs: expires,
                rate_limit,
            };
            match admin::create_key(db, spec) {
                Ok(k) => {
                    println!("{}", k.plain);
                    eprintln!(
                        "created key {} for organization {} (shown once)",
                        k.id, k.org_name
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCmd::List => {
            match db.read(quire::store::keys::list) {
                Ok(list) => {
                    println!("id\torganization\tname\tprefix\tscopes\trate_limit\texpires_at\trevoked_at");
                    for k in list {
                        let scopes: Vec<_> = k.scopes.iter().map(|s| s.as_str()).collect();
                        println!(
                            "{}\t{}\t{}\t{}…\t{}\t{}\t{}\t{}",
                            k.id,
                            k.org_name,
                            k.name,
                            k.prefix,
                            scopes.join(","),
                            k.rate_limit
                                .map(|r| r.to_string())
                                .unwrap_or_else(|| "default".into()),
                            k.expires_at.unwrap_or_else(|| "-".into()),
                            k.revoked_at.unwrap_or_else(|| "-".into())
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCmd::Revoke { id } => match db.write(true, |tx| quire::store::keys::revoke(tx, &id)) {
            Ok(true) => {
                println!("revoked {id}");
                ExitCode::SUCCESS
            }
            Ok(false) => fail(format!("no active key with id {id}")),
            Err(e) => fail(e),
        },
    }
}

fn serve(config: Config, ready_json: bool) -> ExitCode {
    let sys = actix_web::rt::System::new();
    sys.block_on(async move {
        let app = match quire::Application::build(config.clone()) {
            Ok(app) => app,
            Err(e) => return fail(format!("cannot start: {e}")),
        };
        let url = format!("http://{}:{}", config.host, app.port());
        if ready_json {
            let key = match (&config.bootstrap_key, &app.first_key) {
                (Some(k), _) => k.clone(),
                (None, Some(k)) => k.clone(),
                (None, None) => {
                    let spec = KeySpec {
                        org: admin::DEFAULT_ORG,
                        name: "fixture key",
                        scopes: quire::domain::keys::DEFAULT_SCOPES,
                        expires_in_secs: None,
                        rate_limit: None,
                    };
                    let db = app.state().db.clone();
                    let made = admin::create_org(&db, admin::DEFAULT_ORG)
                        .map(|_| ())
                        .or(Ok::<_, admin::AdminError>(()))
                        .and_then(|_| admin::create_key(&db, spec));
                    match made {
                        Ok(k) => k.plain,
                        Err(e) => return fail(format!("cannot create a fixture key: {e}")),
                    }
                }
            };
            println!("{}", serde_json::json!({ "url": url, "api_key": key }));
        } else if let Some(k) = &app.first_key {
            println!("Created organization 'default' and its first API key (extract, read, write). It is shown only once:");
            println!();
            println!("    {k}");
            println!();
            println!("Try: curl -H 'Authorization: Bearer {k}' {url}/v1/schemas");
        } else {
            // A second start shows no key (keys are shown once): say how to get one.
            println!(
                "No new key was made: this database already has one. To make another:\n    quire --db {} keys create --org {} --name 'my key'",
                quire::store::shown_db(&config.db),
                admin::DEFAULT_ORG
            );
        }
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_and_argument_of_every_subcommand_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "quire", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
