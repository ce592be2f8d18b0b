//! The sampler's public behaviour: greedy, penalties through the request
//! state, seeds, batch independence and logprobs.

use tandem_engine::sampler::{
    sample_batch, sample_one, SampleInput, SampledToken, SamplingParams, SamplingState,
};

/// A request as the engine keeps it between steps.
struct Request {
    params: SamplingParams,
    state: SamplingState,
    prompt: Vec<u32>,
    output: Vec<u32>,
}

impl Request {
    fn new(params: SamplingParams, fallback_seed: u64) -> Self {
        let state = SamplingState::new(&params, fallback_seed);
        Self {
            params,
            state,
            prompt: vec![1, 2, 3],
            output: Vec::new(),
        }
    }

    fn input(&mut self) -> SampleInput<'_> {
        SampleInput {
            params: &self.params,
            state: &mut self.state,
            prompt_tokens: &self.prompt,
            output_tokens: &self.output,
            guide: None,
        }
    }

    fn step(&mut self, logits: &[f32]) -> SampledToken {
        let sampled = sample_one(logits, &mut self.input());
        self.accept(sampled.token);
        sampled
    }

    fn accept(&mut self, token: u32) {
        self.output.push(token);
        self.state.record_output(token);
    }
}

/// A deterministic pseudo-random row, different for each `salt`.
fn row(vocab: usize, salt: u32) -> Vec<f32> {
    (0..vocab as u32)
        .map(|i| {
            let h = (i ^ salt.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761) >> 16;
            (h % 1000) as f32 / 250.0
        })
        .collect()
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        seed: Some(seed),
        ..Default::default()
    }
}

/// Runs one request alone for `steps` steps on rows `row(vocab, step)`.
fn run_alone(params: SamplingParams, fallback_seed: u64, steps: u32) -> Vec<u32> {
    let mut req = Request::new(params, fallback_seed);
    (0..steps).map(|s| req.step(&row(500, s)).token).collect()
}

#[test]
fn greedy_takes_the_argmax_lowest_id_on_ties() {
    let mut req = Request::new(SamplingParams::greedy(), 0);
    assert_eq!(req.step(&[0.1, 3.0, -1.0, 3.0]).token, 1);
    assert_eq!(req.step(&[f32::NEG_INFINITY, f32::NAN, 0.5]).token, 2);
}

#[test]
fn greedy_draws_nothing_from_the_rng() {
    let mut a = Request::new(seeded(5), 0);
    let mut b = Request::new(seeded(5), 0);
    let greedy = SamplingParams::greedy();
    for _ in 0..3 {
        sample_one(
            &row(500, 0),
            &mut SampleInput {
                params: &greedy,
                ..a.input()
            },
        );
    }
    let (ra, rb) = (a.step(&row(500, 1)), b.step(&row(500, 1)));
    assert_eq!(ra.token, rb.token);
}

#[test]
fn frequency_penalty_reads_the_recorded_outputs() {
    let params = SamplingParams {
        frequency_penalty: 0.3,
        ..SamplingParams::greedy()
    };
    let mut req = Request::new(params, 0);
    let logits = [1.0, 0.8, 0.0];
    // 0 wins, drops to 0.7 and loses to 1, which drops to 0.5 ...
    let tokens: Vec<u32> = (0..4).map(|_| req.step(&logits).token).collect();
    assert_eq!(tokens, vec![0, 1, 0, 1]);
}

#[test]
fn presence_penalty_applies_once_per_distinct_output_token() {
    let params = SamplingParams {
        presence_penalty: 0.3,
        ..SamplingParams::greedy()
    };
    let mut req = Request::new(params, 0);
    let logits = [1.0, 0.8, 0.0];
    let tokens: Vec<u32> = (0..4).map(|_| req.step(&logits).token).collect();
    assert_eq!(tokens, vec![0, 1, 0, 0]);
}

#[test]
fn repetition_penalty_covers_the_prompt() {
    let params = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    };
    let mut req = Request::new(params, 0);
    req.prompt = vec![0];
    assert_eq!(req.step(&[2.0, 1.5]).token, 1);
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let a = run_alone(seeded(42), 0, 40);
    assert_eq!(
        a,
        run_alone(seeded(42), 999, 40),
        "the request seed beats the fallback"
    );
    assert_ne!(a, run_alone(seeded(43), 0, 40));
}

#[test]
fn unseeded_requests_use_the_fallback_seed() {
    let a = run_alone(SamplingParams::default(), 7, 40);
    assert_eq!(a, run_alone(SamplingParams::default(), 7, 40));
    assert_ne!(a, run_alone(SamplingParams::default(), 8, 40));
}

