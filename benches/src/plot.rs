//! `tandem-bench plot`: TTFT and TPOT percentiles against request rate (or
//! concurrency) from `sweep` JSON lines, one line per config and statistic,
//! as PNG or SVG (by the output's extension). Also prints the numbers, and
//! optionally the ratio of two configs (e.g. P/D ÷ colocated).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// Debian's `fonts-dejavu-core`: plotters draws text with ab_glyph from a
/// font file, so no fontconfig/freetype is needed to build or run.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XAxis {
    Rate,
    Concurrency,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON-lines files from `sweep` (a `serve --save-result` file works too).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output image; `.svg` gives SVG, anything else PNG.
    #[arg(long, default_value = "sweep.png")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "rate")]
    pub x: XAxis,
    /// Statistics to draw: mean, median, or pNN present in the results.
    #[arg(long, value_delimiter = ',', default_value = "median,p99")]
    pub stats: Vec<String>,
    /// Print `A ÷ B` of p99 TTFT and TPOT per x, e.g. `--ratio pd/colocated`.
    #[arg(long)]
    pub ratio: Option<String>,
    /// Only this request class of a mixed run (e.g. `short`).
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long, default_value = DEFAULT_FONT)]
    pub font: PathBuf,
    #[arg(long, default_value = "tandem-bench sweep")]
    pub title: String,
}

/// One run reduced to what the plot needs.
#[derive(Debug, Clone)]
pub struct Point {
    pub x: f64,
    pub json: Value,
}

impl Point {
    /// `stat` (mean, median, p99, …) of `metric` (ttft, tpot, …) in ms, over
    /// all requests or, with `class`, over that class of a mixed run.
    pub fn stat(&self, stat: &str, metric: &str, class: Option<&str>) -> Option<f64> {
        let src = match class {
            Some(c) => &self.json["by_class"][c],
            None => &self.json,
        };
        src[format!("{stat}_{metric}_ms")].as_f64()
    }
}

/// Runs grouped by label (the run's `label`, else the file's name).
pub type Series = BTreeMap<String, Vec<Point>>;

pub fn load(inputs: &[PathBuf], x: XAxis) -> anyhow::Result<Series> {
    let mut series = Series::new();
    for path in inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A `serve --save-result` file is one (pretty) JSON object; a sweep
        // file has one object per line.
        let docs: Vec<Value> = match serde_json::from_str::<Value>(&text) {
            Ok(doc @ Value::Object(_)) => vec![doc],
            _ => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l)
                        .with_context(|| format!("{} line {} is not JSON", path.display(), i + 1))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        for json in docs {
            let xv = match x {
                XAxis::Rate => json["request_rate"].as_f64(),
                XAxis::Concurrency => json["max_concurrency"].as_f64(),
            };
            let Some(xv) = xv else {
                eprintln!(
                    "skipping a run in {} without a finite {:?} (rate inf or no cap)",
                    path.display(),
                    x
                );
                continue;
            };
            let label = json["label"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| stem.clone());
            series.entry(label).or_default().push(Point { x: xv, json });
        }
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    if series.is_empty() {
        bail!("no plottable runs in {:?}", inputs);
    }
    Ok(series)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let series = load(&args.inputs, args.x)?;
    let class = args.class.as_deref();
    print!("{}", table(&series, class));
    if let Some(spec) = &args.ratio {
        print!("{}", ratio_table(&series, spec, class)?);
    }
    load_font(&args.font)?;
    let x_name = match args.x {
        XAxis::Rate => "request rate (req/s)",
        XAxis::Concurrency => "max concurrency",
    };
    let svg = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let size = (1200, 500);
    if svg {
        let root = SVGBackend::new(&args.out, size).into_drawing_area();
        draw(&root, &series, &args.stats, class, x_name, &args.title)?;
        root.present()?;
    } else {
        let root = BitMapBackend::new(&args.out, size).into_drawing_area();
        draw(&root, &series, &args.stats, class, x_name, &args.title)?;
        root.present()?;
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Register the TTF at `path` as plotters' sans-serif.
pub fn load_font(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read font {} (install fonts-dejavu-core or pass --font FILE.ttf)",
            path.display()
        )
    })?;
    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a TrueType font; pass --font FILE.ttf",
            path.display()
        )
    })
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &Series,
    stats: &[String],
    class: Option<&str>,
    x_name: &str,
    title: &str,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let panels = root.split_evenly((1, 2));
    for (panel, (metric, y_name)) in panels
        .iter()
        .zip([("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)")])
    {
        let lines: Vec<(String, Vec<(f64, f64)>)> = series
            .iter()
            .flat_map(|(label, points)| {
                stats.iter().map(move |stat| {
                    let pts = points
                        .iter()
                        .filter_map(|p| p.stat(stat, metric, class).map(|y| (p.x, y)))
                        .collect();
                    (format!("{label} {stat}"), pts)
                })
            })
            .filter(|(_, pts): &(String, Vec<(f64, f64)>)| !pts.is_empty())
            .collect();
        let all = lines.iter().flat_map(|(_, p)| p.iter());
        let (x_max, y_max) = all.fold((0.0f64, 0.0f64), |(xm, ym), &(x, y)| (xm.max(x), ym.max(y)));
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.05 + 1e-9, 0.0..y_max * 1.1 + 1e-9)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        chart
            .configure_mesh()
            .x_desc(x_name)
            .y_desc(y_name)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (i, (name, pts)) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(())
}

