//! Latency of one pod's ADD and DEL through `plexus` with static delegates, against the same
//! delegate calls made directly.

use super::cycle::{direct_cycle, plexus_cycle, Cycles};
use super::report::{Figure, Section, Spread};
use super::{Binaries, Lab, Settings};
use crate::cmd::Result;

/// Wall time of one ADD and one DEL of the pod through `plexus`, and of the same delegate calls
/// made directly by the bench; the difference is Plexus's own cost. The two are interleaved
/// (alternating which goes first) so that drift in the machine's load hits both alike.
pub(super) fn latency(binaries: &Binaries, settings: &Settings) -> Result<Section> {
    let lab = &Lab::in_node(binaries)?;
    let config = lab.plexus_config(None);
    let networks = lab.networks()?;
    for _ in 0..settings.warmup {
        plexus_cycle(lab, &config)?;
        direct_cycle(lab, &networks)?;
    }
    let mut plexus = Cycles::default();
    let mut direct = Cycles::default();
    for run in 0..settings.runs {
        if run % 2 == 0 {
            plexus.push(plexus_cycle(lab, &config)?);
            direct.push(direct_cycle(lab, &networks)?);
        } else {
            direct.push(direct_cycle(lab, &networks)?);
            plexus.push(plexus_cycle(lab, &config)?);
        }
        eprint!(".");
    }
    eprintln!();
    let mut figures = Vec::new();
    for (command, plexus, direct) in [
        ("ADD", &plexus.add, &direct.add),
        ("DEL", &plexus.del, &direct.del),
    ] {
        figures.extend(overhead_figures(command, plexus, direct));
    }
    Ok(Section::new(
        format!(
            "Latency of one pod with 3 delegates, ms ({} runs after {} warm-up)",
            settings.runs, settings.warmup
        ),
        figures,
    ))
}

/// The figures comparing one command through Plexus with the same delegate calls made directly.
pub(super) fn overhead_figures(command: &str, plexus: &[f64], direct: &[f64]) -> Vec<Figure> {
    let plexus = Spread::of(plexus);
    let direct = Spread::of(direct);
    let lower = command.to_ascii_lowercase();
    let overhead = overhead_pair(
        &format!("{lower}_overhead"),
        format!("{command} overhead (median plexus - direct)"),
        format!("{command} overhead relative to direct"),
        plexus.median,
        direct.median,
    );
    let mut figures = vec![
        Figure::spread(
            format!("plexus_{lower}"),
            format!("plexus {command}"),
            "ms",
            plexus,
        ),
        Figure::spread(
            format!("direct_{lower}"),
            format!("direct {command} (3 delegates)"),
            "ms",
            direct,
        ),
    ];
    figures.extend(overhead);
    figures
}

/// Plexus's overhead over the direct calls, from their medians: in ms (`key`) and relative to
/// the direct calls (`<key>_pct`).
pub(super) fn overhead_pair(
    key: &str,
    label: String,
    relative_label: String,
    plexus: f64,
    direct: f64,
) -> [Figure; 2] {
    let overhead = plexus - direct;
    [
        Figure::value(key.to_string(), label, "ms", overhead),
        Figure::value(
            format!("{key}_pct"),
            relative_label,
            "%",
            100.0 * overhead / direct,
        ),
    ]
}
