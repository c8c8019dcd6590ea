//! Fuzz target `ipam_range`: see [`plexus_fuzz::ipam_range`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz::ipam_range(data));
