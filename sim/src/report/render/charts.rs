//! SVG charts with plotters. Text is laid out with DejaVu Sans, bundled
//! into the binary (plotters' `ab_glyph` backend), so charts draw the same
//! on a machine without system fonts; the SVG names the family
//! `sans-serif` for whatever draws it.
//!
//! Two shapes: a line chart over a swept axis (one series per variant and
//! mode, log scales where the values span more than a factor of 30) and,
//! for a report of one point, grouped bars per variant. Notes under a
//! chart say what a modelled figure assumes and where its constants come
//! from.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::Once;

const WIDTH: u32 = 860;
const CHART_HEIGHT: u32 = 460;
const NOTE_LINE: u32 = 18;
/// Legend entries per line under the chart.
const LEGEND_PER_LINE: usize = 4;
const FONT: &str = "sans-serif";

/// One named line or group of bars.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Palette index: series of one variant share a colour.
    pub color: usize,
    /// Drawn dashed (a variant's second figure, e.g. the maximum).
    pub dashed: bool,
}

/// What to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    /// Axis descriptions, units included.
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// Category names for a bar chart (x = category index); `None`: a
    /// line chart over numeric x.
    pub categories: Option<Vec<String>>,
    /// Lines printed under the chart.
    pub notes: Vec<String>,
    /// A fixed y range (e.g. 0–100 for shares); `None`: from the data.
    pub y_range: Option<(f64, f64)>,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err()
        {
            panic!("the bundled DejaVu Sans is a valid font");
        }
    });
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The chart as SVG text.
pub fn svg(c: &Chart) -> Result<String, String> {
    register_font();
    let mut out = String::new();
    let legend_lines = c.series.len().div_ceil(LEGEND_PER_LINE) as u32;
    let height = CHART_HEIGHT + NOTE_LINE * (legend_lines + c.notes.len() as u32) + 12;
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        let r: DrawResult = (|| {
            root.fill(&WHITE)?;
            let (top, bottom) = root.split_vertically(CHART_HEIGHT);
            match &c.categories {
                Some(cats) => bars(&top, c, cats)?,
                None => lines(&top, c)?,
            }
            legend(&bottom, c)?;
            for (i, note) in c.notes.iter().enumerate() {
                let line = legend_lines as i32 + i as i32;
                bottom.draw(&Text::new(
                    note.clone(),
                    (12, 8 + NOTE_LINE as i32 * line),
                    (FONT, 13).into_font().color(&RGBColor(60, 60, 60)),
                ))?;
            }
            root.present()?;
            Ok(())
        })();
        r.map_err(|e| format!("drawing {:?}: {e}", c.title))?;
    }
    Ok(out)
}

/// Swatches and names under the plot, so the legend never hides data.
fn legend(area: &DrawingArea<SVGBackend, Shift>, c: &Chart) -> DrawResult {
    let column = (WIDTH as i32 - 24) / LEGEND_PER_LINE as i32;
    for (i, s) in c.series.iter().enumerate() {
        let x = 12 + column * (i % LEGEND_PER_LINE) as i32;
        let y = 8 + NOTE_LINE as i32 * (i / LEGEND_PER_LINE) as i32 + 7;
        let col = color(s.color);
        if c.categories.is_some() {
            area.draw(&Rectangle::new([(x, y - 5), (x + 16, y + 5)], col.filled()))?;
        } else if s.dashed {
            for k in 0..3 {
                let x0 = x + k * 8;
                area.draw(&PathElement::new(
                    vec![(x0, y), (x0 + 5, y)],
                    col.stroke_width(2),
                ))?;
            }
        } else {
            area.draw(&PathElement::new(
                vec![(x, y), (x + 22, y)],
                col.stroke_width(2),
            ))?;
        }
        area.draw(&Text::new(
            s.name.clone(),
            (x + 28, y - 7),
            (FONT, 13).into_font(),
        ))?;
    }
    Ok(())
}

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
        RGBColor(140, 86, 75),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

/// Whether values spanning `lo..hi` want a log axis.
fn wants_log(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo > 30.0
}

/// A range with some air, never empty.
fn padded(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        (lo / 1.3, hi * 1.3)
    } else if hi > lo {
        let lo = if lo >= 0.0 { 0.0 } else { lo };
        (lo, hi + (hi - lo) * 0.08)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// A readable number: 1200 → 1.2k, 3_000_000 → 3M, 0.0042 → 0.0042.
pub fn human(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.01 || x == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1e}")
    };
    let s = if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{unit}")
}

