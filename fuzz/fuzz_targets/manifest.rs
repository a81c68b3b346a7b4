#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| defops_host::fuzzing::manifest(data));
