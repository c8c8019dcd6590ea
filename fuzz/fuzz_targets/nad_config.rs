//! Fuzz target `nad_config`: see [`plexus_fuzz::nad_config`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz::nad_config(data));
