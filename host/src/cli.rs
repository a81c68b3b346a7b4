//! The command line (clap derive): one struct per subcommand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit::Exit;
use crate::grants::Access;
use crate::output::Printer;
use crate::run::{RunRequest, Stop};
use crate::sandbox::Limits;

/// Run WebAssembly fixes against a production host, safely: only what you
/// grant, planned before it is written.
#[derive(Debug, Parser)]
#[command(name = "defops-wasm", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 the fix failed, 2 usage or host error, \
3 refused (denied path, forbidden import, file changed since the plan, change window, \
no dry-run first), 4 a limit was hit, 5 paused (the off-switch), 6 a scheduled run skipped \
outside the change window."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a fix: `check`, then `apply` against an overlay; show the plan
    /// (--dry-run) or commit it.
    Run(Box<RunArgs>),
    /// Undo a run's changes, newest first, refusing if anything drifted.
    Rollback(RollbackArgs),
    /// List, show and verify the journals of past runs.
    Journal(JournalArgs),
    /// Pull the off-switch: real runs refuse to start, running ones stop
    /// within a second. Dry-runs and rollbacks still work.
    Pause(PauseArgs),
    /// Lift a pause.
    Resume(ResumeArgs),
    /// Paused or not, the change window now, the last runs of each fix.
    Status(StatusArgs),
    /// Show a fix's manifest, digests and real imports, and whether they
    /// agree (exit 1 if not); with two fixes, what changed between them.
    Inspect(InspectArgs),
    /// Check a manifest (TOML) and embed it in a component.
    Embed(EmbedArgs),
    /// Sign a fix as its reviewer: `ssh-keygen -Y sign -n defops-wasm`,
    /// writing FIX.wasm.sig.
    Approve(ApproveArgs),
    /// A blameless retrospective draft of a run, from its journal.
    Report(ReportArgs),
    /// A monitoring plugin (Nagios/Icinga): one status line with perfdata;
    /// exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check(CheckArgs),
    /// Scaffold a fix: a crate that builds as is, or (--lang python) one
    /// NAME.py to run as it is.
    New(NewArgs),
    /// Run fixes on a schedule with systemd timers: add, list, promote
    /// (dry-run to real), demote, remove, and exec (what the unit runs).
    Schedule(crate::schedule::ScheduleArgs),
    /// Compile the Python runtime into the compile cache now (an install
    /// step), so the first Python fix starts at once.
    Warm,
    /// Build a fix for wasm32-wasip2 and embed its manifest: DIR/NAME.wasm.
    Build(BuildArgs),
    /// The version and the crypto provider: which implementation does
    /// SHA-256 and signature checks, whether it is a validated FIPS module,
    /// and whether FIPS mode is on (from the configuration).
    Version,
    /// Shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (defops-wasm.1, defops-wasm-run.1, ...) to a
    /// directory.
    Man {
        /// Where to write them.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The fix's name (lowercase letters, digits, '-', '_').
    pub name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The guest SDK (defops-wasm's guest-sdk/); default: $DEFOPS_GUEST_SDK,
    /// else the one this binary was built with.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
    /// The language: rust (a crate to build) or python (one NAME.py to run
    /// as it is).
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
}

/// The language of a new fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The fix's directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The target directory all fixes share (default: $CARGO_TARGET_DIR,
    /// else ~/.cache/defops-wasm/target).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A run without an outcome younger than this is taken as still
    /// running; older, as cut off by a crash (at most 366d).
    /// Parsed by the command, so that a bad value is UNKNOWN (3), not
    /// CRITICAL.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub warn_age: String,
    /// How many recent runs to look at.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub last: usize,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id or the path of its journal.
    pub run: String,
    /// Markdown (to paste into an incident document) or JSON.
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: crate::report::Format,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The fix.
    pub fix: PathBuf,
    /// A newer version of the fix: show what changed.
    pub new: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The component.
    pub fix: PathBuf,
    /// The manifest (TOML).
    pub manifest: PathBuf,
    /// Write here instead of replacing FIX.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The fix to approve.
    pub fix: PathBuf,
    /// The reviewer's private key (as for ssh-keygen -f).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Pause only this fix (its file name without .wasm); default: every fix.
    pub fix: Option<String>,

    /// Why, for whoever finds it paused.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Lift the pause of this fix; default: the pause of every fix.
    pub fix: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How many recent runs to look at.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub last: usize,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The run id (see `journal list`) or the path of its journal.
    pub run: String,

    /// Show what would be undone, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Roll back whatever held it back: paths that changed since the run,
    /// later runs not rolled back on its paths, runs not counted or not
    /// verified, links it puts back that lead outside the grants (what is
    /// there now is lost). What it went past is printed and journaled.
    #[arg(long)]
    pub force: bool,

    /// The head hash printed at the end of the run (as a ticket or a fleet
    /// ledger keeps it). Required for a journal from outside the state
    /// directory; the journal must end there.
    #[arg(long, value_name = "HASH")]
    pub expect_head: Option<String>,
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    pub command: JournalCommand,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// One line per run, oldest first.
    List,
    /// Every record of a run.
    Show {
        /// The run id or the path of its journal.
        run: String,
    },
    /// Check the hash chain. Exit 0 intact, 1 torn tail (a crash), 3 bad.
    Verify {
        /// The run id or the path of its journal.
        run: String,
        /// The head hash recorded elsewhere at the end of the run; detects a
        /// journal cut short.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("overrides").multiple(true).args(["no_dry_run_first", "accept_new_plan"])))]
pub struct RunArgs {
    /// The fix: a WebAssembly component built for wasm32-wasip2.
    pub fix: PathBuf,

    /// Grant read-write access to a directory (repeatable).
    #[arg(long = "allow", value_name = "DIR")]
    pub allow: Vec<PathBuf>,

    /// Grant read-only access to a directory (repeatable).
    #[arg(long = "allow-ro", value_name = "DIR")]
    pub allow_ro: Vec<PathBuf>,

    /// Grant read access to the log files a glob matches, e.g.
    /// '/var/log/app/*.log*' (repeatable; rotated and .gz files included).
    #[arg(long = "allow-log", value_name = "GLOB")]
    pub allow_log: Vec<String>,

    /// A parameter for the fix (repeatable).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,

    /// Run the fix and show the plan, write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// With --dry-run: run `apply` even when `check` says not needed, to
    /// study the branch that would otherwise never run.
    #[arg(long)]
    pub flip_precondition: bool,

    /// Run outside the change window; needs --on-call.
    #[arg(long, requires = "on_call")]
    pub outside_window: bool,

    /// Who watches a run outside the change window (recorded).
    #[arg(long, value_name = "NAME", requires = "outside_window")]
    pub on_call: Option<String>,

    /// Run for real without a recent dry-run of the same; needs --reason.
    #[arg(long, requires = "reason", conflicts_with = "plan")]
    pub no_dry_run_first: bool,

    /// Commit this run's plan even though it differs from the plan the
    /// dry-run showed (the difference is shown and journaled); needs
    /// --reason.
    #[arg(long, requires = "reason", conflicts_with_all = ["plan", "dry_run"])]
    pub accept_new_plan: bool,

    /// Why there was no dry-run first, or why a new plan is accepted
    /// (recorded).
    #[arg(long, value_name = "TEXT", requires = "overrides")]
    pub reason: Option<String>,

    /// With --dry-run: save the plan to FILE (JSON, never inside a grant),
    /// for review and for `run --plan FILE`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "dry_run",
        conflicts_with = "flip_precondition"
    )]
    pub save_plan: Option<PathBuf>,

    /// Commit only if this run makes exactly the plan saved in FILE (by
    /// `--dry-run --save-plan`); refused otherwise, with the difference.
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub plan: Option<PathBuf>,

    /// Require a reviewer's signature (FIX.wasm.sig) from an allowed signer.
    #[arg(long)]
    pub require_approval: bool,

    /// The reviewers' keys, in git's allowed_signers format.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,

    /// The signature, if not FIX.wasm.sig.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,

    /// Stop the fix after this long (e.g. 500ms, 60s, 5m; at most 24h).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// The most memory the fix may use (e.g. 64MiB, 1GiB; at most 4GiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_memory)]
    pub max_memory: u64,

    /// The most the fix may print (stdout, stderr and messages together;
    /// at most 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_output)]
    pub max_output: u64,
}

