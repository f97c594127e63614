//! The charts of the HTML report, drawn by plotters as SVG (text stays
//! SVG text, so no font is needed): one kind of line chart serves the
//! figures over time, the load and the latency distributions.

use plotters::prelude::*;

/// Client series are solid blue shades, server ones orange with a marker
/// at every scrape, the load grey.
pub const CLIENT: RGBColor = RGBColor(31, 119, 180);
pub const CLIENT_LIGHT: RGBColor = RGBColor(120, 170, 215);
pub const CLIENT_DARK: RGBColor = RGBColor(20, 60, 110);
pub const SERVER: RGBColor = RGBColor(230, 110, 20);
pub const LOAD: RGBColor = RGBColor(110, 110, 110);
pub const BAND: RGBColor = RGBColor(44, 160, 44);

const WIDTH: u32 = 460;
const HEIGHT: u32 = 250;

/// One line of a chart.
pub struct Line {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    /// A marker on every point: the server's samples.
    pub markers: bool,
}

/// The area between two curves sharing their x values: the latency an
/// agreeing server may show.
pub struct Band {
    pub label: String,
    pub lower: Vec<(f64, f64)>,
    pub upper: Vec<(f64, f64)>,
}

/// What a chart shows.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub lines: Vec<Line>,
    pub band: Option<Band>,
    /// Fixed y range (the CDF's 0..1); else from the data.
    pub y_max: Option<f64>,
}

/// The chart as an `<svg>` element; a chart with nothing to draw says so.
pub fn render(c: &Chart<'_>) -> String {
    let mut svg = String::new();
    let drawn = draw(c, &mut svg);
    match drawn {
        Ok(()) => svg,
        Err(e) => format!(
            "<p class=\"nodata\">{}: cannot draw ({})</p>",
            super::esc(c.title),
            super::esc(&e)
        ),
    }
}

fn extent(c: &Chart<'_>) -> (f64, f64, f64) {
    let all = c
        .lines
        .iter()
        .flat_map(|l| &l.points)
        .chain(c.band.iter().flat_map(|b| b.lower.iter().chain(&b.upper)));
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64);
    for &(x, y) in all {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        (0.0, 1.0, 1.0)
    } else {
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        (
            x0,
            x1,
            c.y_max.unwrap_or(if y1 > 0.0 { y1 * 1.1 } else { 1.0 }),
        )
    }
}

fn draw(c: &Chart<'_>, svg: &mut String) -> Result<(), String> {
    let (x0, x1, y1) = extent(c);
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    if let Some(b) = &c.band {
        let outline: Vec<(f64, f64)> = b
            .lower
            .iter()
            .copied()
            .chain(b.upper.iter().rev().copied())
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(outline, BAND.mix(0.25))))
            .map_err(|e| err(&e))?
            .label(b.label.as_str())
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], BAND.mix(0.25).filled())
            });
    }
    for l in &c.lines {
        let color = l.color;
        let series = LineSeries::new(l.points.iter().copied(), color.stroke_width(2));
        let series = if l.markers {
            series.point_size(3)
        } else {
            series
        };
        chart
            .draw_series(series)
            .map_err(|e| err(&e))?
            .label(l.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 11))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// An axis label: few digits, no trailing zeros.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_band_and_legend_as_svg() {
        let svg = render(&Chart {
            title: "latency",
            x_desc: "ms",
            y_desc: "fraction",
            lines: vec![Line {
                label: "client".into(),
                color: CLIENT,
                points: vec![(0.0, 0.0), (10.0, 0.5), (20.0, 1.0)],
                markers: true,
            }],
            band: Some(Band {
                label: "allowed".into(),
                lower: vec![(0.0, 0.0), (20.0, 1.0)],
                upper: vec![(0.0, 0.2), (20.0, 1.0)],
            }),
            y_max: Some(1.0),
        });
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(svg.contains("<polygon"), "{svg}");
        // plotters writes text content on a line of its own.
        assert!(
            svg.contains(">\nclient\n</text>") && svg.contains(">\nallowed\n</text>"),
            "{svg}"
        );
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(2.50), "2.5");
        assert_eq!(short(0.125), "0.125");
        assert_eq!(short(12_000.0), "12k");
    }
}
