use clap::Parser;
use defops_host::cli::Cli;
use defops_host::exit::Exit;
use defops_host::output::error_line;
use serde_json::json;

/// Diagnostics on stderr: `RUST_LOG` if set, else `-v` (info) or `-vv`
/// (debug), else nothing.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
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

fn main() {
    let cli = Cli::parse();
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
