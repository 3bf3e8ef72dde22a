//! Grouped bar charts as self-contained SVG (no scripts, no fonts to fetch).

/// One group of bars (e.g. an app), one bar per series (e.g. a restore mode).
pub struct Group {
    pub label: String,
    /// (value, optional upper whisker) per series, in series order.
    pub bars: Vec<(f64, Option<f64>)>,
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A grouped bar chart; whiskers mark e.g. p95 over a p50 bar. `line` draws a labelled
/// horizontal reference (e.g. a 250 ms goal).
pub fn grouped_bars(
    title: &str,
    unit: &str,
    series: &[&str],
    groups: &[Group],
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
        esc(title)
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
        esc(unit)
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
                esc(series.get(si).copied().unwrap_or(""))
            );
            if let Some(hi) = hi {
                let cx = x + bar_w * 0.45;
                s += &format!(
                    "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
                    y(*v),
                    y(*hi)
                );
            }
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            gx + group_w * 0.4,
            h - bottom + 18.0,
            esc(&g.label)
        );
    }
    if let Some((v, label)) = line {
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#c00\" text-anchor=\"end\">{}</text>\n",
            w - 20.0,
            w - 22.0,
            y(v) - 4.0,
            esc(label),
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
            esc(name)
        );
    }
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars_whiskers_and_legend() {
        let svg = grouped_bars(
            "t <x>",
            "ms",
            &["a", "b"],
            &[Group {
                label: "g".into(),
                bars: vec![(10.0, Some(12.0)), (5.0, None)],
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
    }
}
