//! Prometheus's text exposition format, written by hand: a few families of counters, gauges and
//! histograms need no client library. No I/O; the format is
//! <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format> (version
//! 0.0.4): `# HELP` and `# TYPE` once per family, then one `name{labels} value` line per
//! sample; label values escape `\`, `"` and newlines.

use std::fmt::{Display, Write};

use crate::metrics::histogram::HistogramSnapshot;

/// The `Content-Type` of the format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples mean to Prometheus.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape's text, family by family.
#[derive(Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    /// A family of one unlabelled sample.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family of samples that differ by one label (`label="value"` each).
    pub(crate) fn by_label<V: Display>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (String, V)>,
    ) {
        self.family(name, kind, help);
        for (value_of_label, value) in samples {
            self.sample(name, &[(label, &value_of_label)], value);
        }
    }

    /// A histogram family: its cumulative buckets, `+Inf`, sum and count.
    pub(crate) fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in &h.cumulative {
            self.sample(&bucket, &[("le", &bound.to_string())], count);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[], h.sum_seconds);
        self.sample(&format!("{name}_count"), &[], h.count);
    }

    pub(crate) fn into_text(self) -> String {
        self.text
    }

    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        // Writing into a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the format quotes it.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A help text as the format carries it (no quotes to escape there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_help_type_and_samples() {
        let mut e = Exposition::default();
        e.single("pico_x_total", Kind::Counter, "Things.", 3);
        e.by_label(
            "pico_tenants",
            Kind::Gauge,
            "Tenants by state.",
            "state",
            [("running".to_string(), 2), ("a\"b\\c\nd".to_string(), 1)],
        );
        assert_eq!(
            e.into_text(),
            "# HELP pico_x_total Things.\n# TYPE pico_x_total counter\npico_x_total 3\n\
             # HELP pico_tenants Tenants by state.\n# TYPE pico_tenants gauge\n\
             pico_tenants{state=\"running\"} 2\npico_tenants{state=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_with_inf_sum_and_count() {
        let mut e = Exposition::default();
        let h = HistogramSnapshot {
            cumulative: vec![(0.001, 1), (0.5, 2)],
            sum_seconds: 0.25,
            count: 3,
        };
        e.histogram("pico_s", "Seconds.", &h);
        assert_eq!(
            e.into_text(),
            "# HELP pico_s Seconds.\n# TYPE pico_s histogram\n\
             pico_s_bucket{le=\"0.001\"} 1\npico_s_bucket{le=\"0.5\"} 2\n\
             pico_s_bucket{le=\"+Inf\"} 3\npico_s_sum 0.25\npico_s_count 3\n"
        );
    }
}