#[test]
fn a_row_does_not_depend_on_its_batch() {
    let vocab = 500;
    let mixes = [
        SamplingParams {
            seed: Some(1),
            ..Default::default()
        },
        SamplingParams {
            top_p: 0.9,
            temperature: 1.3,
            seed: Some(2),
            ..Default::default()
        },
        SamplingParams {
            top_k: Some(20),
            presence_penalty: 0.5,
            ..Default::default()
        },
        SamplingParams {
            repetition_penalty: 1.3,
            ..SamplingParams::greedy()
        },
        SamplingParams {
            min_p: 0.1,
            frequency_penalty: 1.0,
            logprobs: Some(3),
            ..Default::default()
        },
    ];
    let steps = 6;
    let alone: Vec<Vec<u32>> = mixes
        .iter()
        .enumerate()
        .map(|(i, p)| run_alone(p.clone(), i as u64, steps))
        .collect();

    // Batched in reverse order, each row still sees its own `row(vocab, step)`.
    let mut reqs: Vec<Request> = mixes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, p)| Request::new(p.clone(), i as u64))
        .collect();
    let mut batched = vec![Vec::new(); mixes.len()];
    for s in 0..steps {
        let logits: Vec<f32> = (0..reqs.len()).flat_map(|_| row(vocab, s)).collect();
        let mut inputs: Vec<SampleInput<'_>> = reqs.iter_mut().map(Request::input).collect();
        let out = sample_batch(&logits, vocab, &mut inputs);
        drop(inputs);
        for (j, (req, sampled)) in reqs.iter_mut().zip(out).enumerate() {
            req.accept(sampled.token);
            batched[mixes.len() - 1 - j].push(sampled.token);
        }
    }
    assert_eq!(alone, batched);
}

#[test]
fn logprobs_are_the_raw_log_softmax() {
    let logits = row(16, 3);
    let params = SamplingParams {
        temperature: 0.5,
        top_k: Some(3),
        repetition_penalty: 1.5,
        logprobs: Some(16),
        seed: Some(3),
        ..Default::default()
    };
    let mut req = Request::new(params, 0);
    let sampled = req.step(&logits);
    let top = &sampled.top_logprobs;
    assert_eq!(top.len(), 16);
    let mass: f32 = top.iter().map(|&(_, lp)| lp.exp()).sum();
    assert!((mass - 1.0).abs() < 1e-5, "mass {mass}");
    // Raw: differences of logprobs are differences of raw logits.
    for &(id, lp) in top {
        assert!(((lp - top[0].1) - (logits[id as usize] - logits[top[0].0 as usize])).abs() < 1e-5);
    }
    for pair in top.windows(2) {
        let ((a, la), (b, lb)) = (pair[0], pair[1]);
        assert!(
            la > lb || (la == lb && a < b),
            "not descending by logprob then id: {pair:?}"
        );
    }
    let listed = top.iter().find(|&&(id, _)| id == sampled.token).unwrap();
    assert_eq!(listed.1, sampled.logprob);
}

#[test]
fn top_logprobs_only_when_asked() {
    let logits = [0.0, 1.0, 2.0];
    let mut none = Request::new(SamplingParams::greedy(), 0);
    let sampled = none.step(&logits);
    assert!(sampled.top_logprobs.is_empty());
    assert!(sampled.logprob < 0.0);

    let params = SamplingParams {
        logprobs: Some(2),
        ..SamplingParams::greedy()
    };
    let sampled = Request::new(params, 0).step(&logits);
    let ids: Vec<u32> = sampled.top_logprobs.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, vec![2, 1]);
}

#[test]
#[should_panic(expected = "expected 2 rows of 3")]
fn batch_rejects_a_mis_sized_buffer() {
    let mut req = Request::new(SamplingParams::default(), 0);
    let mut req2 = Request::new(SamplingParams::default(), 0);
    sample_batch(&[0.0; 5], 3, &mut [req.input(), req2.input()]);
}

#[test]
fn a_resumed_request_continues_as_if_never_moved() {
    // Prefill samples the first tokens, decode rebuilds the state from them.
    let params = SamplingParams {
        top_p: 0.95,
        frequency_penalty: 0.2,
        seed: Some(77),
        ..Default::default()
    };
    let whole = run_alone(params.clone(), 0, 12);
    let mut moved = Request::new(params.clone(), 0);
    moved.output = whole[..5].to_vec();
    moved.state = SamplingState::resume(&params, 0, &moved.output);
    let rest: Vec<u32> = (5..12).map(|s| moved.step(&row(500, s)).token).collect();
    assert_eq!(rest, whole[5..]);
}

#[test]
fn an_empty_batch_samples_nothing() {
    assert!(sample_batch(&[], 0, &mut []).is_empty());
    assert!(sample_batch(&[], 151_936, &mut []).is_empty());
}

#[test]
fn masked_and_nan_logits_are_never_sampled() {
    let mut logits = row(500, 9);
    for i in (0..500).step_by(3) {
        logits[i] = f32::NEG_INFINITY;
    }
    for i in (1..500).step_by(7) {
        logits[i] = f32::NAN;
    }
    let all = [
        SamplingParams::default(),
        SamplingParams::greedy(),
        SamplingParams {
            top_k: Some(5),
            ..Default::default()
        },
        SamplingParams {
            top_k: Some(300),
            ..Default::default()
        },
        SamplingParams {
            top_p: 0.5,
            ..Default::default()
        },
        SamplingParams {
            top_p: 0.99,
            temperature: 2.0,
            ..Default::default()
        },
        SamplingParams {
            min_p: 0.2,
            repetition_penalty: 1.2,
            ..Default::default()
        },
    ];
    for params in all {
        let mut req = Request::new(params.clone(), 3);
        for _ in 0..50 {
            let t = req.step(&logits).token;
            assert!(logits[t as usize].is_finite(), "{params:?} sampled {t}");
        }
    }
}

#[test]
fn rows_without_a_finite_logit_still_give_a_token() {
    for fill in [f32::NEG_INFINITY, f32::NAN] {
        for params in [
            SamplingParams::default(),
            SamplingParams {
                top_p: 0.9,
                ..Default::default()
            },
        ] {
            let sampled = Request::new(params, 0).step(&[fill; 8]);
            assert!(sampled.token < 8);
        }
    }
}