/// Flags every command shares.
#[derive(Debug, Args)]
pub struct Common {
    /// Where the journals, before-images and compile cache live; never
    /// inside a grant, and refused if anyone but you or root could replace
    /// it or a directory or link on the way to it. Default:
    /// /var/lib/defops-wasm for root, else $XDG_STATE_HOME/defops-wasm.
    #[arg(long, env = "DEFOPS_STATE_DIR", value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// The configuration file (change windows, dry-run-first). Default:
    /// /etc/defops-wasm/config.toml, if it exists.
    #[arg(long, env = "DEFOPS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Print JSON Lines (one object per line, the last a summary).
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more (-v: what the host does, -vv: debug). RUST_LOG overrides.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Say less: the outcome and errors only.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?} is not a parameter name (letters, digits, _ and -)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// An age (`max-age`, `--warn-age`): `15m`, `24h`, `7d`; at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::duration(s, crate::units::MAX_AGE)
}

/// `--timeout`: `500ms`, `60s`, `5m`, `1h`; at most a day.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::units::duration(s, crate::units::MAX_TIMEOUT)
}

/// `--max-memory`: at most 4GiB (all a wasm32 guest can address).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    crate::units::size(s, crate::units::MAX_MEMORY)
}

/// `--max-output`: at most 1GiB.
pub fn parse_output(s: &str) -> Result<u64, String> {
    crate::units::size(s, crate::units::MAX_OUTPUT)
}

