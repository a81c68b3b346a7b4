//! `defops:fix/report`: messages for the operator.

use super::defops::fix::report::{Host, Level};
use super::{Message, RunState};

impl Host for RunState {
    fn log(&mut self, level: Level, text: String) -> wasmtime::Result<()> {
        // Messages count against the same budget as the fix's stdout/stderr.
        self.output.charge(text.len() + 16)?;
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let message = Message {
            level,
            text,
            pass: self.pass,
        };
        (self.on_message)(&message);
        self.messages.push(message);
        Ok(())
    }
}
