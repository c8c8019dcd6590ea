//! Fuzz target `cni_env`: see [`plexus_fuzz::cni_env`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz::cni_env(data));