/// What adds a subcommand's arguments to its command.
type Augment = fn(clap::Command) -> clap::Command;

/// The subcommands `Cli::parse_one` parses alone, with what adds their
/// arguments: those a script or a timer calls.
const ONE_SUBCOMMAND: [(&str, Augment); 9] = [
    ("run", RunArgs::augment_args),
    ("rollback", RollbackArgs::augment_args),
    ("journal", JournalArgs::augment_args),
    ("pause", PauseArgs::augment_args),
    ("resume", ResumeArgs::augment_args),
    ("status", StatusArgs::augment_args),
    ("report", ReportArgs::augment_args),
    ("check", CheckArgs::augment_args),
    ("schedule", crate::schedule::ScheduleArgs::augment_args),
];

impl Cli {
    /// Parses `argv`. When a subcommand is named first (`run ...`, as every
    /// script and timer calls it), only that subcommand's arguments are
    /// built: building every subcommand's is about a tenth of a warm
    /// dry-run. What that parse does not take (help, a bad flag, a flag
    /// before the subcommand) goes to the parse of the whole command line,
    /// which says what is wrong as it always has.
    pub fn parse_args(argv: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
        match Cli::parse_one(&argv) {
            Some(cli) => Ok(cli),
            None => <Cli as Parser>::try_parse_from(argv),
        }
    }

    /// The parse of `argv` by a command line of one subcommand, if it is
    /// one that has its own arguments and the parse succeeds.
    fn parse_one(argv: &[std::ffi::OsString]) -> Option<Cli> {
        use clap::FromArgMatches;
        let given = argv.get(1)?.to_str()?;
        let (name, augment) = ONE_SUBCOMMAND.iter().find(|(name, _)| *name == given)?;
        let root = Common::augment_args(clap::Command::new("defops-wasm"))
            .subcommand(augment(clap::Command::new(*name)));
        let matches = root.try_get_matches_from(argv).ok()?;
        Cli::from_arg_matches(&matches).ok()
    }

