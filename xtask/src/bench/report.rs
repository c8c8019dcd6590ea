//! Figures, their spread, and the report: a text table and the same figures as JSON.

use serde_json::{json, Map, Value};

use super::{Settings, CNI_VERSION};

/// Median and spread of a set of samples.
#[derive(Debug, Clone)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) p10: f64,
    pub(super) p90: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) samples: Vec<f64>,
}

impl Spread {
    /// The spread of `samples` (which must not be empty).
    pub(super) fn of(samples: &[f64]) -> Spread {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: percentile(&sorted, 50.0),
            p10: percentile(&sorted, 10.0),
            p90: percentile(&sorted, 90.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        }
    }
}

/// The `p`th percentile of sorted samples, interpolating linearly between closest ranks.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// What a figure holds: a spread over runs, or a single value.
#[derive(Debug, Clone)]
pub(super) enum Measure {
    Spread(Spread),
    Value(f64),
}

/// One figure: a row of the table and an entry of the JSON.
#[derive(Debug, Clone)]
pub(super) struct Figure {
    /// Its key in the JSON.
    pub(super) key: String,
    /// Its label in the table.
    pub(super) label: String,
    /// `ms`, `%`, `KiB`, `MB` or `req` (API requests).
    pub(super) unit: &'static str,
    pub(super) measure: Measure,
}

impl Figure {
    pub(super) fn spread(key: String, label: String, unit: &'static str, spread: Spread) -> Figure {
        Figure {
            key,
            label,
            unit,
            measure: Measure::Spread(spread),
        }
    }

    pub(super) fn value(key: String, label: String, unit: &'static str, value: f64) -> Figure {
        Figure {
            key,
            label,
            unit,
            measure: Measure::Value(value),
        }
    }

    /// A number of this figure, formatted for the table.
    pub(super) fn format(&self, x: f64) -> String {
        match self.unit {
            "KiB" => format!("{x:.0}"),
            "MB" => format!("{x:.1}"),
            "req" if x.fract() == 0.0 => format!("{x:.0}"),
            "req" => format!("{x:.1}"),
            "%" => format!("{x:+.1}"),
            _ => format!("{x:.2}"),
        }
    }

    /// A number of this figure, rounded for the JSON.
    pub(super) fn round(&self, x: f64) -> Value {
        json!((x * 1000.0).round() / 1000.0)
    }

    /// The figure as JSON.
    pub(super) fn to_json(&self) -> Value {
        let mut out = json!({"label": self.label, "unit": self.unit});
        match &self.measure {
            Measure::Value(x) => out["value"] = self.round(*x),
            Measure::Spread(s) => {
                for (name, x) in [
                    ("median", s.median),
                    ("p10", s.p10),
                    ("p90", s.p90),
                    ("min", s.min),
                    ("max", s.max),
                ] {
                    out[name] = self.round(x);
                }
                out["samples"] = s.samples.iter().map(|x| self.round(*x)).collect();
            }
        }
        out
    }
}

/// One benchmark's part of the report.
#[derive(Debug, Clone)]
pub(super) struct Section {
    /// Its key in the JSON (set from [`BENCHMARKS`]).
    pub(super) key: &'static str,
    /// Its heading in the table.
    pub(super) title: String,
    pub(super) figures: Vec<Figure>,
}

impl Section {
    pub(super) fn new(title: String, figures: Vec<Figure>) -> Section {
        Section {
            key: "",
            title,
            figures,
        }
    }

    /// The table's column headings for this section: a spread's, or a single value's.
    pub(super) fn header(&self) -> String {
        let spreads = self
            .figures
            .iter()
            .any(|f| matches!(f.measure, Measure::Spread(_)));
        if spreads {
            format!(
                "  {:<LABEL_WIDTH$} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                "figure", "median", "p10", "p90", "min", "max"
            )
        } else {
            format!("  {:<LABEL_WIDTH$} {:>9}\n", "figure", "value")
        }
    }
}

/// Every section, with the settings they were measured with.
pub(super) struct Report {
    pub(super) settings: Settings,
    pub(super) sections: Vec<Section>,
    /// The machine's 1, 5 and 15 minute load averages when the bench ended.
    pub(super) load: Option<[f64; 3]>,
    /// How long the benchmarks took, in seconds.
    pub(super) elapsed_s: f64,
}

/// Width of the label column of the table.
pub(super) const LABEL_WIDTH: usize = 44;

impl Report {
    /// The report as a text table, one block per section.
    pub(super) fn table(&self) -> String {
        let mut out = format!(
            "Plexus bench: pod with bridge eth0 + macvlan net1, net2 (host-local), CNI {CNI_VERSION}\n"
        );
        out.push_str(&format!("took {:.0} s", self.elapsed_s));
        if let Some([one, five, fifteen]) = self.load {
            out.push_str(&format!("; load average {one:.2}, {five:.2}, {fifteen:.2}"));
        }
        out.push('\n');
        for section in &self.sections {
            out.push_str(&format!("\n{}\n", section.title));
            out.push_str(&section.header());
            for figure in &section.figures {
                out.push_str(&format!("  {:<LABEL_WIDTH$}", figure.label));
                match &figure.measure {
                    Measure::Spread(s) => {
                        for x in [s.median, s.p10, s.p90, s.min, s.max] {
                            out.push_str(&format!(" {:>9}", figure.format(x)));
                        }
                    }
                    Measure::Value(x) => {
                        out.push_str(&format!(" {:>9} {}", figure.format(*x), figure.unit));
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    /// The report as JSON: settings, then each section's figures by key.
    pub(super) fn to_json(&self) -> Value {
        let benchmarks: Map<String, Value> = self
            .sections
            .iter()
            .map(|section| {
                let figures: Map<String, Value> = section
                    .figures
                    .iter()
                    .map(|f| (f.key.clone(), f.to_json()))
                    .collect();
                (
                    section.key.to_string(),
                    json!({"title": section.title, "figures": figures}),
                )
            })
            .collect();
        json!({
            "cniVersion": CNI_VERSION,
            "runs": self.settings.runs,
            "warmupRuns": self.settings.warmup,
            "delegates": ["bridge eth0", "macvlan net1", "macvlan net2"],
            "loadAverage": self.load,
            "elapsedSeconds": (self.elapsed_s * 10.0).round() / 10.0,
            "benchmarks": benchmarks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn percentiles_interpolate() {
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert!((s.p10 - 1.4).abs() < 1e-9 && (s.p90 - 4.6).abs() < 1e-9);
        assert_eq!(Spread::of(&[7.0]).p90, 7.0);
    }
}
