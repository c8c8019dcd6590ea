//! Fuzz target `cni_stdin`: see [`plexus_fuzz::cni_stdin`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz::cni_stdin(data));
