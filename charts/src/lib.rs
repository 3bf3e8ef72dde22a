//! Small, dependency-free SVG bar charts, inlined in reports (`pico report cost`) and written beside
//! benchmark JSON (`pico bench`). Their own crate because both the store's cost report and the
//! benchmarks draw them, and neither should depend on the other.
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

/// One group of bars (e.g. an app), one bar per series (e.g. a restore mode).
pub struct WhiskerGroup {
    pub label: String,
    /// (value, optional upper whisker) per series, in series order.
    pub bars: Vec<(f64, Option<f64>)>,
    /// An optional short mark across each whisker, in series order (e.g. p95 on a whisker up to
    /// p99); empty for none.
    pub ticks: Vec<Option<f64>>,
}

/// A grouped vertical bar chart; whiskers mark e.g. p99 over a p50 bar, ticks a value between
/// (p95). `line` draws a labelled horizontal reference (e.g. a 100 ms goal).
pub fn grouped_bars(
    title: &str,
    unit: &str,
    series: &[&str],
    groups: &[WhiskerGroup],
    line: Option<(f64, &str)>,
) -> String {
    let (w, h, left, bottom, top) = (900.0, 420.0, 70.0, 60.0, 50.0);
    let plot_h = h - bottom - top;
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|(v, hi)| hi.unwrap_or(*v).max(*v)))
        .chain(line.map(|(v, _)| v))
        .fold(1.0f64, f64::max)
        * 1.1;
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let group_w = (w - left - 20.0) / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text>\n",
            w - 20.0,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    s += &format!(
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{}</text>\n",
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(unit)
    );
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + gi as f64 * group_w + group_w * 0.1;
        for (si, (v, hi)) in g.bars.iter().enumerate() {
            let x = gx + si as f64 * bar_w;
            s += &format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {v:.1}</title></rect>\n",
                y(*v),
                bar_w * 0.9,
                (top + plot_h - y(*v)).max(0.0),
                COLORS[si % COLORS.len()],
                escape(series.get(si).copied().unwrap_or(""))
            );
            if let Some(hi) = hi {
                let cx = x + bar_w * 0.45;
                s += &format!(
                    "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
                    y(*v),
                    y(*hi)
                );
            }
            if let Some(Some(t)) = g.ticks.get(si) {
                let cx = x + bar_w * 0.45;
                s += &format!(
                    "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"black\"/>\n",
                    cx - bar_w * 0.2,
                    cx + bar_w * 0.2,
                    ty = y(*t)
                );
            }
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            gx + group_w * 0.4,
            h - bottom + 18.0,
            escape(&g.label)
        );
    }
    if let Some((v, label)) = line {
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#c00\" text-anchor=\"end\">{}</text>\n",
            w - 20.0,
            w - 22.0,
            y(v) - 4.0,
            escape(label),
            y = y(v)
        );
    }
    for (si, name) in series.iter().enumerate() {
        let x = left + si as f64 * 190.0;
        s += &format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            h - 26.0,
            COLORS[si % COLORS.len()],
            x + 16.0,
            h - 16.0,
            escape(name)
        );
    }
    s + "</svg>\n"
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
    #[test]
    fn whisker_chart_renders_bars_whiskers_and_legend() {
        let svg = grouped_bars(
            "t <x>",
            "ms",
            &["a", "b"],
            &[WhiskerGroup {
                label: "g".into(),
                bars: vec![(10.0, Some(12.0)), (5.0, None)],
                ticks: vec![Some(11.0)],
            }],
            Some((250.0, "goal")),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            4,
            "2 bars + 2 legend boxes"
        );
        assert!(svg.contains("t &lt;x&gt;") && svg.contains("goal"));
        assert_eq!(
            svg.matches("<line x1=").count(),
            5 + 1 + 1 + 1,
            "5 grid lines, 1 whisker, 1 tick, 1 goal line"
        );
    }
}
