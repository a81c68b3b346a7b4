use defops_host::cli::Cli;
use defops_host::exit::Exit;
use defops_host::output::error_line;
use serde_json::json;

/// Diagnostics on stderr: `RUST_LOG` if set, else `-v` (info) or `-vv`
/// (debug), else nothing.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // Nothing to show: no subscriber at all (the common case costs nothing).
    if verbose == 0 && std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match verbose {
            0 => "off",
            1 => "defops_host=info",
            _ => "defops_host=debug",
        })
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// Parses the command line; a bad flag is one line on stderr and exit 2,
/// like every other error (`--help` and `--version` print as usual).
fn parse() -> Cli {
    use clap::error::ErrorKind;
    match Cli::parse_args(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        // clap says only that an argument was not UTF-8: which (paths may
        // be anything; a parameter or a name may not).
        Err(e) if e.kind() == ErrorKind::InvalidUtf8 => {
            let bad: Vec<String> = std::env::args_os()
                .enumerate()
                .skip(1)
                .filter(|(_, a)| a.to_str().is_none())
                .map(|(n, a)| format!("{n} ({:?})", a.to_string_lossy()))
                .collect();
            let line = match bad.as_slice() {
                [one] => format!("argument {one} is not valid UTF-8, which it must be"),
                many => format!(
                    "one of the arguments {} is not valid UTF-8, which it must be",
                    many.join(", ")
                ),
            };
            error_line(&format!("{line} (see --help)"));
            std::process::exit(Exit::Usage.code());
        }
        Err(e) => {
            // clap's message, then the indented lines that complete it
            // (the missing arguments), on one line; not the usage.
            let text = e.render().to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let rest: Vec<&str> = lines
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| l.starts_with("  "))
                .map(str::trim)
                .collect();
            let line = match rest.is_empty() {
                true => first.to_string(),
                false => format!("{first} {}", rest.join(", ")),
            };
            error_line(&format!("{line} (see --help)"));
            std::process::exit(Exit::Usage.code());
        }
    }
}

fn main() {
    defops_host::phases::main_started();
    let cli = parse();
    init_tracing(cli.common.verbose);
    defops_host::progress::enable(!cli.common.json && !cli.common.quiet);
    let json = cli.json();
    let code = match cli.execute() {
        Ok(exit) => exit.code(),
        Err(stop) => {
            if json {
                let outcome = match stop.exit {
                    Exit::Paused => "paused",
                    Exit::Refused => "refused",
                    _ => "error",
                };
                println!(
                    "{}",
                    defops_host::escape::json(
                        &json!({"type": "summary", "outcome": outcome, "error": stop.message, "exit_code": stop.exit.code()})
                    )
                );
            }
            error_line(&stop.message);
            stop.exit.code()
        }
    };
    std::process::exit(code);
}
