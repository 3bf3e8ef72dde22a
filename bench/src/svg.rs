//! Small, dependency-free SVG bar charts, inlined in reports and written beside benchmark JSON.
//! Hand-written because the charts are simple and must render with no network and no scripts.

/// One group of bars (e.g. a layout) with one value per series (e.g. a method).
#[derive(Clone, Debug)]
pub struct Group {
    pub label: String,
    pub values: Vec<f64>,
}

/// A grouped horizontal bar chart.
#[derive(Clone, Debug)]
pub struct BarChart {
    pub title: String,
    /// Unit shown after each value, e.g. "MiB".
    pub unit: String,
    pub series: Vec<String>,
    pub groups: Vec<Group>,
}

const COLORS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
];

/// Escapes text for XML content and attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Three significant digits at most, but never rounding a small non-zero value to zero
/// (per-tenant monthly costs are fractions of a cent).
fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 0.01 || v <= 0.0 {
        format!("{v:.2}")
    } else {
        let decimals = (-v.log10()).ceil() as usize + 2;
        format!("{v:.decimals$}")
    }
}

impl BarChart {
    pub fn render(&self) -> String {
        let bar_h = 16.0;
        let gap = 10.0;
        let label_w = 150.0;
        let plot_w = 420.0;
        let value_w = 110.0;
        let legend_h = 24.0;
        let top = 34.0 + legend_h;
        let group_h = bar_h * self.series.len().max(1) as f64 + gap;
        let height = top + group_h * self.groups.len() as f64 + 10.0;
        let width = label_w + plot_w + value_w;
        let max = self
            .groups
            .iter()
            .flat_map(|g| g.values.iter().copied())
            .fold(0.0_f64, f64::max);
        let scale = if max > 0.0 { plot_w / max } else { 0.0 };
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
        );
        s.push_str(&format!(
            "<text x=\"4\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
            escape(&self.title)
        ));
        let mut x = label_w;
        for (i, name) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            s.push_str(&format!(
                "<rect x=\"{x}\" y=\"28\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"38\">{}</text>\n",
                x + 16.0,
                escape(name)
            ));
            x += 24.0 + 7.0 * name.len() as f64;
        }
        for (gi, group) in self.groups.iter().enumerate() {
            let gy = top + gi as f64 * group_h;
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                label_w - 8.0,
                gy + group_h / 2.0,
                escape(&group.label)
            ));
            for (i, v) in group.values.iter().enumerate() {
                let y = gy + i as f64 * bar_h;
                let w = (v * scale).max(if *v > 0.0 { 1.0 } else { 0.0 });
                let color = COLORS[i % COLORS.len()];
                s.push_str(&format!(
                    "<rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\">\
                     <title>{}: {} {}</title></rect>\
                     <text x=\"{:.1}\" y=\"{}\">{} {}</text>\n",
                    bar_h - 2.0,
                    escape(self.series.get(i).map_or("", |s| s.as_str())),
                    fmt_value(*v),
                    escape(&self.unit),
                    label_w + w + 4.0,
                    y + bar_h - 5.0,
                    fmt_value(*v),
                    escape(&self.unit)
                ));
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_value_and_escapes_labels() {
        let chart = BarChart {
            title: "a <b>".into(),
            unit: "MiB".into(),
            series: vec!["raw".into(), "pico".into()],
            groups: vec![Group {
                label: "x&y".into(),
                values: vec![120.0, 3.25],
            }],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("x&amp;y"));
        assert!(svg.contains(">120 MiB<"));
        assert!(svg.contains(">3.25 MiB<"));
    }

    #[test]
    fn small_values_keep_their_digits() {
        assert_eq!(fmt_value(0.0), "0.00");
        assert_eq!(fmt_value(0.000092), "0.0000920");
        assert_eq!(fmt_value(0.0031), "0.00310");
        assert_eq!(fmt_value(2.5), "2.50");
        assert_eq!(fmt_value(1046.2), "1046");
    }
}
