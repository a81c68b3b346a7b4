use clap::Parser;
use defops_host::cli::Cli;
use defops_host::exit::Exit;
use defops_host::output::error_line;
use serde_json::json;

fn main() {
    let cli = Cli::parse();
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
                    json!({"type": "summary", "outcome": outcome, "error": stop.message, "exit_code": stop.exit.code()})
                );
            }
            error_line(&stop.message);
            stop.exit.code()
        }
    };
    std::process::exit(code);
}
