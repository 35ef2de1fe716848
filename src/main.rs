//! `govex`: parse the command line, set up logging, load config, run.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use govex::config::NodeConfig;
use govex_bus::{config::LogFormat, telemetry};

/// govex: a Kafka data-sharing exchange for government department systems.
///
/// With no arguments, runs a node on the embedded (in-memory) bus with the built-in
/// default configuration.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Node {
        /// TOML config file; without one the built-in default is used. `GOVEX_*` variables
        /// override either (see README).
        #[arg(long, short, env = "GOVEX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration: `govex config check` loads a config file with the `GOVEX_*` overrides
    /// and `${NAME}` references of the environment and checks it without starting anything.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
        /// The TOML config file; without one the built-in default is checked.
        #[arg(long, short, env = "GOVEX_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Data stewards' tools: lint, check, push, list and diff schemas.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
        /// Print JSON for machines instead of tables for people.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Import a department's file (NDJSON or CSV) through the intake checks, resumably.
    ///
    /// Point it at the node with --config (the node's own config file) or GOVEX_BUS__BROKERS
    /// and GOVEX_REGISTRY__URL. Rejected records go, as they were, to <file>.rejects.ndjson
    /// or <file>.rejects.csv (created readable by you only: they hold personal data), their
    /// errors to <file>.errors.ndjson; fix either file and import it again. What was
    /// published is remembered per folder and record type, so a rerun publishes only what
    /// is new and nothing twice.
    ///
    /// Exit status: 0 every record published, 2 finished with rejected records, 3 stopped
    /// early (rerun to resume), 1 could not run.
    Import {
        /// land-registry, housing, tax or provident-fund.
        department: String,
        /// The record type, e.g. deed-tax-payment.
        record: String,
        /// The file: .csv is CSV (header row of field paths), anything else NDJSON.
        file: PathBuf,
        /// The node's TOML config (for bus.brokers and the registry).
        #[arg(long, short, env = "GOVEX_CONFIG")]
        config: Option<PathBuf>,
        /// The file is GBK-encoded.
        #[arg(long)]
        gbk: bool,
        /// Records sent and checkpointed together.
        #[arg(long, default_value_t = 500)]
        batch_lines: usize,
    },
    /// The e-licence use log: `govex audit verify` checks its hash chain (run it with the
    /// node stopped) and names the first broken link.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        /// The node's TOML config (for data_dir).
        #[arg(long, short, env = "GOVEX_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// The sled stores under data_dir: `govex store check` opens each one (run it with the
    /// node stopped) with the configured cache (storage.cache_mib), checks its format
    /// version, reads every entry, and prints what it holds and the peak memory it took.
    /// Exit status 1 when a store cannot be opened or read.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
        /// The node's TOML config (for data_dir and storage.cache_mib).
        #[arg(long, short, env = "GOVEX_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Sink maintenance: `govex sink elicense --rebuild` rebuilds the e-licence store from its
    /// topic (run it with the node stopped; the old store is kept beside the new one).
    Sink {
        /// The sink: elicense.
        name: String,
        /// Rebuild the store from the topic.
        #[arg(long)]
        rebuild: bool,
        /// The node's TOML config (for bus.brokers, the registry and data_dir).
        #[arg(long, short, env = "GOVEX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a home purchase reviewed in parallel across a province, a city and a county node
    /// in one process, each on its own embedded Kafka cluster, and print what happened where.
    /// The nodes' logs are left out (errors aside) unless --logs asks for them.
    Demo {
        /// Show the nodes' logs on stderr (RUST_LOG chooses what).
        #[arg(long)]
        logs: bool,
    },
    /// Department tokens: `govex token new <department>` prints a new token (give it to the
    /// department's system) and the config entry holding only its hash.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check an identifier and say which character is wrong, or compute its check character:
    /// citizen identity numbers (GB 11643), unified social credit codes (GB 32100) and
    /// e-licence identifiers. Exits 1 when the identifier is not valid.
    ///
    /// `govex id 91350100M000100Y43` checks; `govex id --complete 91350100M000100Y4` gives the
    /// check character. A citizen identity number is never printed in full.
    Id {
        /// The identifier; with --complete, without its check character.
        value: String,
        /// What it is; guessed from its form when not given.
        #[arg(long, value_enum)]
        kind: Option<govex::id_cmd::Kind>,
        /// Compute the check character instead of checking.
        #[arg(long)]
        complete: bool,
    },
    /// Dead letters, for data stewards: `govex dlq list` shows what the sinks refused and why,
    /// `govex dlq show <id>` one of them with its record (personal fields masked), and
    /// `govex dlq replay <id>...|--topic T [--partition P --from A --to B]|--all` puts them
    /// back once the cause is fixed (a schema registered, a missing licence arrived). A
    /// dead letter put back once is skipped unless --again; its record applies at most once
    /// either way (its event id). Talks to a node's API with a steward's token.
    ///
    /// Exit status: 0 done, 2 a replay left some not put back (or more remain), 1 could not run.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// The node's API.
        #[arg(long, global = true, default_value = govex::dlq_cmd::DEFAULT_API, env = "GOVEX_API_URL")]
        api: String,
        /// A steward's token (an auditor's may list and show).
        #[arg(long, global = true, env = "GOVEX_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print JSON for machines instead of lines for people.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Take a backup of a running node's stores (`GET /v1/backup`, with an operator's
    /// token): every store the process at --api keeps, checked whole before it is kept at
    /// --out. In a chart, back up each pod that has a volume. The backup holds personal data:
    /// keep it as you keep the volumes.
    Backup {
        /// The node's API (one pod's: each backs up the stores it keeps).
        #[arg(long, default_value = govex::dlq_cmd::DEFAULT_API, env = "GOVEX_API_URL")]
        api: String,
        /// An operator's token.
        #[arg(long, env = "GOVEX_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Why it is taken: the use log records it with the backup.
        #[arg(long, default_value = "scheduled backup")]
        purpose: String,
        /// Where to keep it (never overwritten; written beside it as .partial until whole).
        #[arg(long, short)]
        out: PathBuf,
        /// The CA (PEM) that signed the node's API certificate, when the API is served over TLS.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Restore a backup into the node's data_dir, with the node stopped and its stores gone
    /// (a lost or new volume): refuses a damaged file or a data_dir that holds a store. The
    /// stores consumer groups fill then refill from the start of their topics at the next
    /// start, which brings back what came after the backup.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The node's TOML config (for data_dir).
        #[arg(long, short, env = "GOVEX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a standalone embedded broker and print its bootstrap address, so several govex
    /// processes on one machine can share one bus (in memory, for trial use).
    Broker {
        /// Number of brokers in the embedded cluster.
        #[arg(long, default_value_t = 3)]
        brokers: i32,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the configuration and print what this process would run.
    Check,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first per partition.
    List {
        /// Of this topic only (the records' topic or its .dlq).
        #[arg(long)]
        topic: Option<String>,
        /// open (never put back) or replayed.
        #[arg(long)]
        state: Option<String>,
        /// At most this many (up to 500).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter and its record, personal fields masked.
    Show {
        /// Its id: <dead-letter topic>/<partition>/<offset>.
        id: String,
    },
    /// Put dead letters back on their topics for the component that refused them.
    Replay {
        /// Dead letters by id.
        ids: Vec<String>,
        /// Or those of one topic.
        #[arg(long, conflicts_with = "ids")]
        topic: Option<String>,
        /// Of one partition of its dead-letter topic.
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        /// From this offset (inclusive).
        #[arg(long, requires = "partition")]
        from: Option<i64>,
        /// To this offset (inclusive).
        #[arg(long, requires = "partition")]
        to: Option<i64>,
        /// Or every dead letter.
        #[arg(long, conflicts_with_all = ["ids", "topic"])]
        all: bool,
        /// Also those put back before.
        #[arg(long)]
        again: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the use log's hash chain.
    Verify,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Open and read every store.
    Check,
    /// Have the e-licence store, the dossier and the case statistics refill themselves from the start of their
    /// topics at the next start (after a volume snapshot is restored: they are older than
    /// their consumer groups' offsets). Idempotent: a refill applies nothing twice.
    Refill,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random token for a department.
    New {
        /// land-registry, housing, tax, provident-fund or platform.
        department: String,
        /// A label for logs (the calling system).
        #[arg(long)]
        label: Option<String>,
        /// department (a department system: sends and reads records), steward (writes the
        /// schema registry), auditor (reads every entry of the use log) or operator (takes
        /// backups).
        #[arg(long, default_value = "department")]
        role: String,
    },
}

/// Where a steward's tools look by default.
const DEFAULT_REGISTRY: &str = "http://127.0.0.1:8081";

#[derive(Subcommand)]
enum SchemaCommand {
    /// Check the working tree's schemas against the house rules (names, docs in Chinese and
    /// English, logical types for money and dates, personal fields catalogued).
    Lint {
        /// The schemas folder (with avro/ and catalog.toml); by default the one found from
        /// the current directory upwards.
        #[arg(long = "schemas", alias = "dir", value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check the working tree's schemas for compatibility against a registry or a git ref.
    Check {
        /// A registry URL (http://...) or a git ref (main, v1.2.0, HEAD~1).
        #[arg(long)]
        against: String,
        /// The schemas folder (with avro/ and catalog.toml); by default the one found from
        /// the current directory upwards.
        #[arg(long = "schemas", alias = "dir", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Compatibility level; default: the subject's level in the registry, or BACKWARD
        /// against a git ref.
        #[arg(long)]
        level: Option<String>,
        /// A steward's token for the registry (writes need one; reads too where the registry
        /// is configured so); the same variable sets `registry.token` of a node.
        #[arg(long, env = "GOVEX_REGISTRY__TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Register every working-tree schema under `<topic>-value`.
    Push {
        /// The schemas folder (with avro/ and catalog.toml); by default the one found from
        /// the current directory upwards.
        #[arg(long = "schemas", alias = "dir", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The registry's URL.
        #[arg(long, default_value = DEFAULT_REGISTRY, env = "GOVEX_REGISTRY_URL")]
        registry: String,
        /// A steward's token for the registry (writes need one; reads too where the registry
        /// is configured so); the same variable sets `registry.token` of a node.
        #[arg(long, env = "GOVEX_REGISTRY__TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// List the registry's subjects with their latest versions and levels.
    List {
        /// The registry's URL.
        #[arg(long, default_value = DEFAULT_REGISTRY, env = "GOVEX_REGISTRY_URL")]
        registry: String,
        /// A steward's token for the registry (writes need one; reads too where the registry
        /// is configured so); the same variable sets `registry.token` of a node.
        #[arg(long, env = "GOVEX_REGISTRY__TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Show what changed between two versions of a subject.
    Diff {
        /// The subject, e.g. gov.tax.deed-tax-payment.v1-value.
        subject: String,
        /// The older version (a number or latest).
        from: String,
        /// The newer version.
        to: String,
        /// The registry's URL.
        #[arg(long, default_value = DEFAULT_REGISTRY, env = "GOVEX_REGISTRY_URL")]
        registry: String,
        /// A steward's token for the registry (writes need one; reads too where the registry
        /// is configured so); the same variable sets `registry.token` of a node.
        #[arg(long, env = "GOVEX_REGISTRY__TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

async fn schema(command: SchemaCommand, json: bool) -> Result<bool> {
    use govex::schema_cmd as cmd;
    match command {
        SchemaCommand::Lint { dir } => cmd::lint_command(&cmd::find_schemas(dir)?, json),
        SchemaCommand::Check { against, dir, level, token } => {
            let level = level.map(|l| l.to_uppercase().parse()).transpose().map_err(anyhow::Error::msg)?;
            cmd::check_command(&cmd::find_schemas(dir)?, &against, token.as_deref(), level, json).await
        }
        SchemaCommand::Push { dir, registry, token } => {
            cmd::push_command(&cmd::find_schemas(dir)?, &cmd::client(&registry, token.as_deref()), json).await
        }
        SchemaCommand::List { registry, token } => {
            cmd::list_command(&cmd::client(&registry, token.as_deref()), json).await
        }
        SchemaCommand::Diff { subject, from, to, registry, token } => {
            cmd::diff_command(&cmd::client(&registry, token.as_deref()), &subject, &from, &to, json).await
        }
    }
}

/// Errors are the user's to act on: the message and its causes, one line, never a backtrace
/// (`RUST_BACKTRACE=1` is common on developers' machines and would print dozens of frames).
fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: the async runtime cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    // clap's `help` subcommand refuses its own `--help` ("unrecognized subcommand"): answer
    // `govex help --help` with the help it asks for.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("help") && args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        use clap::CommandFactory;
        Cli::command().print_help()?;
        return Ok(());
    }
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Node { config: None }) {
        Command::Node { config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            let format = if cli.log_json { LogFormat::Json } else { config.log.format };
            telemetry::init(format);
            govex::node::run(config, govex_bus::shutdown::listen()).await
        }
        Command::Dlq { command, api, token, json } => {
            use govex::dlq_cmd::Request;
            let Some(token) = token else { anyhow::bail!("a steward's token: --token or GOVEX_TOKEN") };
            let request = match command {
                DlqCommand::List { topic, state, limit } => Request::List { topic, state, limit },
                DlqCommand::Show { id } => Request::Show { id },
                DlqCommand::Replay { ids, topic, partition, from, to, all, again } => {
                    Request::Replay { ids, topic, partition, from, to, all, again }
                }
            };
            if !govex::dlq_cmd::run(&api, &token, request, json).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check, config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            for line in govex::node::preflight(&config)?.summary(&config) {
                println!("{line}");
            }
            // Each front-end database is asked: it answers, and its tables fit the mapping.
            for source in &config.frontdb.sources {
                govex_adapters::frontdb::check_source(source, &config.time_zone)
                    .await
                    .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
                println!(
                    "front-end database source {}: {} fits",
                    source.name,
                    match source.query {
                        Some(_) => "its query".to_owned(),
                        None => format!("table {}", source.table),
                    }
                );
            }
            for table in &config.frontdb.tables {
                govex_sinks::down_table::check_table(table, &config.time_zone)
                    .await
                    .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
                println!("front-end database down-table {}: table {} fits", table.name, table.table);
            }
            println!("configuration is valid");
            Ok(())
        }
        Command::Schema { command, json } => {
            telemetry::init(if cli.log_json { LogFormat::Json } else { LogFormat::Text });
            if !schema(command, json).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Import { department, record, file, config, gbk, batch_lines } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            telemetry::init(if cli.log_json { LogFormat::Json } else { config.log.format });
            let args = govex::import_cmd::ImportArgs { config, department, record, file, gbk, batch_lines };
            let outcome = govex::import_cmd::import(args).await?;
            if outcome.exit_status() != 0 {
                std::process::exit(outcome.exit_status());
            }
            Ok(())
        }
        Command::Audit { command: AuditCommand::Verify, config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            telemetry::init(if cli.log_json { LogFormat::Json } else { config.log.format });
            if !govex::maintenance::audit_verify(&config).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Backup { api, token, purpose, out, ca_cert } => {
            let Some(token) = token else { anyhow::bail!("an operator's token: --token or GOVEX_TOKEN") };
            let summary = govex::backup::save(&api, &token, &purpose, &out, ca_cert.as_deref()).await?;
            println!(
                "{}: {} entries ({:.1} MiB) from {:?}",
                out.display(),
                summary.entries,
                summary.bytes as f64 / f64::from(1 << 20),
                summary.stores
            );
            Ok(())
        }
        Command::Restore { file, config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            govex::backup::restore(&file, &config.data_dir, &config.division.to_string())
        }
        Command::Store { command, config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            telemetry::init(if cli.log_json { LogFormat::Json } else { config.log.format });
            let done = match command {
                StoreCommand::Check => govex::maintenance::store_check(&config)?,
                StoreCommand::Refill => govex::maintenance::store_refill(&config)?,
            };
            if !done {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Sink { name, rebuild, config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            telemetry::init(if cli.log_json { LogFormat::Json } else { config.log.format });
            if name != "elicense" || !rebuild {
                anyhow::bail!("only `govex sink elicense --rebuild` is available");
            }
            govex::maintenance::rebuild_elicense(&config).await
        }
        Command::Demo { logs } => {
            let format = if cli.log_json { LogFormat::Json } else { LogFormat::Text };
            match logs {
                true => telemetry::init(format),
                false => telemetry::init_with(format, "error"),
            }
            let data = govex::demo::scratch_dir();
            let result = govex::demo::run(&data).await;
            let _ = std::fs::remove_dir_all(&data);
            result
        }
        Command::Token { command: TokenCommand::New { department, label, role } } => {
            print!("{}", govex::token_cmd::new_token(&department, label.as_deref(), &role)?);
            Ok(())
        }
        Command::Id { value, kind, complete } => {
            if complete {
                println!("{}", govex::id_cmd::complete(&value, kind).map_err(anyhow::Error::msg)?);
                return Ok(());
            }
            let today = govex_adapters::common::CheckContext::now().today();
            let verdict = govex::id_cmd::check(&value, kind, today);
            for line in &verdict.lines {
                println!("{line}");
            }
            if !verdict.valid {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Broker { brokers } => {
            telemetry::init(if cli.log_json { LogFormat::Json } else { LogFormat::Text });
            govex::broker_cmd::run(brokers, govex_bus::shutdown::listen()).await
        }
    }
}
