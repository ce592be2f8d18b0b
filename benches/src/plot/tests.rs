use super::*;
use serde_json::json;

fn write_runs(dir: &Path) -> PathBuf {
    let path = dir.join("runs.jsonl");
    let mut text = String::new();
    for (label, scale) in [("pd", 1.0), ("colocated", 2.0)] {
        for rate in [1.0, 2.0, 4.0] {
            let line = json!({"label": label, "request_rate": rate, "completed": 10, "failed": 0,
                "request_throughput": rate, "median_ttft_ms": 100.0 * rate, "p99_ttft_ms": 200.0 * rate,
                "median_tpot_ms": 10.0 * scale, "p99_tpot_ms": 20.0 * scale * rate,
                "by_class": {"short": {"p99_tpot_ms": 5.0 * scale, "p99_ttft_ms": 50.0}}});
            text.push_str(&format!("{line}\n"));
        }
    }
    text.push_str(&format!(
        "{}\n",
        json!({"label": "pd", "request_rate": null, "p99_tpot_ms": 1.0})
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn loads_sweep_lines_grouped_by_label_and_skips_infinite_rate() {
    let dir = tempfile::tempdir().unwrap();
    let series = load(&[write_runs(dir.path())], XAxis::Rate).unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(
        series["pd"].iter().map(|p| p.x).collect::<Vec<_>>(),
        vec![1.0, 2.0, 4.0]
    );
    let r = ratio_table(&series, "pd/colocated", None).unwrap();
    let last = r.lines().last().unwrap();
    assert!(last.contains("1.000") && last.contains("0.500"), "{r}");
    let short = ratio_table(&series, "pd/colocated", Some("short")).unwrap();
    assert!(
        short
            .lines()
            .all(|l| l.contains("x") || l.contains("0.500")),
        "{short}"
    );
    assert!(ratio_table(&series, "pd/nope", None)
        .unwrap_err()
        .to_string()
        .contains("no runs labelled"));
    assert!(table(&series, None).contains("colocated"));
}

#[test]
fn renders_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let runs = write_runs(dir.path());
    for name in ["plot.png", "plot.svg"] {
        let out = dir.path().join(name);
        run(Args {
            inputs: vec![runs.clone()],
            out: out.clone(),
            x: XAxis::Rate,
            stats: vec!["median".into(), "p99".into()],
            ratio: None,
            class: None,
            font: DEFAULT_FONT.into(),
            title: "test".into(),
        })
        .unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.len() > 1000, "{name} is {} bytes", bytes.len());
    }
    let svg = std::fs::read_to_string(dir.path().join("plot.svg")).unwrap();
    assert!(svg.contains("colocated p99") && svg.contains("TPOT (ms)"));
    let png = std::fs::read(dir.path().join("plot.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}
