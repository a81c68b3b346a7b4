//! `defops:fix/script`: the Python runtime asks for the fix's source.

use super::RunState;
use super::defops::fix::script::Host;

impl Host for RunState {
    fn source(&mut self) -> wasmtime::Result<String> {
        self.trap_if_aborted()?;
        Ok(self
            .script
            .as_ref()
            .map(|s| s.source.clone())
            .unwrap_or_default())
    }

    fn code(&mut self) -> wasmtime::Result<Vec<u8>> {
        self.trap_if_aborted()?;
        Ok(self
            .script
            .as_ref()
            .map(|s| s.code.to_vec())
            .unwrap_or_default())
    }

    fn name(&mut self) -> wasmtime::Result<String> {
        Ok(self
            .script
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default())
    }
}
