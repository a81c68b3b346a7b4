//! `defops-wasm schedule`: fixes run by systemd timers, ramped up as by
//! hand. An instance starts in dry-run mode (each run plans and changes
//! nothing); `promote` makes it real only after its last scheduled dry-run
//! succeeded and proved idempotent with the fix, grants and params it has
//! now. A real scheduled run is a dry-run and then the real run of exactly
//! that plan, under every guard a run by hand passes (pause, change window,
//! approval, dry-run first).
//!
//! The files: the instance (`/etc/defops-wasm/scheduled/NAME.toml`,
//! [`instance`]), two drop-ins for the shipped template units
//! (`defops-wasm-fix@NAME.{service,timer}.d/defops-wasm.conf`,
//! [`systemd`]), and the last attempt's record in the state directory
//! (`scheduled/NAME.json`), which `status`, `check` and `schedule list`
//! read.

pub mod instance;
pub mod systemd;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::cli::Common;
use crate::exit::Exit;
use crate::output::Printer;
use crate::run::{Stop, now_secs, rfc3339};
use instance::{Instance, InstanceError, Mode, Promoted};

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Where the instance files live.
    #[arg(long, env = "DEFOPS_SCHEDULE_DIR", value_name = "DIR", default_value = instance::DEFAULT_DIR, global = true)]
    pub dir: PathBuf,
    /// Where the units' drop-ins are written.
    #[arg(long, env = "DEFOPS_UNIT_DIR", value_name = "DIR", default_value = systemd::DEFAULT_UNIT_DIR, global = true)]
    pub unit_dir: PathBuf,
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedule a fix: write NAME's instance file and its units' drop-ins
    /// (dry-run mode unless --mode real). Enabling the timer is yours to do.
    Add(Box<AddArgs>),
    /// The scheduled fixes: mode, calendar, grants and how each last ran.
    List,
    /// Dry-run to real: refused unless NAME's last scheduled dry-run
    /// succeeded and proved idempotent with the fix, grants and params it
    /// has now.
    Promote {
        /// The schedule's name.
        name: String,
    },
    /// Real back to dry-run.
    Demote {
        /// The schedule's name.
        name: String,
    },
    /// Delete NAME's instance file and drop-ins; its timer must be disabled
    /// first (or --force).
    Remove {
        /// The schedule's name.
        name: String,
        /// Remove even though the timer is enabled (it then fails each time
        /// it fires, until disabled).
        #[arg(long)]
        force: bool,
    },
    /// Run NAME once, as its service does (`ExecStart=` of
    /// defops-wasm-fix@.service). Exit 5: skipped, paused; 6: skipped,
    /// outside the change window.
    Exec {
        /// The schedule's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The schedule's name (letters, digits, '-', '_'): the systemd
    /// instance, defops-wasm-fix@NAME.
    pub name: String,
    /// The fix (a .wasm component or a .py script), stored by its absolute
    /// path.
    pub fix: PathBuf,
    /// Grant read-write access to a directory (repeatable).
    #[arg(long = "allow", value_name = "DIR")]
    pub allow: Vec<PathBuf>,
    /// Grant read-only access to a directory (repeatable).
    #[arg(long = "allow-ro", value_name = "DIR")]
    pub allow_ro: Vec<PathBuf>,
    /// Grant read access to the log files a glob matches (repeatable).
    #[arg(long = "allow-log", value_name = "GLOB")]
    pub allow_log: Vec<String>,
    /// A parameter for the fix (repeatable).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// How often: a period dividing an hour or a day (15min, 1h, 6h, 1d).
    #[arg(long, value_name = "DURATION", required_unless_present = "on_calendar")]
    pub every: Option<String>,
    /// Or when, as systemd's OnCalendar= (`Mon..Fri *-*-* 03:00`).
    #[arg(long, value_name = "EXPR", conflicts_with = "every")]
    pub on_calendar: Option<String>,
    /// dry-run (plan only) or real (dry-run, then that plan for real).
    #[arg(long, value_enum, default_value = "dry-run")]
    pub mode: Mode,
    /// Stop the fix after this long (as `run --timeout`).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Replace a schedule of the same name (it starts again in the mode
    /// given, dry-run by default).
    #[arg(long)]
    pub replace: bool,
}

