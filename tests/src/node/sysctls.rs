//! The kernel settings the kubelet changes when it starts, recorded and written back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Result;

/// The kernel settings the kubelet 1.20 changes when it starts (`setupKernelTunables`), with
/// the values it sets.
pub const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

/// The kernel settings named by [`KUBELET_SYSCTLS`], by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctls(pub BTreeMap<String, String>);

impl Sysctls {
    /// Reads the current values (settings this kernel lacks are left out).
    pub fn read() -> Sysctls {
        Sysctls(
            KUBELET_SYSCTLS
                .iter()
                .filter_map(|(name, _)| {
                    let value = std::fs::read_to_string(sysctl_path(name)).ok()?;
                    Some((name.to_string(), value.trim().to_string()))
                })
                .collect(),
        )
    }

    /// Whether these are the values the kubelet sets when it starts (it sets all of them at
    /// once).
    pub fn as_kubelet_sets(&self) -> bool {
        KUBELET_SYSCTLS
            .iter()
            .all(|(name, value)| self.0.get(*name).is_none_or(|v| v == value))
    }

    /// Writes back every value that differs now; returns the settings written.
    pub fn restore(&self) -> Result<Vec<String>> {
        let now = Sysctls::read();
        let mut written = Vec::new();
        for (name, value) in &self.0 {
            if now.0.get(name) != Some(value) {
                std::fs::write(sysctl_path(name), value)
                    .map_err(|e| format!("cannot restore {name}={value}: {e}"))?;
                written.push(format!("{name}={value}"));
            }
        }
        Ok(written)
    }

    /// The settings whose value differs from `before`, as `name: before -> now`.
    pub fn changes_since(&self, before: &Sysctls) -> Vec<String> {
        before
            .0
            .iter()
            .filter(|(name, value)| self.0.get(*name) != Some(value))
            .map(|(name, value)| {
                let now = self.0.get(name).map_or("(missing)", String::as_str);
                format!("{name}: {value} -> {now}")
            })
            .collect()
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("kernel.keys.root_maxkeys"),
            Path::new("/proc/sys/kernel/keys/root_maxkeys")
        );
    }
}
