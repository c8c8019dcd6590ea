//! Fuzz target `cache_file`: see [`plexus_fuzz::cache_file`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz::cache_file(data));