/// Parses `run`'s flags from an instance, so a scheduled run is checked
/// exactly as one typed by hand.
#[derive(Debug, Parser)]
#[command(name = "defops-wasm")]
struct RunOnly {
    #[command(flatten)]
    run: crate::cli::RunArgs,
}

fn usage(e: impl std::fmt::Display) -> Stop {
    Stop::new(Exit::Usage, e)
}

fn instance_error(e: InstanceError) -> Stop {
    match e {
        InstanceError::Untrusted(_) => Stop::new(Exit::Refused, e),
        _ => usage(e),
    }
}

/// Instance files hold params: root's to read (and the admin group's).
const INSTANCE_MODE: u32 = 0o640;

fn io_error(what: &Path, e: std::io::Error) -> Stop {
    usage(format!(
        "cannot write {}: {e}; check the directory's permissions (root manages schedules)",
        what.display()
    ))
}

/// `defops-wasm schedule ...`.
pub fn execute(args: ScheduleArgs, common: &Common) -> Result<Exit, Stop> {
    let out = common.printer();
    match args.command {
        ScheduleCommand::Add(a) => add(&args.dir, &args.unit_dir, *a, &out),
        ScheduleCommand::List => list(&args.dir, &args.unit_dir, common, &out),
        ScheduleCommand::Promote { name } => promote(&args.dir, &name, common, &out),
        ScheduleCommand::Demote { name } => demote(&args.dir, &name, &out),
        ScheduleCommand::Remove { name, force } => {
            remove(&args.dir, &args.unit_dir, &name, force, common, &out)
        }
        ScheduleCommand::Exec { name } => exec(&args.dir, &name, common, &out),
    }
}

