//! Grouped bar charts as self-contained SVG (no dependency), one per scenario run: one group
//! of bars per x label, one colour per series, on a linear or a log axis (log when values
//! span decades, e.g. native /proc vs FUSE servers), with an optional dashed reference line
//! for a target.

use std::fmt::Write;

/// One bar: its group (x label), its series (colour) and its value.
pub struct Bar {
    pub group: String,
    pub series: String,
    pub value: f64,
}

impl Bar {
    pub fn new(group: impl Into<String>, series: impl Into<String>, value: f64) -> Bar {
        Bar { group: group.into(), series: series.into(), value }
    }
}

pub struct Chart {
    pub title: String,
    /// The y axis label, with its unit.
    pub y_label: String,
    pub log: bool,
    pub bars: Vec<Bar>,
    /// A dashed horizontal line at a value, with its label (e.g. a target).
    pub reference: Option<(f64, String)>,
}

const COLORS: [&str; 4] = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b"];

/// The y axis: maps a value to a height in [0, 1] and lists the ticks.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(log: bool, values: impl Iterator<Item = f64> + Clone) -> Axis {
        let max = values.clone().fold(0.0f64, f64::max);
        if log {
            let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
            let lo = if min.is_finite() { min.log10().floor() } else { 0.0 };
            let hi = max.max(1.0).log10().ceil().max(lo + 1.0);
            Axis { log, lo, hi }
        } else {
            Axis { log, lo: 0.0, hi: nice_ceiling(max) }
        }
    }

    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(10f64.powf(self.lo)).log10() - self.lo) / (self.hi - self.lo)
        } else {
            v.max(0.0) / self.hi
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            (self.lo as i32..=self.hi as i32).map(|d| 10f64.powi(d)).collect()
        } else {
            (0..=5).map(|i| self.hi * i as f64 / 5.0).collect()
        }
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

pub fn svg(c: &Chart) -> String {
    let mut groups: Vec<&str> = Vec::new();
    let mut series: Vec<&str> = Vec::new();
    for b in &c.bars {
        if !groups.contains(&b.group.as_str()) {
            groups.push(&b.group);
        }
        if !series.contains(&b.series.as_str()) {
            series.push(&b.series);
        }
    }
    let axis =
        Axis::new(c.log, c.bars.iter().map(|b| b.value).chain(c.reference.iter().map(|r| r.0)));
    let (left, top, bar_w, gap, plot_h) = (70.0, 50.0, 14.0, 16.0, 320.0);
    // Group labels slant at 45 degrees: about 4.5 px down and right per character.
    let longest = groups.iter().map(|g| g.chars().count()).max().unwrap_or(0) as f64;
    let bottom = 30.0 + 4.6 * longest;
    let group_w = bar_w * series.len().max(1) as f64 + gap;
    let right = (left + group_w * groups.len() as f64).max(left + 120.0 * series.len() as f64);
    let width =
        (right + (4.6 * longest).max(40.0)).max(left + 7.0 * c.title.chars().count() as f64 + 20.0);
    let height = top + plot_h + bottom;
    let y = |v: f64| top + plot_h - axis.frac(v) * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20" font-size="14">{}</text>
"#,
        escape(&c.title)
    );
    for v in axis.ticks() {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            right,
            left - 5.0,
            yy + 4.0,
            label(v)
        );
    }
    let mid = top + plot_h / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="15" y="{mid:.0}" transform="rotate(-90 15 {mid:.0})" text-anchor="middle">{}</text>"#,
        escape(&c.y_label)
    );
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + gap / 2.0 + gi as f64 * group_w;
        for (si, name) in series.iter().enumerate() {
            for b in c.bars.iter().filter(|b| b.group == *g && b.series == *name) {
                let x = gx + si as f64 * bar_w;
                let yy = y(b.value);
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                    bar_w - 1.0,
                    top + plot_h - yy,
                    COLORS[si % COLORS.len()],
                    escape(name),
                    escape(g),
                    b.value
                );
            }
        }
        let cx = gx + bar_w * series.len() as f64 / 2.0;
        let ly = top + plot_h + 12.0;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{ly:.1}" transform="rotate(45 {cx:.1} {ly:.1})">{}</text>"#,
            escape(g)
        );
    }
    if let Some((v, text)) = &c.reference {
        let yy = y(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#333" stroke-dasharray="6 4"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            right,
            right - 2.0,
            yy - 4.0,
            escape(text)
        );
    }
    for (si, name) in series.iter().enumerate() {
        let x = left + 10.0 + si as f64 * 120.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.0}" y="30" width="10" height="10" fill="{}"/><text x="{:.0}" y="39">{}</text>"#,
            COLORS[si % COLORS.len()],
            x + 14.0,
            escape(name)
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
    use super::{nice_ceiling, svg, Axis, Bar, Chart};

    #[test]
    fn one_bar_per_value_and_escaped_labels() {
        let c = Chart {
            title: "t & t".into(),
            y_label: "ops/s (log)".into(),
            log: true,
            bars: vec![
                Bar::new("meminfo 1t", "native", 70_000.0),
                Bar::new("meminfo 1t", "sysvisor-fs", 12_000.0),
                Bar::new("a<b 2t", "native", 0.0),
            ],
            reference: Some((1000.0, "target".into())),
        };
        let out = svg(&c);
        assert!(out.starts_with("<svg") && out.ends_with("</svg>\n"));
        assert_eq!(out.matches("<title>").count(), 3);
        assert!(out.contains("t &amp; t") && out.contains("a&lt;b 2t"));
        assert!(out.contains("stroke-dasharray") && out.contains(">target<"));
    }

    #[test]
    fn axes_cover_the_values() {
        let log = Axis::new(true, [12.0, 3400.0].into_iter());
        assert_eq!((log.lo, log.hi), (1.0, 4.0));
        assert_eq!(log.frac(10.0), 0.0);
        assert_eq!(log.frac(10_000.0), 1.0);
        let lin = Axis::new(false, [120.0, 430.0].into_iter());
        assert_eq!(lin.hi, 500.0);
        assert_eq!(lin.ticks().len(), 6);
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(nice_ceiling(5000.0), 5000.0);
    }
}
