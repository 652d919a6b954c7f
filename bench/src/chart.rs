//! A grouped bar chart of the "read" results as a self-contained SVG (no dependency): one
//! group per (file, threads), one bar per target, ops/s on a log scale (native /proc is
//! 10-30 times the FUSE targets, a linear axis would flatten them).

use std::fmt::Write;

/// One bar: (group label, target, ops/s).
pub fn read_svg(bars: &[(String, String, f64)], title: &str) -> String {
    let mut groups: Vec<String> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for (g, t, _) in bars {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
        if !targets.contains(t) {
            targets.push(t.clone());
        }
    }
    let colors = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b"];
    let (left, top, bottom, bar_w, gap) = (70.0, 50.0, 90.0, 14.0, 16.0);
    let group_w = bar_w * targets.len().max(1) as f64 + gap;
    let plot_h = 320.0;
    let width = left + group_w * groups.len() as f64 + 20.0;
    let height = top + plot_h + bottom;
    let max = bars.iter().map(|b| b.2).fold(1.0f64, f64::max);
    let decades = max.log10().ceil().max(1.0);
    let y = |v: f64| top + plot_h - (v.max(1.0).log10() / decades) * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20" font-size="14">{}</text>
"#,
        escape(title)
    );
    for d in 0..=decades as i32 {
        let v = 10f64.powi(d);
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - 20.0,
            left - 5.0,
            yy + 4.0,
            if v >= 1000.0 { format!("{}k", v / 1000.0) } else { format!("{v}") }
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="15" y="{:.0}" transform="rotate(-90 15 {:.0})" text-anchor="middle">ops/s (log)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + gap / 2.0 + gi as f64 * group_w;
        for (ti, t) in targets.iter().enumerate() {
            if let Some((_, _, v)) = bars.iter().find(|b| &b.0 == g && &b.1 == t) {
                let x = gx + ti as f64 * bar_w;
                let yy = y(*v);
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.0} ops/s</title></rect>"#,
                    bar_w - 1.0,
                    top + plot_h - yy,
                    colors[ti % colors.len()],
                    escape(t),
                    escape(g)
                );
            }
        }
        let cx = gx + bar_w * targets.len() as f64 / 2.0;
        let ly = top + plot_h + 12.0;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{ly:.1}" transform="rotate(45 {cx:.1} {ly:.1})">{}</text>"#,
            escape(g)
        );
    }
    for (ti, t) in targets.iter().enumerate() {
        let x = left + 10.0 + ti as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.0}" y="30" width="10" height="10" fill="{}"/><text x="{:.0}" y="39">{}</text>"#,
            colors[ti % colors.len()],
            x + 14.0,
            escape(t)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_bar_per_result_and_escaped_labels() {
        let bars = vec![
            ("meminfo 1t".to_string(), "native".to_string(), 70_000.0),
            ("meminfo 1t".to_string(), "sysvisor-fs".to_string(), 12_000.0),
            ("a<b 2t".to_string(), "native".to_string(), 0.0),
        ];
        let svg = super::read_svg(&bars, "t & t");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("t &amp; t") && svg.contains("a&lt;b 2t"));
    }
}
