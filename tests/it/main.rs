//! End-to-end tests: the real `defops-wasm` binary, real compiled fixes and
//! test guests, real files in temporary directories.

mod binding;
mod composition;
mod edges;
mod escapes;
mod faults;
mod fips;
mod fixes;
mod foreign_journals;
mod guards;
mod guests;
mod honest;
mod journal;
mod kept;
mod logs;
mod mutations;
mod operator;
mod plangen;
mod python;
mod python_twins;
mod review;
mod rollback;
mod schedule;
mod state_dir;
mod util;
mod way_back;
