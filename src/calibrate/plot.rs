//! The ROC plot of a calibration run: one panel per calibrated check, detection rate
//! against false-positive rate (log scale) for every cheat, with the target rate marked.
//!
//! Text needs a TrueType font, read at run time (`PROCTOR_FONT`, else DejaVu Sans or
//! Liberation Sans where the system has them); without one the plot is drawn without
//! text and the caller is told so.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;

use super::CheckReport;

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a sans-serif font with plotters once; whether one was found.
fn font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let candidates = std::env::var("PROCTOR_FONT")
            .ok()
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws `reports` side by side into a PNG at `path`. Returns whether text was drawn.
pub fn roc_png(path: &Path, reports: &[&CheckReport]) -> anyhow::Result<bool> {
    let (w, h) = (720 * reports.len().max(1) as u32, 560);
    let text = font();
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let panels = root.split_evenly((1, reports.len().max(1)));
        for (panel, report) in panels.iter().zip(reports) {
            draw_panel(panel, report, text)?;
        }
        root.present().map_err(draw_err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("plot buffer size")?;
    img.save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(text)
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the ROC plot: {e:?}")
}

fn draw_panel(
    panel: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    report: &CheckReport,
    text: bool,
) -> anyhow::Result<()> {
    let honest = report.honest().pairs.max(1) as f64;
    let x_min = (0.5 / honest).min(report.target_fpr / 10.0);
    let mut builder = ChartBuilder::on(panel);
    builder.margin(16);
    if text {
        builder
            .caption(
                format!("{} ({} honest pairs)", report.check, report.honest().pairs),
                ("sans-serif", 22),
            )
            .x_label_area_size(44)
            .y_label_area_size(56);
    }
    let mut chart = builder
        .build_cartesian_2d((x_min..1.0f64).log_scale(), 0.0f64..1.02)
        .map_err(draw_err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("false-positive rate (0 drawn at the left edge)")
            .y_desc("detection rate")
            .label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(draw_err)?;
    for (i, curve) in report.roc.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .map(|&(f, d)| (f.max(x_min), d))
            .collect();
        let series = chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_err)?;
        if text {
            series.label(curve.cheat.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    let target = report.target_fpr;
    chart
        .draw_series(LineSeries::new(
            vec![(target, 0.0), (target, 1.02)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(draw_err)?;
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}
