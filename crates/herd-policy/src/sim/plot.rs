//! Plots as hand-written SVG: one line per series over the steps of a run (`herd sim`, the
//! class loads of `herd analyze classes`), and horizontal bars (feature importances).

use std::fmt::Write as _;

const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// An SVG line chart of `series` (name, values per step) against hours (`step_secs` apart).
pub fn line_chart(title: &str, y_label: &str, step_secs: f64, series: &[(String, Vec<f64>)]) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 60.0, 220.0, 40.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(2);
    let y_max = series.iter().flat_map(|s| s.1.iter().copied()).fold(0.0, f64::max).max(1e-9) * 1.05;
    let x = |i: usize| left + pw * i as f64 / (n - 1) as f64;
    let y = |v: f64| top + ph * (1.0 - v / y_max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="{left}" y="20" font-size="14">{title}</text>"#);
    let _ = write!(
        svg,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="end">{v:.1}</text>"#, left - 4.0, y(v) + 4.0);
    }
    let hours = (n - 1) as f64 * step_secs / 3600.0;
    for k in 0..=4 {
        let hx = hours * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{hx:.0} h</text>"#,
            left + pw * k as f64 / 4.0,
            h - 20.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="10" y="{}" transform="rotate(-90 10 {})">{y_label}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = values.iter().enumerate().map(|(j, v)| format!("{:.1},{:.1}", x(j), y(*v))).collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = top + 16.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            left + pw + 10.0,
            ly + 5.0,
            left + pw + 28.0,
            ly + 10.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// An SVG chart of horizontal bars, one per `(label, value)` (values >= 0), in the order given.
pub fn bar_chart(title: &str, x_label: &str, bars: &[(String, f64)]) -> String {
    let (w, left, right, top, row) = (720.0, 170.0, 70.0, 40.0, 24.0);
    let h = top + row * bars.len().max(1) as f64 + 40.0;
    let pw = w - left - right;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="10" y="20" font-size="14">{}</text>"#, escape(title));
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let bw = pw * value.max(0.0) / max;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{}" width="{bw:.1}" height="{}" fill="{}"/><text x="{}" y="{}">{value:.3}</text>"#,
            left - 6.0,
            y + row * 0.65,
            escape(label),
            y + 3.0,
            row - 6.0,
            COLOURS[0],
            left + bw + 4.0,
            y + row * 0.65
        );
    }
    let _ = write!(svg, r#"<text x="{left}" y="{}">{}</text>"#, h - 12.0, escape(x_label));
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_one_line_per_series() {
        let svg = super::line_chart("t", "y", 60.0, &[("a<b".into(), vec![1.0, 2.0, 3.0]), ("c".into(), vec![0.0; 3])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b"));
    }

    #[test]
    fn draws_one_bar_per_value() {
        let svg = super::bar_chart("t", "share", &[("cpu".into(), 0.75), ("net<".into(), 0.25)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("net&lt;") && svg.contains("0.750"));
    }
}
