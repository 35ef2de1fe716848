//! `govex import`: a department's file into the exchange, with a progress bar, a summary,
//! a reject file, and a checkpoint to resume from.

use std::{path::PathBuf, sync::Arc};

use crate::config::NodeConfig;
use anyhow::{bail, Context, Result};
use govex_adapters::{
    import::{run_import, FileFormat, ImportOptions, ImportSummary, Progress, TextEncoding},
    intake::Intake,
};
use govex_bus::{Bus, Metrics, RegistryClient};
use govex_schemas::Department;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::schema_cmd::print_table;

/// What the command line asked for.
pub struct ImportArgs {
    /// The node's configuration (brokers and registry).
    pub config: NodeConfig,
    /// Department.
    pub department: String,
    /// Record type.
    pub record: String,
    /// The file.
    pub file: PathBuf,
    /// GBK instead of UTF-8.
    pub gbk: bool,
    /// Lines per batch.
    pub batch_lines: usize,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn advance(&mut self, done: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }
}

/// How an import ended, as its exit status says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every record is published (now or before): exit status 0.
    Published,
    /// Finished, with records rejected (in the rejects file): exit status 2.
    SomeRejected,
    /// Stopped early (interrupted); a rerun resumes: exit status 3.
    Interrupted,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_status(self) -> i32 {
        match self {
            Self::Published => 0,
            Self::SomeRejected => 2,
            Self::Interrupted => 3,
        }
    }
}

/// Runs the import.
pub async fn import(args: ImportArgs) -> Result<Outcome> {
    let ImportArgs { config, department, record, file, gbk, batch_lines } = args;
    let department: Department =
        department.parse().map_err(|_| anyhow::anyhow!("'{department}' is not a department"))?;
    if config.bus.brokers.is_none() {
        bail!(
            "govex import needs the node to import into: pass the node's config with --config <node.toml> \
             (or GOVEX_CONFIG), or set GOVEX_BUS__BROKERS to its Kafka bootstrap servers (the address \
             `govex broker` printed) and GOVEX_REGISTRY__URL to its schema registry"
        );
    }
    let registry_url = config.registry.url.clone().unwrap_or_else(|| format!("http://{}", config.listen.registry));
    let registry = RegistryClient::http(&registry_url);
    let metrics = Metrics::new();
    let bus = Bus::start(&config.bus, &metrics)?;
    let intake = Arc::new(Intake::new(&registry, &bus, config.division, &metrics).await.with_context(|| {
        format!(
            "the node's schema registry at {registry_url} did not answer: start the node first, and point \
             import at it with --config <node.toml> (or GOVEX_CONFIG), whose registry.url or \
             listen.registry names it (or set GOVEX_REGISTRY__URL)"
        )
    })?);
    if !intake.knows(department, &record) {
        bail!("{department} does not send '{record}' records: GET /catalog on the node lists who sends what");
    }
    let options = ImportOptions {
        department,
        record,
        format: FileFormat::from_path(&file),
        file,
        encoding: if gbk { TextEncoding::Gbk } else { TextEncoding::Utf8 },
        batch_lines,
    };

    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    let signal = govex_bus::shutdown::listen();
    tokio::spawn(async move {
        signal.await;
        eprintln!("interrupted: finishing the current batch, then stopping; rerun the same command to resume");
        on_signal.cancel();
    });
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  ETA {eta}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let mut progress = Bar(bar.clone());
    let result = run_import(intake, &bus, &options, interrupt, &mut progress).await;
    bar.finish_and_clear();
    bus.producer().flush(std::time::Duration::from_secs(30)).context("the producer could not deliver every record")?;
    let summary = result?;
    print_summary(&options, &summary);
    Ok(match (summary.interrupted, summary.rejected) {
        (true, _) => Outcome::Interrupted,
        (false, 0) => Outcome::Published,
        (false, _) => Outcome::SomeRejected,
    })
}

fn print_summary(options: &ImportOptions, summary: &ImportSummary) {
    let rate = summary.published as f64 / summary.elapsed.as_secs_f64().max(0.001);
    let rows = vec![
        vec!["records in file".to_owned(), summary.total.to_string()],
        vec!["published now".to_owned(), summary.published.to_string()],
        vec!["rejected now".to_owned(), summary.rejected.to_string()],
        vec!["published before (or twice in the file)".to_owned(), summary.skipped.to_string()],
        vec!["time".to_owned(), format!("{:.1} s ({rate:.0} records/s)", summary.elapsed.as_secs_f64())],
    ];
    print_table(&["IMPORT", &options.file.display().to_string()], &rows);
    if !summary.rejected_by_rule.is_empty() {
        println!();
        let rows: Vec<Vec<String>> =
            summary.rejected_by_rule.iter().map(|(rule, n)| vec![rule.clone(), n.to_string()]).collect();
        print_table(&["REJECTED BY RULE", "COUNT"], &rows);
        println!(
            "\nrejected records, as they were (personal data: readable by you only): {}",
            options.reject_path().display()
        );
        println!(
            "their errors (line, field, rule):                                    {}",
            options.errors_path().display()
        );
        println!("fix them in either file and import it the same way; what is already published is skipped");
    }
    println!("\npublished records are remembered in {}", options.ledger_path().display());
    if summary.interrupted {
        println!("\nstopped early: rerun the same command to import the rest");
    }
}
