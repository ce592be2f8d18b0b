use super::*;

fn done(ttft: f64, latency: f64, tokens: usize) -> RequestOutput {
    RequestOutput {
        success: true,
        ttft,
        latency,
        output_tokens: tokens,
        prompt_tokens: 10,
        itl: vec![(latency - ttft) / (tokens.max(2) - 1) as f64; tokens.saturating_sub(1)],
        ..Default::default()
    }
}

#[test]
fn percentiles_interpolate_like_numpy() {
    let v = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(percentile(&v, 50.0), 2.5);
    assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-12);
    assert_eq!(percentile(&v, 0.0), 1.0);
    assert_eq!(percentile(&v, 100.0), 4.0);
    assert_eq!(percentile(&[], 99.0), 0.0);
    assert_eq!(percentile(&[7.0], 90.0), 7.0);
}

#[test]
fn summary_reports_milliseconds_and_population_std() {
    let s = summarize(&[0.1, 0.3], &[90.0]);
    assert!((s.mean - 200.0).abs() < 1e-9);
    assert!((s.median - 200.0).abs() < 1e-9);
    assert!((s.std - 100.0).abs() < 1e-9);
    assert!((s.percentiles[0].1 - 280.0).abs() < 1e-9);
}

#[test]
fn goodput_counts_requests_meeting_every_slo() {
    let outputs = vec![
        done(0.1, 1.1, 11), // tpot 100 ms
        done(0.5, 1.0, 11), // ttft 500 ms, tpot 50 ms
        done(0.1, 0.6, 11), // tpot 50 ms
        RequestOutput {
            error: "HTTP 500".into(),
            ..Default::default()
        },
    ];
    let slo = Slo::parse(&["ttft:200".into(), "tpot:60".into()]).unwrap();
    let m = compute(&outputs, 2.0, &slo, &[99.0]);
    assert_eq!(m.completed, 3);
    assert_eq!(m.failed, 1);
    assert_eq!(m.request_goodput, Some(0.5)); // only the third, over 2 s
    assert_eq!(m.total_output, 33);
    assert!((m.output_throughput - 16.5).abs() < 1e-9);
    assert!((m.total_token_throughput - 31.5).abs() < 1e-9);
    assert!((m.tpot.mean - (100.0 + 50.0 + 50.0) / 3.0).abs() < 1e-9);
    let none = compute(&outputs, 2.0, &Slo::default(), &[99.0]);
    assert_eq!(none.request_goodput, None);
}

#[test]
fn slo_parsing_names_what_is_wrong() {
    assert_eq!(
        Slo::parse(&["e2e:5000".into()]).unwrap().e2el_ms,
        Some(5000.0)
    );
    assert!(Slo::parse(&["ttft".into()]).unwrap_err().contains("KEY:MS"));
    assert!(Slo::parse(&["ttft:x".into()])
        .unwrap_err()
        .contains("positive"));
    assert!(Slo::parse(&["itl:5".into()])
        .unwrap_err()
        .contains("not one of"));
}

#[test]
fn single_token_requests_have_no_tpot_but_pass_tpot_slo() {
    let one = done(0.2, 0.2, 1);
    assert_eq!(tpot(&one), 0.0);
    let m = compute(
        &[one],
        1.0,
        &Slo::parse(&["tpot:1".into()]).unwrap(),
        &[99.0],
    );
    assert_eq!(m.tpot.mean, 0.0);
    assert_eq!(m.request_goodput, Some(1.0));
}

#[test]
fn peak_concurrency_uses_half_open_intervals() {
    let mut a = done(0.1, 1.0, 2);
    let mut b = done(0.1, 1.0, 2);
    a.start_time = 0.0;
    b.start_time = 1.0; // starts exactly when a ends
    let m = compute(&[a.clone(), b], 2.0, &Slo::default(), &[]);
    assert_eq!(m.max_concurrent_requests, 1);
    let mut c = a.clone();
    c.start_time = 0.5;
    let m = compute(&[a, c], 2.0, &Slo::default(), &[]);
    assert_eq!(m.max_concurrent_requests, 2);
}
