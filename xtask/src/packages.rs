//! Installing Debian packages and apt sources that the developer commands need.
//!
//! Every machine the project runs on (a developer's, CI's) is a fresh Debian
//! bookworm where we are root, so the project's own code installs what it needs.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cmd::{self, Result};

/// Whether `apt-get update` ran since the apt sources last changed.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Ensures each `(package, marker)` is installed, judged by whether the file
/// `marker` (a file the package provides) exists.
///
/// Missing packages are installed in one `apt-get install`, after one
/// `apt-get update` per xtask run. Fails clearly when not root.
pub fn ensure_debian_packages(packages: &[(&str, &str)]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, marker)| !Path::new(marker).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    if !cmd::is_root() {
        return Err(format!(
            "Debian packages missing ({}); run as root or install them: apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        )
        .into());
    }
    apt_update()?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still: Vec<&str> = packages
        .iter()
        .filter(|(_, marker)| !Path::new(marker).exists())
        .map(|(_, marker)| *marker)
        .collect();
    if !still.is_empty() {
        return Err(format!("installed, yet still missing: {}", still.join(", ")).into());
    }
    Ok(())
}

/// Runs `apt-get update` unless it already ran since the sources last changed.
pub fn apt_update() -> Result {
    if APT_UPDATED.load(Ordering::SeqCst) {
        return Ok(());
    }
    cmd::run(Command::new("apt-get").arg("update"))?;
    APT_UPDATED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Writes `/etc/apt/<dir>/<name>` with `content` unless it already holds it.
///
/// `dir` is `sources.list.d` or `preferences.d`; a change makes the next
/// [`apt_update`] run again.
pub fn ensure_apt_file(dir: &str, name: &str, content: &str) -> Result {
    let path = Path::new("/etc/apt").join(dir).join(name);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    if !cmd::is_root() {
        return Err(format!("need root to write {}", path.display()).into());
    }
    eprintln!("writing {}:\n{content}", path.display());
    std::fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))?;
    APT_UPDATED.store(false, Ordering::SeqCst);
    Ok(())
}

/// One entry of the apt sources: its types (`deb`, `deb-src`), URI and suites.
#[derive(Debug, Clone, PartialEq)]
pub struct AptSource {
    /// `deb` and/or `deb-src`.
    pub types: Vec<String>,
    /// The archive's URI.
    pub uri: String,
    /// Suites such as `bookworm`, `bookworm-updates`.
    pub suites: Vec<String>,
}

/// Every apt source configured on this machine, from `/etc/apt/sources.list`
/// (one-line format) and `/etc/apt/sources.list.d/*.{list,sources}`.
pub fn apt_sources() -> Vec<AptSource> {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut sources = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            Some("list") => sources.extend(text.lines().filter_map(parse_one_line)),
            _ if file.ends_with("sources.list") => {
                sources.extend(text.lines().filter_map(parse_one_line))
            }
            _ => {}
        }
    }
    sources
}

/// Parses one line of the one-line format: `deb [opts] URI SUITE COMPONENT...`.
fn parse_one_line(line: &str) -> Option<AptSource> {
    let line = line.split('#').next()?.trim();
    let mut words = line.split_whitespace();
    let kind = words.next()?;
    if kind != "deb" && kind != "deb-src" {
        return None;
    }
    let mut uri = words.next()?;
    if uri.starts_with('[') {
        // Skip options such as `[signed-by=... arch=amd64]`.
        while !uri.ends_with(']') {
            uri = words.next()?;
        }
        uri = words.next()?;
    }
    Some(AptSource {
        types: vec![kind.to_string()],
        uri: uri.to_string(),
        suites: vec![words.next()?.to_string()],
    })
}

/// Parses the stanzas of a deb822 `.sources` file (skipping `Enabled: no`).
fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default()
        };
        if field("Enabled").eq_ignore_ascii_case("no") {
            continue;
        }
        let words = |s: String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let types = words(field("Types"));
        let uris = words(field("URIs"));
        let suites = words(field("Suites"));
        for uri in uris {
            out.push(AptSource {
                types: types.clone(),
                uri,
                suites: suites.clone(),
            });
        }
    }
    out
}

/// The URI of the Debian archive this machine installs bookworm from.
pub fn debian_archive_uri() -> Result<String> {
    apt_sources()
        .into_iter()
        .find(|s| s.types.iter().any(|t| t == "deb") && s.suites.iter().any(|s| s == "bookworm"))
        .map(|s| s.uri)
        .ok_or_else(|| "no apt source for Debian bookworm found in /etc/apt".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let one = parse_one_line("deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main");
        assert_eq!(
            one,
            Some(AptSource {
                types: vec!["deb".into()],
                uri: "http://m/debian".into(),
                suites: vec!["bookworm".into()],
            })
        );
        assert_eq!(parse_one_line("# deb http://m/debian bookworm main"), None);
        let stanzas = parse_deb822(
            "Types: deb deb-src\n# comment\nURIs: http://m/debian\nSuites: bookworm bookworm-updates\n\nTypes: deb\nEnabled: no\nURIs: http://x\nSuites: y\n",
        );
        assert_eq!(stanzas.len(), 1);
        assert_eq!(stanzas[0].types, ["deb", "deb-src"]);
        assert_eq!(stanzas[0].suites, ["bookworm", "bookworm-updates"]);
    }
}