    /// Runs the command; the exit status, or why it stopped.
    pub fn execute(self) -> Result<Exit, Stop> {
        let Cli { common, command } = self;
        match command {
            Command::Run(args) => args.execute(&common),
            Command::Rollback(args) => {
                let req = crate::rollback::RollbackRequest {
                    run: args.run,
                    dry_run: args.dry_run,
                    force: args.force,
                    expect_head: args.expect_head,
                    state_dir: common.state_dir_to_prepare()?,
                    config: common.config.clone(),
                };
                crate::rollback::rollback(req, &common.printer())
            }
            Command::Pause(args) => {
                let state = common.state_dir_to_prepare()?;
                crate::status::pause(
                    &state,
                    args.fix.as_deref(),
                    args.reason.as_deref(),
                    &common.printer(),
                )
            }
            Command::Resume(args) => {
                let state = common.state_dir_to_prepare()?;
                crate::status::resume(&state, args.fix.as_deref(), &common.printer())
            }
            Command::Status(args) => {
                let state = common.state_dir()?;
                crate::status::status(&state, &common.config()?, args.last, &common.printer())
            }
            Command::Inspect(args) => {
                let out = common.printer();
                // The state directory's compile cache (inspecting a Python
                // fix compiles the runtime), only when it is there and no
                // one else could swap it; else the fix is compiled afresh.
                let state = common
                    .state_dir
                    .clone()
                    .map_or_else(|| crate::state_dir::default_path().ok(), Some)
                    .and_then(|p| crate::state_dir::safe(&p));
                match &args.new {
                    None => crate::review::inspect(&args.fix, state.as_deref(), &out),
                    Some(new) => {
                        crate::review::inspect_diff(&args.fix, new, state.as_deref(), &out)
                    }
                }
            }
            Command::Embed(args) => crate::review::embed(
                &args.fix,
                &args.manifest,
                args.output.as_deref(),
                &common.printer(),
            ),
            Command::Approve(args) => {
                crate::review::approve(&args.fix, &args.key, &common.printer())
            }
            Command::Warm => {
                crate::sandbox::warm(&common.state_dir_to_prepare()?, &common.printer())
            }
            Command::New(args) if args.lang == Lang::Python => {
                crate::scaffold::new_python(&args.name, args.dir.as_deref(), &common.printer())
            }
            Command::New(args) => crate::scaffold::new(
                &args.name,
                args.dir.as_deref(),
                args.sdk.as_deref(),
                &common.printer(),
            ),
            Command::Build(args) => crate::scaffold::build(
                &args.dir,
                args.target_dir.as_deref(),
                &common.printer(),
                common.quiet,
            ),
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "defops-wasm", &mut std::io::stdout());
                Ok(Exit::Success)
            }
            Command::Man { dir } => man_pages(&dir, &common.printer()),
            Command::Version => version(&common),
            Command::Schedule(args) => crate::schedule::execute(args, &common),
            Command::Check(args) => match common.state_dir().and_then(|state| {
                let age = parse_duration(&args.warn_age)
                    .map_err(|e| Stop::new(Exit::Refused, format!("--warn-age: {e}")))?;
                Ok((state, age))
            }) {
                Ok((state, age)) => {
                    crate::monitor::check(&state, age, args.last, &common.printer())
                }
                Err(e) => {
                    crate::output::write_line(&format!(
                        "DEFOPS UNKNOWN - {}",
                        crate::escape::line(&e.message)
                    ));
                    Ok(Exit::Refused)
                }
            },
            Command::Report(args) => {
                let state = common.state_dir()?;
                let format = match common.json {
                    true => crate::report::Format::Json,
                    false => args.format,
                };
                crate::report::report(&state, &args.run, format, &common.printer())
            }
            Command::Journal(args) => {
                let state = common.state_dir()?;
                let out = common.printer();
                match args.command {
                    JournalCommand::List => crate::history::list(&state, &out),
                    JournalCommand::Show { run } => crate::history::show(&state, &run, &out),
                    JournalCommand::Verify { run, expect_head } => {
                        crate::history::verify(&state, &run, expect_head.as_deref(), &out)
                    }
                }
            }
        }
    }

    /// Whether JSON output was asked for (for errors before a command runs).
    pub fn json(&self) -> bool {
        self.common.json
    }
}

/// The man page of the command and of each subcommand.
/// `version`: this binary and its crypto provider. With `fips = true` in
/// the configuration FIPS mode is entered as a run would (the module's
/// status checked; refused on a binary without it unless accepted).
fn version(common: &Common) -> Result<Exit, Stop> {
    let config = common.config()?;
    config
        .apply_crypto()
        .map_err(|e| Stop::new(Exit::Usage, e))?;
    let crypto = crate::crypto::describe();
    let out = common.printer();
    match out.is_json() {
        true => out.raw(&serde_json::json!({
            "type": "version",
            "version": env!("CARGO_PKG_VERSION"),
            "crypto": crypto,
        })),
        false => {
            let yes = |b: bool| if b { "yes" } else { "no" };
            let line = |l: String| crate::output::write_line(&l);
            line(format!("defops-wasm {}", env!("CARGO_PKG_VERSION")));
            line(format!(
                "crypto      {} ({})",
                crate::crypto::PROVIDER,
                crypto["version"].as_str().unwrap_or_default()
            ));
            line(format!(
                "fips module {}",
                match crate::crypto::VALIDATED {
                    true => "yes: AWS-LC's FIPS module does every SHA-2 digest and signature check",
                    false => "no (build with --features fips for AWS-LC's FIPS module)",
                }
            ));
            line(format!("validation  {}", crate::crypto::VALIDATION));
            line(format!(
                "fips mode   {}{}",
                yes(crate::crypto::fips_mode()),
                match crypto["accepted_unvalidated"].as_bool() {
                    Some(true) =>
                        " (approved algorithms, unvalidated implementation: fips-accept-unvalidated)",
                    _ => "",
                }
            ));
        }
    }
    Ok(Exit::Success)
}