/// A file replaced atomically: a temporary file beside it, synced, renamed.
fn write_replacing(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = crate::regular_file::create_fresh(&tmp, mode)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// An absolute, canonical path that exists (a grant's or the fix's).
fn canonical(what: &str, p: &Path, dir: bool) -> Result<PathBuf, Stop> {
    let c = std::fs::canonicalize(p).map_err(|e| {
        usage(format!(
            "{what} {}: {e}; give a path that exists",
            crate::escape::line(&p.display().to_string())
        ))
    })?;
    let meta = std::fs::metadata(&c).map_err(|e| usage(format!("{what} {}: {e}", c.display())))?;
    match (dir, meta.is_dir(), meta.is_file()) {
        (true, true, _) | (false, _, true) => Ok(c),
        (true, ..) => Err(usage(format!("{what} {} is not a directory", c.display()))),
        (false, ..) => Err(usage(format!("{what} {} is not a file", c.display()))),
    }
}

fn add(dir: &Path, unit_dir: &Path, a: AddArgs, out: &Printer) -> Result<Exit, Stop> {
    instance::check_name(&a.name).map_err(instance_error)?;
    let path = instance::path_of(dir, &a.name);
    if path.exists() && !a.replace {
        return Err(usage(format!(
            "{:?} is already scheduled ({}); pass --replace to replace it, or pick another name",
            a.name,
            path.display()
        )));
    }
    let mut params = BTreeMap::new();
    for p in &a.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| usage(format!("--param {p:?} is not NAME=VALUE")))?;
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(usage(format!("--param {k} is given twice; give it once")));
        }
    }
    let on_calendar = match (&a.every, &a.on_calendar) {
        (Some(every), _) => {
            let d = crate::units::duration(every, crate::units::MAX_AGE)
                .map_err(|e| usage(format!("--every: {e}")))?;
            systemd::calendar_of_every(d).map_err(usage)?
        }
        (None, Some(expr)) => {
            systemd::check_calendar(expr).map_err(usage)?;
            expr.clone()
        }
        (None, None) => return Err(usage("give --every DURATION or --on-calendar EXPR")),
    };
    let mut inst = Instance {
        fix: canonical("the fix", &a.fix, false)?,
        mode: a.mode,
        on_calendar,
        allow: a
            .allow
            .iter()
            .map(|p| canonical("--allow", p, true))
            .collect::<Result<_, _>>()?,
        allow_ro: a
            .allow_ro
            .iter()
            .map(|p| canonical("--allow-ro", p, true))
            .collect::<Result<_, _>>()?,
        allow_log: a.allow_log,
        timeout: a.timeout,
        added: Some(rfc3339(now_secs())),
        generation: Some(crate::run::new_run_id()),
        params,
        promoted: None,
    };
    inst.check().map_err(usage)?;
    if inst.mode == Mode::Real {
        // Real only where a promotion still covers exactly this (a new
        // calendar for a promoted schedule, say); else dry-run first.
        let old = Instance::load_trusted(dir, &a.name).ok();
        let kept = old
            .and_then(|o| o.promoted)
            .filter(|p| promotion_holds(&inst, p).is_ok());
        match kept {
            Some(p) => {
                let old = Instance::load_trusted(dir, &a.name).ok();
                inst.added = old.as_ref().and_then(|o| o.added.clone());
                inst.generation = old.and_then(|o| o.generation);
                inst.promoted = Some(p);
            }
            None => {
                return Err(Stop::new(
                    Exit::Refused,
                    format!(
                        "refused: --mode real needs a promotion that covers this fix, these grants and params; a schedule starts as dry-run: add it without --mode, let a scheduled dry-run run, then `defops-wasm schedule promote {}`",
                        a.name
                    ),
                ));
            }
        }
    }
    let service = systemd::service_drop_in(&a.name, &inst).map_err(usage)?;
    let timer = systemd::timer_drop_in(&a.name, &inst);
    let [service_path, timer_path] = systemd::drop_ins(unit_dir, &a.name);
    write_replacing(&path, &inst.to_text(&a.name), INSTANCE_MODE)
        .map_err(|e| io_error(&path, e))?;
    for (p, text) in [(&service_path, &service), (&timer_path, &timer)] {
        write_replacing(p, text, 0o644).map_err(|e| io_error(p, e))?;
    }
    if out.is_json() {
        out.raw(&json!({
            "type": "schedule",
            "name": a.name,
            "instance": path.display().to_string(),
            "drop_ins": [service_path.display().to_string(), timer_path.display().to_string()],
            "schedule": instance_json(&inst),
        }));
        return Ok(Exit::Success);
    }
    out.note(&format!(
        "scheduled {} ({}, {}): {}",
        a.name,
        inst.mode.name(),
        inst.on_calendar,
        path.display()
    ));
    out.note(&format!(
        "drop-ins: {}, {}",
        service_path.display(),
        timer_path.display()
    ));
    out.note(&format!(
        "start it: systemctl daemon-reload && systemctl enable --now {}",
        systemd::timer(&a.name)
    ));
    if inst.mode == Mode::DryRun {
        out.note(&format!(
            "it plans only; once a scheduled dry-run succeeded and proved idempotent: defops-wasm schedule promote {}",
            a.name
        ));
    }
    Ok(Exit::Success)
}

fn instance_json(inst: &Instance) -> Value {
    serde_json::to_value(inst).unwrap_or(Value::Null)
}

