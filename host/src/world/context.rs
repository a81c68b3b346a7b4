//! `defops:fix/context`: the run's parameters.

use super::RunState;
use super::defops::fix::context::Host;

impl Host for RunState {
    fn dry_run(&mut self) -> wasmtime::Result<bool> {
        self.trap_if_aborted()?;
        Ok(self.dry_run)
    }

    fn param(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.trap_if_aborted()?;
        Ok(self.params.get(&name).cloned())
    }

    fn params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        self.trap_if_aborted()?;
        Ok(self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn hostname(&mut self) -> wasmtime::Result<String> {
        self.trap_if_aborted()?;
        Ok(self.hostname.clone())
    }
}