/// The numbers behind the plot, one row per run.
pub fn table(series: &Series, class: Option<&str>) -> String {
    let mut s = format!(
        "{:<14}{:>8}{:>6}{:>7}{:>10}{:>12}{:>12}{:>12}{:>12}\n",
        "config", "x", "done", "failed", "req/s", "p50 TTFT", "p99 TTFT", "p50 TPOT", "p99 TPOT"
    );
    for (label, points) in series {
        for p in points {
            let src = class.map_or(&p.json, |c| &p.json["by_class"][c]);
            let g = |k: &str| src[k].as_f64().unwrap_or(f64::NAN);
            let st = |stat: &str, m: &str| p.stat(stat, m, class).unwrap_or(f64::NAN);
            s.push_str(&format!(
                "{:<14}{:>8.2}{:>6}{:>7}{:>10.2}{:>12.1}{:>12.1}{:>12.1}{:>12.1}\n",
                label,
                p.x,
                g("completed"),
                g("failed"),
                p.json["request_throughput"].as_f64().unwrap_or(f64::NAN),
                st("median", "ttft"),
                st("p99", "ttft"),
                st("median", "tpot"),
                st("p99", "tpot"),
            ));
        }
    }
    s
}

/// `A/B`: p99 TTFT and TPOT of config A divided by B at each shared x.
pub fn ratio_table(series: &Series, spec: &str, class: Option<&str>) -> anyhow::Result<String> {
    let (a, b) = spec
        .split_once('/')
        .with_context(|| format!("--ratio `{spec}` must be LABEL_A/LABEL_B"))?;
    let find = |l: &str| {
        series.get(l).with_context(|| {
            format!(
                "no runs labelled `{l}`; labels: {:?}",
                series.keys().collect::<Vec<_>>()
            )
        })
    };
    let (pa, pb) = (find(a)?, find(b)?);
    let (h1, h2) = (format!("p99 TTFT {a}/{b}"), format!("p99 TPOT {a}/{b}"));
    let w = h1.len() + 2;
    let mut s = format!("{:>8}{h1:>w$}{h2:>w$}\n", "x");
    for p in pa {
        if let Some(q) = pb.iter().find(|q| (q.x - p.x).abs() < 1e-9) {
            let r = |m: &str| {
                p.stat("p99", m, class).unwrap_or(f64::NAN)
                    / q.stat("p99", m, class).unwrap_or(f64::NAN)
            };
            s.push_str(&format!(
                "{:>8.2}{:>w$.3}{:>w$.3}\n",
                p.x,
                r("ttft"),
                r("tpot")
            ));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
