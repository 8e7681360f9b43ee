//! The `hisa-server` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use hisa_server::demo::DemoOptions;
use hisa_server::error::{ServerError, ServerResult};
use hisa_server::metadata::import::ImportParams;
use hisa_server::seed::{seed_demo, SeedReport};
use hisa_server::server::{prepare, serve};
use hisa_server::state::Config;
use hisa_server::store;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "hisa-server",
    version,
    about = "Hisa: a DHIS2-compatible health information server"
)]
struct Cli {
    /// Database: a PostgreSQL URL, or a SQLite file path (default ./hisa.db).
    #[arg(long, env = "DATABASE_URL", global = true, default_value = "hisa.db")]
    database: String,
    /// Log format.
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: LogFormat,
    /// The country calling code (digits, e.g. 255) that completes national
    /// phone numbers such as 0712345678 arriving by SMS.
    #[arg(long, env = "HISA_SMS_COUNTRY_CODE", global = true)]
    sms_country_code: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Seed the demo country into an empty database before serving.
    #[arg(long)]
    demo: bool,
    /// Facilities in the demo country.
    #[arg(long, default_value_t = 1000)]
    facilities: usize,
    /// Largest request body accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    body_limit_mib: usize,
    /// Largest data value set body accepted (streamed, never held), in MiB.
    #[arg(long, default_value_t = 2048)]
    data_body_limit_mib: usize,
    /// Mark the session cookie Secure (when served behind TLS).
    #[arg(long)]
    secure_cookies: bool,
    /// Data values analytics keeps in memory (about 60 bytes each) before
    /// dropping the least recently used data elements.
    #[arg(long, env = "HISA_ANALYTICS_MAX_CELLS", default_value_t = 30_000_000)]
    analytics_max_cells: usize,
    /// Do not read data into analytics' memory at start; each data element
    /// is then read on its first query.
    #[arg(long)]
    analytics_no_warm_up: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Web API (the default).
    Serve(ServeArgs),
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Import a DHIS2 metadata JSON file.
    ImportMetadata {
        file: PathBuf,
        /// CREATE_AND_UPDATE, CREATE, UPDATE or DELETE.
        #[arg(long, default_value = "CREATE_AND_UPDATE")]
        import_strategy: String,
        /// ALL writes nothing if any object fails; NONE writes the valid ones.
        #[arg(long, default_value = "ALL")]
        atomic_mode: String,
    },
    /// Import a data value set file (JSON, CSV or ADX, optionally .gz) with DHIS2's rules.
    ImportData {
        file: PathBuf,
        /// json, csv or adx; by default from the file name, else from the content.
        #[arg(long)]
        format: Option<String>,
        /// Attribute the changes to this user (and check against their rights);
        /// by default the operator, with every right.
        #[arg(long)]
        username: Option<String>,
        /// CREATE_AND_UPDATE, CREATE, UPDATE or DELETE.
        #[arg(long, default_value = "CREATE_AND_UPDATE")]
        import_strategy: String,
        /// Check and count, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write nothing unless every value is valid.
        #[arg(long)]
        atomic: bool,
        /// CSV: the data set the values belong to.
        #[arg(long)]
        data_set: Option<String>,
    },
    /// Export data values, as `GET /api/dataValueSets` does.
    ExportData {
        #[arg(long = "data-set")]
        data_sets: Vec<String>,
        #[arg(long = "data-element")]
        data_elements: Vec<String>,
        #[arg(long = "period")]
        periods: Vec<String>,
        #[arg(long)]
        start_date: Option<String>,
        #[arg(long)]
        end_date: Option<String>,
        #[arg(long = "org-unit", required = true)]
        org_units: Vec<String>,
        /// Include the org units' descendants.
        #[arg(long)]
        children: bool,
        #[arg(long)]
        include_deleted: bool,
        /// json, csv or adx.
        #[arg(long, default_value = "json")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Seed the demo country into an empty database.
    SeedDemo {
        #[arg(long, default_value_t = 1000)]
        facilities: usize,
    },
    /// SMS tools for an admin chasing a problem.
    #[command(subcommand)]
    Sms(SmsCommand),
}

#[derive(Subcommand)]
enum SmsCommand {
    /// Print what an SMS decodes to against the current metadata, as JSON,
    /// without applying it.
    Decode {
        /// The SMS text, as the gateway received it.
        text: String,
        /// The sender's number (finds the user for DHIS2's format and commands).
        #[arg(long)]
        sender: Option<String>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn demo_options(facilities: usize) -> DemoOptions {
    // 24 months of data ending with the last full month.
    let today = OffsetDateTime::now_utc().date();
    let (year, month) = if today.month() == time::Month::January {
        (today.year() - 1, 12)
    } else {
        (today.year(), u8::from(today.month()) - 1)
    };
    DemoOptions {
        facilities,
        end_period: (year, month),
        seed: 2026,
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} ({{per_sec}})"
    )) {
        pb.set_style(style);
    }
    pb
}

fn print_logins(report: &SeedReport, listen: Option<&str>) {
    println!();
    println!(
        "Demo country loaded: {} data values, {} completed forms, {} events.",
        report.data_values, report.completions, report.events
    );
    println!("Sign in as (username / password, role, org unit):");
    let mut shown = 0;
    for l in &report.logins {
        let phone = l.phone_number.as_deref().unwrap_or("");
        println!(
            "  {:<28} {:<16} {:<20} {} {}",
            l.username, l.password, l.role, l.org_unit, phone
        );
        shown += 1;
        if shown == 24 && report.logins.len() > 30 {
            println!(
                "  … and {} more (GET /api/users as admin lists them all)",
                report.logins.len() - shown
            );
            break;
        }
    }
    if let Some(addr) = listen {
        println!();
        println!("Try: curl -u admin:district http://{addr}/api/me");
    }
    println!();
}

async fn run(cli: Cli) -> ServerResult<()> {
    let sms = sms_config(&cli);
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs {
        listen: "127.0.0.1:8080".into(),
        demo: false,
        facilities: 1000,
        body_limit_mib: 64,
        data_body_limit_mib: 2048,
        secure_cookies: false,
        analytics_max_cells: 30_000_000,
        analytics_no_warm_up: false,
    }));
    match command {
        Command::Serve(args) => {
            let config = Config {
                body_limit: args.body_limit_mib * 1024 * 1024,
                data_body_limit: args.data_body_limit_mib * 1024 * 1024,
                secure_cookies: args.secure_cookies,
                analytics_max_cells: args.analytics_max_cells,
                analytics_warm_up: !args.analytics_no_warm_up,
                sms: sms.clone(),
                ..Config::default()
            };
            let listener = TcpListener::bind(&args.listen).await.map_err(|e| {
                ServerError::Internal(format!("cannot listen on {}: {e}", args.listen))
            })?;
            let addr = listener
                .local_addr()
                .map_err(|e| ServerError::Internal(e.to_string()))?;
            tracing::info!(%addr, database = %redact(&cli.database), "starting");
            let database = cli.database.clone();
            let demo = args.demo.then_some(args.facilities);
            let prep_config = config.clone();
            let prepare_all = async move {
                let store = store::open(&database).await?;
                let services = prepare(store, prep_config).await?;
                if let Some(facilities) = demo {
                    let pb = bar(0, "seeding demo data values");
                    pb.set_length(facilities as u64 * 24 * 40);
                    match seed_demo(&services, demo_options(facilities), Some(pb.clone())).await? {
                        Some(report) => {
                            pb.finish_and_clear();
                            print_logins(&report, Some(&addr.to_string()));
                        }
                        None => {
                            pb.finish_and_clear();
                            tracing::info!("database already has org units; demo not seeded");
                            println!("Demo country already present. Try: curl -u admin:district http://{addr}/api/me");
                        }
                    }
                }
                if hisa_server::server::ensure_first_admin(&services).await? {
                    println!("No users existed: created `admin` with password `district`. Change it now.");
                }
                tracing::info!(%addr, "ready");
                Ok(services)
            };
            serve(listener, config, prepare_all, shutdown_signal()).await
        }
        Command::Migrate => {
            let store = store::open(&cli.database).await?;
            store.migrate().await?;
            println!(
                "Database schema is up to date ({}).",
                store.backend().name()
            );
            Ok(())
        }
        Command::ImportMetadata {
            file,
            import_strategy,
            atomic_mode,
        } => {
            let pb = bar(3, "importing metadata");
            let text = std::fs::read(&file).map_err(|e| {
                ServerError::BadRequest(format!("cannot read {}: {e}", file.display()))
            })?;
            pb.inc(1);
            let payload: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                ServerError::BadRequest(format!(
                    "{} is not valid JSON (line {}, column {}): {e}",
                    file.display(),
                    e.line(),
                    e.column()
                ))
            })?;
            pb.inc(1);
            let store = store::open(&cli.database).await?;
            let services = prepare(Arc::clone(&store), Config::default()).await?;
            let params = ImportParams {
                strategy: hisa_server::metadata::import::ImportStrategy::parse(&import_strategy)
                    .ok_or_else(|| {
                        ServerError::BadRequest(format!(
                            "unknown import strategy {import_strategy}"
                        ))
                    })?,
                atomic: if atomic_mode.eq_ignore_ascii_case("NONE") {
                    hisa_server::metadata::import::AtomicMode::None
                } else {
                    hisa_server::metadata::import::AtomicMode::All
                },
                validate_only: false,
            };
            let report = services.metadata.import(payload, params).await?;
            pb.inc(1);
            pb.finish_and_clear();
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            if report.has_errors() {
                return Err(ServerError::BadRequest(format!(
                    "the import had {} error(s); see the report above",
                    report.errors().count()
                )));
            }
            Ok(())
        }
        Command::ImportData {
            file,
            format,
            username,
            import_strategy,
            dry_run,
            atomic,
            data_set,
        } => {
            use hisa_server::data::input::Format;
            let path = file.display().to_string();
            let mut head = [0u8; 512];
            let n = {
                use std::io::Read;
                let mut f = std::fs::File::open(&file)
                    .map_err(|e| ServerError::BadRequest(format!("cannot read {path}: {e}")))?;
                f.read(&mut head).unwrap_or(0)
            };
            let gzipped = head.starts_with(&[0x1f, 0x8b]);
            let format = match format.as_deref() {
                Some(f) => Format::from_path(&format!("x.{f}")).ok_or_else(|| {
                    ServerError::BadRequest(format!("unknown format {f}: use json, csv or adx"))
                })?,
                None => Format::from_path(&path).unwrap_or_else(|| {
                    // Sniff: JSON starts with `{`, ADX with `<`, anything else is CSV.
                    match head[..n].iter().find(|b| !b.is_ascii_whitespace()) {
                        Some(b'{') => Format::Json,
                        Some(b'<') => Format::Adx,
                        _ => Format::Csv,
                    }
                }),
            };
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let store = store::open(&cli.database).await?;
            let services = prepare(store, Config::default()).await?;
            let snap = services.metadata.snapshot().await?;
            let caller = match &username {
                Some(u) => {
                    let uid = snap
                        .user_uid_by_username(u)
                        .ok_or_else(|| ServerError::BadRequest(format!("no user {u}")))?;
                    hisa_server::auth::Caller::from_user(&snap, uid)
                        .ok_or_else(|| ServerError::BadRequest(format!("no user {u}")))?
                }
                None => hisa_server::auth::Caller::operator("cli"),
            };
            let mut options = hisa_server::data::import::DataImportOptions {
                strategy: hisa_shared::datavalue::DataImportStrategy::parse(&import_strategy)
                    .ok_or_else(|| {
                        ServerError::BadRequest(format!(
                            "unknown import strategy {import_strategy}"
                        ))
                    })?,
                dry_run,
                atomic,
                channel: hisa_server::data::Channel::Cli,
                ..Default::default()
            };
            if format == Format::Adx {
                options.set_all_schemes(hisa_shared::datavalue::IdScheme::Code);
            }
            let pb = bar(size, "importing data");
            let reader = pb.wrap_read(
                std::fs::File::open(&file)
                    .map_err(|e| ServerError::BadRequest(format!("cannot read {path}: {e}")))?,
            );
            let reader: Box<dyn std::io::Read + Send> = if gzipped {
                Box::new(flate2::read::GzDecoder::new(reader))
            } else {
                Box::new(reader)
            };
            let request = hisa_server::data::ImportRequest {
                format,
                options,
                csv_header_row: true,
                data_set,
            };
            let summary =
                hisa_server::data::import_data(&services, caller, request, reader).await?;
            pb.finish_and_clear();
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            if summary.status == hisa_shared::datavalue::SummaryStatus::Error {
                return Err(ServerError::BadRequest(
                    "the import failed; see the summary above".into(),
                ));
            }
            Ok(())
        }
        Command::ExportData {
            data_sets,
            data_elements,
            periods,
            start_date,
            end_date,
            org_units,
            children,
            include_deleted,
            format,
            output,
        } => {
            use hisa_server::data::input::Format;
            let format = Format::from_path(&format!("x.{format}")).ok_or_else(|| {
                ServerError::BadRequest(format!("unknown format {format}: use json, csv or adx"))
            })?;
            let store = store::open(&cli.database).await?;
            let services = prepare(store, Config::default()).await?;
            let caller = hisa_server::auth::Caller::operator("cli");
            let request = hisa_server::data::export::ExportRequest {
                data_sets,
                data_elements,
                periods,
                start_date,
                end_date,
                org_units,
                children,
                include_deleted,
                ..Default::default()
            };
            let plan = hisa_server::data::export::plan(&services, &caller, request).await?;
            let mut rx = hisa_server::data::export::stream(services.clone(), plan, format);
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
                    |e| ServerError::BadRequest(format!("cannot write {}: {e}", p.display())),
                )?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.map_err(|e| ServerError::Internal(e.to_string()))?;
                out.write_all(&chunk)
                    .map_err(|e| ServerError::Internal(format!("write failed: {e}")))?;
            }
            out.flush()
                .map_err(|e| ServerError::Internal(format!("write failed: {e}")))?;
            Ok(())
        }
        Command::Sms(SmsCommand::Decode { text, sender }) => {
            let store = store::open(&cli.database).await?;
            let config = Config {
                sms: sms.clone(),
                ..Config::default()
            };
            let services = prepare(store, config).await?;
            let decoded = services.sms.decode(&text, sender.as_deref()).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&decoded)
                    .map_err(|e| ServerError::Internal(e.to_string()))?
            );
            Ok(())
        }
        Command::SeedDemo { facilities } => {
            let store = store::open(&cli.database).await?;
            let services = prepare(store, Config::default()).await?;
            let pb = bar(facilities as u64 * 24 * 40, "seeding demo data values");
            match seed_demo(&services, demo_options(facilities), Some(pb.clone())).await? {
                Some(report) => {
                    pb.finish_and_clear();
                    print_logins(&report, None);
                }
                None => {
                    pb.finish_and_clear();
                    println!("The database already has org units; nothing seeded.");
                }
            }
            Ok(())
        }
    }
}

fn sms_config(cli: &Cli) -> hisa_sms_gateway::SmsConfig {
    hisa_sms_gateway::SmsConfig {
        country_code: cli
            .sms_country_code
            .as_deref()
            .map(|c| c.trim_start_matches('+').to_string()),
        ..Default::default()
    }
}

/// Hide a password in a database URL before logging it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hisa-server: {e}");
            ExitCode::FAILURE
        }
    }
}
