//! The fuzz targets' inputs replayed as ordinary tests: every seed of `fuzz/corpus/<target>/`
//! and every input that once crashed a target, kept in `fuzz/regressions/<target>/`, goes
//! through the same function the fuzz target runs (`fuzz/src/lib.rs`), which must not panic.

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::path::{Path, PathBuf};

/// The fuzz directory at the repository's root.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir` (none when it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind` (`corpus` or `regressions`) through its target; returns how many.
fn replay(kind: &str) -> usize {
    let mut count = 0;
    for (target, body) in fuzz_bodies::TARGETS {
        for input in inputs(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(outcome.is_ok(), "{target} panics on {}", input.display());
            count += 1;
        }
    }
    count
}

#[test]
fn every_seed_input_goes_through_its_target() {
    let seeds = replay("corpus");
    assert!(seeds >= fuzz_bodies::TARGETS.len(), "only {seeds} seeds");
}

#[test]
fn every_saved_crash_input_goes_through_its_target() {
    replay("regressions");
}