fn man_pages(dir: &std::path::Path, out: &Printer) -> Result<Exit, Stop> {
    use clap::CommandFactory;
    let io = |e: std::io::Error| {
        Stop::new(
            Exit::Usage,
            format!("cannot write to {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut page = |c: clap::Command, name: String| -> Result<(), Stop> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c.name(name.clone()))
            .render(&mut buf)
            .map_err(io)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, buf).map_err(io)?;
        written.push(path.display().to_string());
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        page(sub.clone(), format!("defops-wasm-{}", sub.get_name()))?;
    }
    page(cmd.clone(), "defops-wasm".into())?;
    match out.is_json() {
        true => out.raw(&serde_json::json!({"type": "man", "pages": written})),
        false => out.note(&format!(
            "wrote {} man pages to {}",
            written.len(),
            dir.display()
        )),
    }
    Ok(Exit::Success)
}

impl Common {
    /// How results are printed.
    pub fn printer(&self) -> Printer {
        Printer::new(self.json, self.quiet)
    }

    pub fn state_dir(&self) -> Result<PathBuf, Stop> {
        // For every command, those that only read it too: what it holds
        // (the evidence of a dry-run, the pauses, the journals) is not to
        // come from a directory someone else could swap in.
        crate::state_dir::checked(&self.state_dir_to_prepare()?)
            .map_err(|e| Stop::new(Exit::Usage, e))
    }

    /// The state directory as given (or the default), for a command that
    /// passes it to `state_dir::prepare` itself, which checks it the same
    /// way (and makes it).
    pub fn state_dir_to_prepare(&self) -> Result<PathBuf, Stop> {
        match &self.state_dir {
            Some(p) => Ok(p.clone()),
            None => crate::state_dir::default_path().map_err(|e| Stop::new(Exit::Usage, e)),
        }
    }

    /// The configuration: the default file is optional, a named one is not.
    pub fn config(&self) -> Result<crate::config::Config, Stop> {
        crate::config::Config::load(self.config.as_deref()).map_err(|e| Stop::new(Exit::Usage, e))
    }
}

impl RunArgs {
    pub fn execute(self, common: &Common) -> Result<Exit, Stop> {
        let req = self.into_request(common)?;
        crate::run::run(req, &common.printer())
    }

    /// The run these flags ask for, checked.
    pub fn into_request(self, common: &Common) -> Result<RunRequest, Stop> {
        let mut params = BTreeMap::new();
        for (k, v) in self.params {
            if params.insert(k.clone(), v).is_some() {
                return Err(Stop::new(
                    Exit::Usage,
                    format!("--param {k} is given twice; give it once"),
                ));
            }
        }
        let grants = self
            .allow
            .into_iter()
            .map(|p| (p, Access::ReadWrite))
            .chain(self.allow_ro.into_iter().map(|p| (p, Access::ReadOnly)))
            .collect();
        if self.flip_precondition && !self.dry_run {
            return Err(Stop::new(
                Exit::Usage,
                "--flip-precondition runs the branch check rules out, so only with --dry-run; add --dry-run",
            ));
        }
        let req = RunRequest {
            fix: self.fix,
            grants,
            logs: self.allow_log,
            params,
            dry_run: self.dry_run,
            flip_precondition: self.flip_precondition,
            limits: Limits {
                deadline: self.timeout,
                max_memory: self.max_memory,
                max_output: self.max_output,
            },
            state_dir: common.state_dir_to_prepare()?,
            state_dir_given: common.state_dir.is_some(),
            config: common.config.clone(),
            on_call: self.on_call,
            no_dry_run_first: self.reason.clone().filter(|_| self.no_dry_run_first),
            accept_new_plan: self.reason.filter(|_| self.accept_new_plan),
            save_plan: self.save_plan,
            plan: self.plan,
            require_approval: self.require_approval,
            allowed_signers: self.allowed_signers,
            signature: self.signature,
            scheduled: None,
            scheduled_generation: None,
            expect_sha256: None,
        };
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every flag, value name and nested subcommand name of `cmd`.
    fn words(cmd: &clap::Command, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            out.extend(a.get_long().map(|l| format!("--{l}")));
            out.extend(a.get_short().map(|s| format!("-{s}")));
            out.extend(
                a.get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string()),
            );
        }
        for sub in cmd.get_subcommands() {
            out.push(sub.get_name().to_string());
            words(sub, out);
        }
    }

    /// A generated command line of one of `parse_one`'s subcommands: its
    /// name, then tokens drawn from its arguments (and its nested
    /// subcommands'), the global flags, values and junk.
    fn command_line(rng: &mut crate::fuzzing::Rng, full: &clap::Command) -> Vec<String> {
        const VALUES: [&str; 16] = [
            "fix.wasm",
            "/tmp/d",
            "run-1",
            "1s",
            "15m",
            "5",
            "0",
            "-1",
            "key=v",
            "k=",
            "=v",
            "--",
            "",
            "--nope",
            "-vv",
            "--json=true",
        ];
        let name = ONE_SUBCOMMAND[rng.below(ONE_SUBCOMMAND.len())].0;
        let mut vocabulary = vec!["--json".to_string(), "-v".into(), "-q".into()];
        vocabulary.extend(["--state-dir".into(), "--config".into(), "--help".into()]);
        words(full.find_subcommand(name).unwrap(), &mut vocabulary);
        // And every other subcommand's words, which this one must refuse.
        let mut others = Vec::new();
        words(full, &mut others);
        let mut argv = vec!["defops-wasm".to_string(), name.to_string()];
        for _ in 0..rng.below(9) {
            argv.push(match rng.below(5) {
                0 => VALUES[rng.below(VALUES.len())].to_string(),
                1 => others[rng.below(others.len())].clone(),
                _ => vocabulary[rng.below(vocabulary.len())].clone(),
            });
        }
        argv
    }

    #[test]
    fn one_subcommand_parses_as_the_whole_command_line() {
        // Both parses of `argv`: the same result, or both refuse. Whether
        // the one-subcommand parse took it.
        fn same(argv: &[String]) -> bool {
            let os: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
            let whole = Cli::try_parse_from(argv);
            assert_eq!(
                Cli::parse_args(os.clone()).is_ok(),
                whole.is_ok(),
                "{argv:?}"
            );
            match (Cli::parse_one(&os), &whole) {
                (Some(one), Ok(all)) => {
                    assert_eq!(format!("{one:?}"), format!("{all:?}"), "{argv:?}");
                    true
                }
                (Some(one), Err(e)) => panic!("{argv:?}: took {one:?}, the whole refused: {e}"),
                (None, Ok(all)) => panic!("{argv:?}: not taken, the whole took {all:?}"),
                (None, Err(_)) => false,
            }
        }
        let full = Cli::command();
        // Every word of the whole command line after each subcommand, alone,
        // with a value after it and before it: an argument one parse has
        // and the other has not shows here.
        let mut all = vec!["--".to_string(), String::new()];
        words(&full, &mut all);
        for (name, _) in ONE_SUBCOMMAND {
            for word in &all {
                for tail in [
                    vec![word.clone()],
                    vec![word.clone(), "v".into()],
                    vec!["v".into(), word.clone()],
                ] {
                    let argv: Vec<String> = ["defops-wasm", name]
                        .into_iter()
                        .map(String::from)
                        .chain(tail)
                        .collect();
                    same(&argv);
                }
            }
        }
        // And generated lines, longer.
        let mut rng = crate::fuzzing::Rng::new(0x5eed_0c11);
        let mut taken = 0;
        for _ in 0..3000 {
            taken += usize::from(same(&command_line(&mut rng, &full)));
        }
        // Both kinds were generated, often enough to mean something.
        assert!(taken > 200 && taken < 2700, "taken {taken} of 3000");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_memory("256MiB"), Ok(256 << 20));
        assert!(parse_memory("5GiB").is_err());
        assert!(parse_output("2GiB").is_err());
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("25h").is_err());
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn params_need_a_name_and_equals() {
        assert_eq!(parse_param("key=a=b"), Ok(("key".into(), "a=b".into())));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
        assert!(parse_param("bad name=x").is_err());
    }
}
