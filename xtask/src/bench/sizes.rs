//! The size of each shipped binary (release, static, stripped) next to Multus's and
//! Whereabouts's.

use super::report::{Figure, Section};
use super::{Binaries, Settings};
use crate::binaries::{inspect, shipped, MULTUS_MB, WHEREABOUTS_MB};
use crate::cmd::Result;

/// One figure per shipped binary, in MB, then the two projects Plexus replaces.
pub(super) fn sizes(binaries: &Binaries, _: &Settings) -> Result<Section> {
    let dir = binaries
        .plexus
        .parent()
        .ok_or("the plexus binary has no directory")?;
    let mut figures = Vec::new();
    for name in shipped() {
        let linking = inspect(&dir.join(name))?;
        let linked = if linking.is_static() {
            "static"
        } else {
            "DYNAMIC"
        };
        figures.push(Figure::value(
            name.replace('-', "_"),
            format!("{name} ({linked}, stripped)"),
            "MB",
            linking.size as f64 / 1e6,
        ));
    }
    figures.push(Figure::value(
        "multus".into(),
        "Multus thick plugin, for comparison".into(),
        "MB",
        MULTUS_MB,
    ));
    figures.push(Figure::value(
        "whereabouts".into(),
        "Whereabouts, for comparison".into(),
        "MB",
        WHEREABOUTS_MB,
    ));
    Ok(Section::new("Binary sizes (release)".into(), figures))
}
