//! Fuzz target `networks_annotation`: see [`plexus_fuzz::networks_annotation`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz::networks_annotation(data));
