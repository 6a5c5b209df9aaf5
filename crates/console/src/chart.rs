//! Server-rendered SVG line charts for metric time series: a pure function from points to
//! markup, so pages need no charting library and the output is unit-testable.
//!
//! The chart scales to its container (`viewBox` + `width=100%`), carries an accessible name
//! (`role="img"`, `<title>`) stating the latest value, and draws nice round y ticks.

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(epoch ms, value)` points, in any order (they are sorted).
    pub points: Vec<(i64, f64)>,
}

/// A series with its index (colour) and sorted, finite points.
type Line<'a> = (usize, &'a Series, Vec<(i64, f64)>);

/// Colours of successive series (WCAG AA against white).
const COLOURS: [&str; 4] = ["#1d4ed8", "#b45309", "#047857", "#9d174d"];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Escapes text for SVG/XML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" step (1, 2, 2.5 or 5 × 10^n) giving about `target` intervals over `span`.
pub fn nice_step(span: f64, target: u32) -> f64 {
    if !span.is_finite() || span <= 0.0 {
        return 1.0;
    }
    let raw = span / f64::from(target.max(1));
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 2.5 {
        2.5
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Formats a value compactly: 1234 → "1.2k", 0.5 → "0.5", 2500000 → "2.5M".
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.fract() == 0.0 || scaled.abs() >= 100.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// `HH:MM` (UTC) of an epoch-ms time.
fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}", day / 3600, (day % 3600) / 60)
}

/// Renders a line chart. `title` names the metric (used for the accessible name).
pub fn line_chart(title: &str, series: &[Series]) -> String {
    let mut lines: Vec<Line<'_>> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut pts: Vec<(i64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(_, v)| v.is_finite())
                .collect();
            pts.sort_by_key(|(t, _)| *t);
            (i, s, pts)
        })
        .collect();
    lines.retain(|(_, _, pts)| !pts.is_empty());
    let title_e = escape(title);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    if lines.is_empty() {
        let _ = write!(
            svg,
            r##"<title>{title_e}: no data yet</title><rect x="0.5" y="0.5" width="{w}" height="{h}" rx="6" fill="#f8fafc" stroke="#cbd5e1"/><text x="{cx}" y="{cy}" text-anchor="middle" class="chart-empty">No samples yet</text></svg>"##,
            w = WIDTH - 1.0,
            h = HEIGHT - 1.0,
            cx = WIDTH / 2.0,
            cy = HEIGHT / 2.0
        );
        return svg;
    }
    let t_min = lines.iter().map(|(_, _, p)| p[0].0).min().unwrap_or(0);
    let t_max = lines
        .iter()
        .map(|(_, _, p)| p[p.len() - 1].0)
        .max()
        .unwrap_or(0);
    let v_min_data = lines
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, v)| *v))
        .fold(f64::INFINITY, f64::min);
    let v_max_data = lines
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, v)| *v))
        .fold(f64::NEG_INFINITY, f64::max);
    // Counters and gauges are mostly non-negative: anchor at zero unless data goes below.
    let lo_raw = v_min_data.min(0.0);
    let hi_raw = if v_max_data > lo_raw {
        v_max_data
    } else {
        lo_raw + 1.0
    };
    let step = nice_step(hi_raw - lo_raw, 4);
    let lo = (lo_raw / step).floor() * step;
    let hi = (hi_raw / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: i64| {
        if t_max == t_min {
            LEFT + plot_w / 2.0
        } else {
            LEFT + (t - t_min) as f64 / (t_max - t_min) as f64 * plot_w
        }
    };
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * plot_h;

    let latest: Vec<String> = lines
        .iter()
        .map(|(_, s, p)| format!("{} {}", s.label, compact(p[p.len() - 1].1)))
        .collect();
    let _ = write!(
        svg,
        "<title>{title_e}, {} to {} UTC; latest: {}</title>",
        clock(t_min),
        clock(t_max),
        escape(&latest.join(", "))
    );
    // Grid and y labels.
    let mut tick = lo;
    let mut guard = 0;
    while tick <= hi + step / 2.0 && guard < 20 {
        let ty = y(tick);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{ty:.1}" y2="{ty:.1}" stroke="#e2e8f0"/><text x="{lx}" y="{ly:.1}" text-anchor="end" class="chart-label">{label}</text>"##,
            x2 = WIDTH - RIGHT,
            lx = LEFT - 6.0,
            ly = ty + 4.0,
            label = escape(&compact(tick))
        );
        tick += step;
        guard += 1;
    }
    // X labels: start and end.
    let base = HEIGHT - 8.0;
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{base}" class="chart-label">{}</text><text x="{xe}" y="{base}" text-anchor="end" class="chart-label">{}</text>"#,
        clock(t_min),
        clock(t_max),
        xe = WIDTH - RIGHT
    );
    for (i, _s, pts) in &lines {
        let colour = COLOURS[i % COLOURS.len()];
        if pts.len() == 1 {
            let (t, v) = pts[0];
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(t),
                y(v)
            );
        } else {
            let coords: Vec<String> = pts
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" points="{}"/>"#,
                coords.join(" ")
            );
        }
    }
    if lines.len() > 1 {
        let mut lx = LEFT + 8.0;
        for (i, s, _) in &lines {
            let colour = COLOURS[i % COLOURS.len()];
            let _ = write!(
                svg,
                r#"<rect x="{lx:.1}" y="{TOP}" width="10" height="10" fill="{colour}"/><text x="{tx:.1}" y="{ty}" class="chart-label">{}</text>"#,
                escape(&s.label),
                tx = lx + 14.0,
                ty = TOP + 9.0
            );
            lx += 24.0 + 7.0 * s.label.chars().count() as f64;
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(label: &str, points: &[(i64, f64)]) -> Series {
        Series {
            label: label.into(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn empty_series_render_a_placeholder() {
        let svg = line_chart("cache hits", &[]);
        assert!(svg.contains("No samples yet"));
        assert!(svg.contains("<title>cache hits: no data yet</title>"));
        let svg = line_chart("x", &[s("a", &[])]);
        assert!(svg.contains("No samples yet"));
    }

    #[test]
    fn points_are_scaled_into_the_plot_area_in_time_order() {
        let svg = line_chart(
            "connections",
            &[s("conns", &[(120_000, 10.0), (0, 0.0), (60_000, 5.0)])],
        );
        // Sorted by time: first point at the left edge, value 0 at the bottom of the plot.
        assert!(svg.contains(r#"points="56.0,172.0 "#), "{svg}");
        // Last point at the right edge, value 10 at the top.
        assert!(svg.contains(" 628.0,12.0\""), "{svg}");
        assert!(
            svg.contains("00:00 to 00:02 UTC; latest: conns 10"),
            "{svg}"
        );
    }

    #[test]
    fn single_point_is_a_dot_and_text_is_escaped() {
        let svg = line_chart("a<b & \"c\"", &[s("<x>", &[(5, 3.0)])]);
        assert!(svg.contains("<circle"));
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(svg.contains("&lt;x&gt; 3"));
        assert!(!svg.contains("<x>"));
    }

    #[test]
    fn several_series_get_a_legend_and_distinct_colours() {
        let svg = line_chart(
            "c",
            &[
                s("hits", &[(0, 1.0), (1, 2.0)]),
                s("misses", &[(0, 2.0), (1, 1.0)]),
            ],
        );
        assert!(svg.contains(">hits</text>") && svg.contains(">misses</text>"));
        assert!(svg.contains(COLOURS[0]) && svg.contains(COLOURS[1]));
    }

    #[test]
    fn nice_steps_and_compact_numbers() {
        assert_eq!(nice_step(10.0, 4), 2.5);
        assert_eq!(nice_step(100.0, 4), 25.0);
        assert_eq!(nice_step(7.0, 4), 2.0);
        assert_eq!(nice_step(0.0, 4), 1.0);
        assert_eq!(compact(1234.0), "1234");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(2_500_000.0), "2.5M");
        assert_eq!(compact(0.5), "0.5");
        assert_eq!(compact(0.0), "0");
    }

    proptest! {
        #[test]
        fn every_coordinate_stays_inside_the_view_box(
            pts in proptest::collection::vec((0i64..10_000_000, -1e9f64..1e9), 1..40)
        ) {
            let svg = line_chart("p", &[s("v", &pts)]);
            for cap in svg.split("points=\"").skip(1) {
                let list = &cap[..cap.find('"').unwrap_or(0)];
                for pair in list.split(' ') {
                    let (px, py) = pair.split_once(',').expect("x,y");
                    let px: f64 = px.parse().expect("x");
                    let py: f64 = py.parse().expect("y");
                    prop_assert!((0.0..=WIDTH).contains(&px), "x {px}");
                    prop_assert!((0.0..=HEIGHT).contains(&py), "y {py}");
                }
            }
            prop_assert!(svg.ends_with("</svg>"));
            prop_assert_eq!(line_chart("p", &[s("v", &pts)]), svg);
        }
    }
}