fn lines(area: &DrawingArea<SVGBackend, Shift>, c: &Chart) -> DrawResult {
    let (x0, x1) = bounds(c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = bounds(c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    if !x0.is_finite() || !y0.is_finite() {
        area.draw(&Text::new("no data", (40, 40), (FONT, 16)))?;
        return Ok(());
    }
    let (lx, ly) = (wants_log(x0, x1), c.y_range.is_none() && wants_log(y0, y1));
    let (x0, x1) = padded(x0, x1, lx);
    let (y0, y1) = c.y_range.unwrap_or_else(|| padded(y0, y1, ly));
    match (lx, ly) {
        (true, true) => line_plot(area, c, (x0..x1).log_scale(), (y0..y1).log_scale()),
        (true, false) => line_plot(area, c, (x0..x1).log_scale(), y0..y1),
        (false, true) => line_plot(area, c, x0..x1, (y0..y1).log_scale()),
        (false, false) => line_plot(area, c, x0..x1, y0..y1),
    }
}

fn line_plot<X, Y>(area: &DrawingArea<SVGBackend, Shift>, c: &Chart, x: X, y: Y) -> DrawResult
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, (FONT, 19))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(76)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_desc)
        .y_desc(&c.y_desc)
        .x_label_formatter(&|v| human(*v))
        .y_label_formatter(&|v| human(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for s in &c.series {
        let col = color(s.color);
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(
                s.points.iter().copied(),
                6,
                4,
                col.stroke_width(2),
            ))?;
            chart.draw_series(
                s.points
                    .iter()
                    .map(move |p| TriangleMarker::new(*p, 4, col.filled())),
            )?;
        } else {
            chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                col.stroke_width(2),
            ))?;
            chart.draw_series(
                s.points
                    .iter()
                    .map(move |p| Circle::new(*p, 3, col.filled())),
            )?;
        }
    }
    Ok(())
}

fn bars(area: &DrawingArea<SVGBackend, Shift>, c: &Chart, cats: &[String]) -> DrawResult {
    let (_, y1) = bounds(c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let y1 = if y1.is_finite() && y1 > 0.0 {
        y1 * 1.15
    } else {
        1.0
    };
    let n = cats.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, (FONT, 19))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(76)
        .build_cartesian_2d(0.0..n, 0.0..y1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc(&c.x_desc)
        .y_desc(&c.y_desc)
        .y_label_formatter(&|v| human(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let k = c.series.len().max(1) as f64;
    let width = 0.8 / k;
    for (i, s) in c.series.iter().enumerate() {
        let col = color(s.color);
        chart.draw_series(s.points.iter().map(move |&(cat, v)| {
            let left = cat + 0.1 + width * i as f64;
            Rectangle::new([(left, 0.0), (left + width * 0.92, v)], col.filled())
        }))?;
        chart.draw_series(s.points.iter().map(move |&(cat, v)| {
            let mid = cat + 0.1 + width * (i as f64 + 0.46);
            Text::new(
                human(v),
                (mid, v),
                TextStyle::from((FONT, 12).into_font()).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                ),
            )
        }))?;
    }
    for (i, name) in cats.iter().enumerate() {
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (i as f64 + 0.5, 0.0),
            TextStyle::from((FONT, 14).into_font()).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            )),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(human(1200.0), "1.2k");
        assert_eq!(human(50_000.0), "50k");
        assert_eq!(human(3_000_000.0), "3M");
        assert_eq!(human(12.0), "12");
        assert_eq!(human(0.25), "0.25");
    }

    #[test]
    fn a_chart_draws_with_the_bundled_font() {
        let c = Chart {
            title: "rules".into(),
            x_desc: "Services".into(),
            y_desc: "rules per node".into(),
            series: vec![Series {
                name: "cluster".into(),
                points: vec![(100.0, 500.0), (10_000.0, 50_000.0)],
                color: 0,
                dashed: false,
            }],
            categories: None,
            notes: vec!["a note".into()],
            y_range: None,
        };
        let s = svg(&c).unwrap();
        assert!(s.starts_with("<svg"));
        assert!(s.contains("rules per node") && s.contains("a note"));
        let b = svg(&Chart {
            categories: Some(vec!["a".into()]),
            series: vec![Series {
                name: "x".into(),
                points: vec![(0.0, 3.0)],
                color: 1,
                dashed: false,
            }],
            ..c
        })
        .unwrap();
        assert!(b.contains("\na\n") || b.contains(">a<"), "{b}");
    }
}