/// The names of the instance files in `dir`, sorted.
fn names(dir: &Path) -> Result<Vec<String>, Stop> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(usage(format!("cannot list {}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
        .filter(|n| instance::check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

fn list(dir: &Path, unit_dir: &Path, common: &Common, out: &Printer) -> Result<Exit, Stop> {
    let state = common.state_dir()?;
    let records = attempts(&state);
    let names = names(dir)?;
    if names.is_empty() && !out.is_json() {
        out.note(&format!("no scheduled fixes in {}", dir.display()));
    }
    for name in names {
        let last = records.get(&name);
        let enabled = systemd::timer_enabled(unit_dir, &name);
        match Instance::load(dir, &name) {
            Ok(inst) if out.is_json() => out.raw(&json!({
                "type": "scheduled",
                "name": name,
                "schedule": instance_json(&inst),
                "timer_enabled": enabled,
                "last": last,
            })),
            Ok(inst) => {
                out.note(&format!(
                    "{:<20} {:<8} {:<22} timer {:<8} {}",
                    name,
                    inst.mode.name(),
                    inst.on_calendar,
                    if enabled { "enabled" } else { "disabled" },
                    crate::escape::line(&inst.fix.display().to_string()),
                ));
                out.note(&format!("{:<20} last: {}", "", describe_attempt(last)));
            }
            Err(e) if out.is_json() => out.raw(&json!({
                "type": "scheduled", "name": name, "error": e.to_string(), "last": last,
            })),
            Err(e) => out.note(&format!(
                "{name:<20} BROKEN: {}",
                crate::escape::line(&e.to_string())
            )),
        }
    }
    Ok(Exit::Success)
}

/// One line on a scheduled instance's last attempt.
pub fn describe_attempt(last: Option<&Value>) -> String {
    let Some(r) = last else {
        return "never ran".into();
    };
    let s = |k: &str| r[k].as_str().unwrap_or("?").to_string();
    let ids: Vec<String> = ["dry_run", "run"]
        .iter()
        .filter_map(|k| r[*k].as_str().map(|id| format!("{k} {id}")))
        .collect();
    crate::escape::line(&format!(
        "{} {} (exit {}){}{}",
        s("time"),
        s("outcome"),
        r["exit_code"],
        if ids.is_empty() {
            String::new()
        } else {
            format!(", {}", ids.join(", "))
        },
        r["message"]
            .as_str()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    ))
    .into_owned()
}

fn demote(dir: &Path, name: &str, out: &Printer) -> Result<Exit, Stop> {
    let mut inst = Instance::load_trusted(dir, name).map_err(instance_error)?;
    let was = inst.mode;
    inst.mode = Mode::DryRun;
    inst.promoted = None;
    let path = instance::path_of(dir, name);
    if was != Mode::DryRun {
        write_replacing(&path, &inst.to_text(name), INSTANCE_MODE)
            .map_err(|e| io_error(&path, e))?;
    }
    match out.is_json() {
        true => out.raw(&json!({"type": "demote", "name": name, "was": was.name()})),
        false if was == Mode::DryRun => out.note(&format!("{name} is already dry-run")),
        false => out.note(&format!(
            "{name} is dry-run again: its scheduled runs plan only"
        )),
    }
    Ok(Exit::Success)
}

fn remove(
    dir: &Path,
    unit_dir: &Path,
    name: &str,
    force: bool,
    common: &Common,
    out: &Printer,
) -> Result<Exit, Stop> {
    instance::check_name(name).map_err(instance_error)?;
    let state = common.state_dir()?;
    let path = instance::path_of(dir, name);
    if !path.exists() {
        return Err(instance_error(InstanceError::Missing {
            name: name.into(),
            path: path.display().to_string(),
        }));
    }
    if systemd::timer_enabled(unit_dir, name) && !force {
        return Err(Stop::new(
            Exit::Refused,
            format!(
                "refused: {} is enabled; disable it first (systemctl disable --now {}), or pass --force",
                systemd::timer(name),
                systemd::timer(name)
            ),
        ));
    }
    let mut removed = Vec::new();
    // The last attempt's record goes too: `check` would warn about a
    // schedule that is gone.
    let record = attempts_dir(&state).join(format!("{name}.json"));
    for p in std::iter::once(path)
        .chain(systemd::drop_ins(unit_dir, name))
        .chain(std::iter::once(record))
    {
        match std::fs::remove_file(&p) {
            Ok(()) => removed.push(p.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(usage(format!(
                    "cannot remove {}: {e}; check its permissions",
                    p.display()
                )));
            }
        }
        // The drop-in directory, when it is now empty.
        if let Some(d) = p
            .parent()
            .filter(|d| d.extension().is_some_and(|e| e == "d"))
        {
            let _ = std::fs::remove_dir(d);
        }
    }
    match out.is_json() {
        true => out.raw(&json!({"type": "remove", "name": name, "removed": removed})),
        false => out.note(&format!(
            "removed {name}: {}; then: systemctl daemon-reload",
            removed.join(", ")
        )),
    }
    Ok(Exit::Success)
}

/// The request of one `run` of an instance.
fn request(
    inst: &Instance,
    name: &str,
    dry_run: bool,
    common: &Common,
) -> Result<crate::run::RunRequest, Stop> {
    let argv = inst.run_args(dry_run);
    let parsed = RunOnly::try_parse_from(std::iter::once("defops-wasm".into()).chain(argv))
        .map_err(|e| {
            usage(format!(
                "the schedule {name} does not make a valid run: {}",
                e.to_string().lines().next().unwrap_or("")
            ))
        })?;
    let mut req = parsed.run.into_request(common)?;
    req.scheduled = Some(name.to_string());
    req.scheduled_generation = inst.generation.clone();
    Ok(req)
}

/// What an attempt came to, as recorded and printed.
struct Attempt {
    outcome: String,
    exit: Exit,
    message: Option<String>,
    dry_run: Option<Value>,
    run: Option<Value>,
}

impl Attempt {
    fn skipped(outcome: &str, exit: Exit, message: String) -> Attempt {
        Attempt {
            outcome: outcome.into(),
            exit,
            message: Some(message),
            dry_run: None,
            run: None,
        }
    }
}

fn exec(dir: &Path, name: &str, common: &Common, out: &Printer) -> Result<Exit, Stop> {
    // Its attempts are recorded there: only a state directory no one else
    // can swap (as for a run).
    let state = crate::state_dir::prepare(&common.state_dir_to_prepare()?, &Default::default())
        .map_err(usage)?;
    let inst = match Instance::load_trusted(dir, name) {
        Ok(inst) => inst,
        Err(e) => {
            let stop = instance_error(e);
            // What `status` and `check` show: an instance that cannot run
            // is a failed attempt, not the last good one.
            if instance::check_name(name).is_ok() {
                let record = json!({
                    "name": name,
                    "time": rfc3339(now_secs()),
                    "outcome": "error",
                    "exit_code": stop.exit.code(),
                    "message": stop.message,
                });
                if let Err(e) = save_attempt(&state, name, &record) {
                    tracing::warn!("cannot record the attempt of {name}: {e}");
                }
            }
            return Err(stop);
        }
    };
    let attempt = attempt(&inst, name, &state, common, out);
    let (exit, record) = match &attempt {
        Ok(a) => (
            a.exit,
            json!({
                "outcome": a.outcome,
                "exit_code": a.exit.code(),
                "message": a.message,
                "dry_run": a.dry_run.as_ref().map(|s| &s["run_id"]),
                "run": a.run.as_ref().map(|s| &s["run_id"]),
                "changed": a.run.as_ref().or(a.dry_run.as_ref()).map(|s| &s["changed"]),
                "idempotent": a.dry_run.as_ref().map(|s| &s["idempotent"]),
            }),
        ),
        Err(stop) => (
            stop.exit,
            json!({"outcome": "error", "exit_code": stop.exit.code(), "message": stop.message}),
        ),
    };
    let mut record = record;
    record["name"] = json!(name);
    record["mode"] = json!(inst.mode.name());
    record["time"] = json!(rfc3339(now_secs()));
    record["fix"] = json!(inst.fix.display().to_string());
    if let Err(e) = save_attempt(&state, name, &record) {
        tracing::warn!("cannot record the attempt of {name}: {e}");
    }
    if let Ok(Attempt {
        message: Some(m), ..
    }) = &attempt
    {
        match exit {
            Exit::Success => out.note(m),
            // A skip is normal for a timer: said, not an error.
            Exit::Paused | Exit::Skipped => eprintln!("defops-wasm: {}", crate::escape::line(m)),
            _ => crate::output::error_line(m),
        }
    }
    attempt.map(|_| exit)
}

fn attempt(
    inst: &Instance,
    name: &str,
    state: &Path,
    common: &Common,
    out: &Printer,
) -> Result<Attempt, Stop> {
    // The fix runs as root with the grants: it must be as trusted as the
    // instance that names it.
    let fix = instance::open_trusted(&inst.fix)
        .map_err(|e| usage(format!("the fix {}: {e}", inst.fix.display())))?
        .map_err(|why| Stop::new(Exit::Refused, format!("refused: {why}")))?;
    drop(fix);
    if inst.mode == Mode::Real {
        // The guards that make a run "not now" are looked at first: a skip
        // is normal for a timer and costs no fix compile. A fix is paused
        // by its file's name or its manifest's, as a run by hand.
        let manifest = crate::sandbox::FixFile::read(&inst.fix)
            .ok()
            .and_then(|f| f.manifest_text()?.ok())
            .and_then(|text| crate::manifest::Manifest::parse(&text).ok());
        let names = crate::policy::fix_names(&inst.fix, manifest.as_ref().map(|m| m.name.as_str()));
        if let Some(p) = crate::policy::paused_for(state, &names) {
            return Ok(Attempt::skipped(
                "skipped-paused",
                Exit::Paused,
                format!(
                    "skipped {name}: {}; {} lifts it",
                    crate::policy::describe_pause(&p),
                    crate::policy::resume_command(&p)
                ),
            ));
        }
        let config = common.config()?;
        if let Some(w) = &config.window {
            let now = w.at(jiff::Timestamp::now());
            if !now.open {
                return Ok(Attempt::skipped(
                    "skipped-window",
                    Exit::Skipped,
                    format!(
                        "skipped {name}: outside the change window ({}; now {}{})",
                        now.why,
                        now.local,
                        now.until
                            .map(|u| format!("; it opens {u}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let (exit, dry) = crate::run::run_summarized(request(inst, name, true, common)?, out)?;
    let outcome = dry["outcome"].as_str().unwrap_or("?").to_string();
    let mut a = Attempt {
        outcome: outcome.clone(),
        exit,
        message: None,
        dry_run: Some(dry.clone()),
        run: None,
    };
    if exit != Exit::Success {
        return Ok(a);
    }
    if outcome == "planned" && dry["idempotent"] != json!(true) {
        a.outcome = "not-idempotent".into();
        a.exit = Exit::Refused;
        a.message = Some(format!(
            "refused: the scheduled dry-run {} of {name} is not idempotent; {} (fix the fix; it cannot be promoted or committed as it is)",
            dry["run_id"].as_str().unwrap_or("?"),
            match inst.mode {
                Mode::Real => "nothing was committed",
                Mode::DryRun => "it was a dry-run",
            }
        ));
        return Ok(a);
    }
    if inst.mode == Mode::DryRun {
        return Ok(a);
    }
    // Real only for what was promoted: the fix, grants, params and
    // timeout the promotion's dry-run covered.
    let promoted = inst
        .promoted
        .as_ref()
        .ok_or_else(|| "it was never promoted".to_string())
        .and_then(|p| promotion_holds(inst, p).map(|()| p));
    if let Err(why) = promoted {
        a.outcome = "not-promoted".into();
        a.exit = Exit::Refused;
        a.message = Some(format!(
            "refused: no real run of {name}: {why}; its runs stay dry-runs until `defops-wasm schedule promote {name}` again (dry-run {} just ran)",
            dry["run_id"].as_str().unwrap_or("?")
        ));
        return Ok(a);
    }
    if dry["changed"].as_u64() == Some(0) || outcome == "not-needed" {
        a.outcome = "nothing-to-do".into();
        a.message = Some(format!(
            "{name}: nothing to do (dry-run {} planned no change)",
            dry["run_id"].as_str().unwrap_or("?")
        ));
        return Ok(a);
    }
    wait_for_the_lock(state, name);
    let mut req = request(inst, name, false, common)?;
    // The very bytes promoted: a fix swapped since the check above is
    // refused by the run that reads it.
    req.expect_sha256 = promoted.ok().map(|p| p.fix_sha256.clone());
    let (exit, real) = crate::run::run_summarized(req, out)?;
    a.outcome = real["outcome"].as_str().unwrap_or("?").to_string();
    a.exit = exit;
    a.run = Some(real);
    Ok(a)
}

/// How long a scheduled real run waits for another run or rollback on this
/// host to finish (timers that fire together, catch-up at boot).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits (up to [`LOCK_WAIT`]) until no other run or rollback holds the
/// host's lock; the run then takes it as always (and is refused if it lost
/// the race).
fn wait_for_the_lock(state: &Path, name: &str) {
    let started = std::time::Instant::now();
    loop {
        match crate::policy::RunLock::take(state, &format!("schedule {name} (waiting)")) {
            Ok(lock) => return drop(lock),
            Err(crate::policy::LockError::Busy { .. }) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(_) => return,
        }
    }
}

/// Whether a promotion still covers the instance; what changed, if not.
fn promotion_holds(inst: &Instance, p: &Promoted) -> Result<(), String> {
    let bytes = crate::regular_file::read(&inst.fix)
        .map_err(|e| format!("the fix {} cannot be read ({e})", inst.fix.display()))?;
    if crate::digest::Alg::Sha256.hex(&bytes) != p.fix_sha256 {
        return Err(format!(
            "the fix {} changed since it was promoted on dry-run {}",
            inst.fix.display(),
            p.dry_run
        ));
    }
    if inst.basis() != p.basis {
        return Err(format!(
            "its grants, log grants, params or timeout changed since it was promoted on dry-run {}",
            p.dry_run
        ));
    }
    Ok(())
}

/// Where the last attempt of each instance is recorded.
fn attempts_dir(state: &Path) -> PathBuf {
    state.join("scheduled")
}

fn save_attempt(state: &Path, name: &str, record: &Value) -> std::io::Result<()> {
    let dir = attempts_dir(state);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    write_replacing(
        &dir.join(format!("{name}.json")),
        &format!("{record}\n"),
        0o600,
    )
}

/// The last attempt of every instance that ran on this host, by name.
pub fn attempts(state: &Path) -> BTreeMap<String, Value> {
    let Ok(entries) = std::fs::read_dir(attempts_dir(state)) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let name = name.strip_suffix(".json")?.to_string();
            instance::check_name(&name).ok()?;
            // Written by this user alone, or it is not an attempt of ours.
            let text = crate::regular_file::read_own_record(&e.path()).ok()?;
            Some((name, serde_json::from_str(&text).ok()?))
        })
        .collect()
}

/// Whether an attempt's end is one a timer should not be marked failed
/// for: done, nothing to do, or skipped by a guard that said "not now".
pub fn attempt_ok(r: &Value) -> bool {
    matches!(r["exit_code"].as_i64(), Some(0 | 5 | 6))
}

fn promote(dir: &Path, name: &str, common: &Common, out: &Printer) -> Result<Exit, Stop> {
    let mut inst = Instance::load_trusted(dir, name).map_err(instance_error)?;
    if inst.mode == Mode::Real
        && let Some(p) = &inst.promoted
        && promotion_holds(&inst, p).is_ok()
    {
        out.note(&format!("{name} is already real"));
        return Ok(Exit::Success);
    }
    let state = common.state_dir()?;
    let config = common.config()?;
    let refuse = |why: String| {
        Stop::new(
            Exit::Refused,
            format!(
                "refused: {name} stays dry-run: {why}; let a scheduled dry-run run (or `defops-wasm schedule exec {name}`) and look at it first"
            ),
        )
    };
    let Some(found) = last_scheduled_dry_run(&state, name) else {
        return Err(refuse(
            "no scheduled dry-run of it is on record here".into(),
        ));
    };
    let id = found.header["run_id"].as_str().unwrap_or("?").to_string();
    same_as_now(&inst, &found.header).map_err(|e| refuse(format!("its last dry-run {id} {e}")))?;
    // Recent, and of this schedule (not of an earlier one of the same name).
    let then = found.header["time"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    if inst.generation.is_some() && found.header["schedule_generation"] != json!(inst.generation) {
        return Err(refuse(format!(
            "its last dry-run {id} is older than the schedule itself (added again since)"
        )));
    }
    let max_age = config.dry_run_first.max_age;
    match then {
        Some(t) if now_secs() - t > max_age.as_secs() as i64 => {
            return Err(refuse(format!(
                "its last dry-run {id} is older than {} (dry-run-first max-age)",
                crate::sandbox::humantime(max_age)
            )));
        }
        Some(_) => {}
        None => return Err(refuse(format!("its last dry-run {id} has no time"))),
    }
    if !found.intact {
        return Err(refuse(format!(
            "the journal of its last dry-run {id} fails verification"
        )));
    }
    match found.outcome.as_deref() {
        Some("planned") if found.idempotent => {}
        Some("planned") => {
            return Err(refuse(format!("its last dry-run {id} is not idempotent")));
        }
        Some("not-needed") => {}
        Some(other) => {
            return Err(refuse(format!("its last dry-run {id} ended {other}")));
        }
        None => return Err(refuse(format!("its last dry-run {id} has no outcome"))),
    }
    inst.mode = Mode::Real;
    inst.promoted = Some(Promoted {
        time: rfc3339(now_secs()),
        by: crate::run::user()["name"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        dry_run: id.clone(),
        fix_sha256: found.header["fix"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        basis: inst.basis(),
    });
    let path = instance::path_of(dir, name);
    write_replacing(&path, &inst.to_text(name), INSTANCE_MODE).map_err(|e| io_error(&path, e))?;
    match out.is_json() {
        true => out.raw(&json!({"type": "promote", "name": name, "dry_run": id})),
        false => out.note(&format!(
            "promoted {name} to real on dry-run {id}: each scheduled run now dry-runs, then commits that plan"
        )),
    }
    Ok(Exit::Success)
}

/// The newest scheduled dry-run of an instance, from the journals.
struct FoundDryRun {
    header: Value,
    intact: bool,
    outcome: Option<String>,
    idempotent: bool,
}

/// How far back `promote` looks for an instance's last dry-run.
const LOOK_BACK: usize = 5000;

fn last_scheduled_dry_run(state: &Path, name: &str) -> Option<FoundDryRun> {
    let ids = crate::journal::list(state).ok()?;
    for id in ids.iter().rev().take(LOOK_BACK) {
        let path = state.join("runs").join(id).join("journal.jsonl");
        let Ok(loaded) = crate::journal::load(&path, None) else {
            continue;
        };
        let h = loaded.header();
        if h["kind"] != "run" || h["dry_run"] != json!(true) || h["scheduled"] != json!(name) {
            continue;
        }
        let last = loaded.records.last();
        return Some(FoundDryRun {
            header: h.clone(),
            intact: matches!(loaded.verdict, crate::journal::Verdict::Intact { .. }),
            outcome: last
                .filter(|r| r["type"] == "outcome")
                .and_then(|r| r["outcome"].as_str().map(str::to_string)),
            idempotent: loaded
                .of("idempotency")
                .any(|r| r["idempotent"] == json!(true)),
        });
    }
    None
}

/// Whether a dry-run's header shows the fix, grants and params the
/// instance has now; what differs, if not.
fn same_as_now(inst: &Instance, header: &Value) -> Result<(), String> {
    let bytes = crate::regular_file::read(&inst.fix)
        .map_err(|e| format!("cannot be compared: the fix cannot be read now ({e})"))?;
    let now = crate::digest::Alg::Sha256.hex(&bytes);
    if header["fix"]["sha256"].as_str() != Some(now.as_str()) {
        return Err(format!(
            "ran another fix (the file {} changed since)",
            inst.fix.display()
        ));
    }
    if header["params"] != json!(inst.params) {
        return Err("ran with other params".into());
    }
    let mut then: Vec<(String, String)> = header["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            // A log glob through a link: where it led.
            let path = g.get("resolved").unwrap_or(&g["path"]);
            (
                path.as_str().unwrap_or("").to_string(),
                g["access"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let canon = |p: &PathBuf| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    };
    let mut wanted: Vec<(String, String)> = inst
        .allow
        .iter()
        .map(|p| (canon(p), "read-write".to_string()))
        .chain(inst.allow_ro.iter().map(|p| (canon(p), "read-only".into())))
        .collect();
    wanted.extend(
        inst.allow_log
            .iter()
            .map(|g| (crate::logs::canonical_glob(g), "log".to_string())),
    );
    then.sort();
    wanted.sort();
    if then != wanted {
        return Err("ran with other grants".into());
    }
    Ok(())
}
