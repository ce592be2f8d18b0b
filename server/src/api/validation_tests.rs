use super::*;

fn limits(defaults: &GenerationDefaults) -> Limits<'_> {
    Limits {
        max_model_len: 100,
        vocab_size: 50,
        defaults,
    }
}

fn check(fields: SamplingFields) -> Result<Vec<ServingRequest>, ApiError> {
    let defaults = GenerationDefaults::default();
    fields
        .validate(limits(&defaults), DefaultMaxTokens::Fixed(16))?
        .requests(vec![1, 2, 3], "prompt")
}

fn param_of(fields: SamplingFields) -> (String, String) {
    let e = check(fields).unwrap_err();
    assert_eq!(e.status, 400);
    (e.param.unwrap_or_default(), e.message)
}

#[test]
fn each_bad_field_is_named() {
    let cases: Vec<(SamplingFields, &str)> = vec![
        (
            SamplingFields {
                n: Some(0),
                ..Default::default()
            },
            "n",
        ),
        (
            SamplingFields {
                n: Some(MAX_N + 1),
                ..Default::default()
            },
            "n",
        ),
        (
            SamplingFields {
                max_tokens: Some(0),
                ..Default::default()
            },
            "max_tokens",
        ),
        (
            SamplingFields {
                max_tokens: Some(0),
                max_tokens_param: "max_completion_tokens",
                ..Default::default()
            },
            "max_completion_tokens",
        ),
        (
            SamplingFields {
                min_tokens: Some(-1),
                ..Default::default()
            },
            "min_tokens",
        ),
        (
            SamplingFields {
                min_tokens: Some(20),
                max_tokens: Some(10),
                ..Default::default()
            },
            "min_tokens",
        ),
        (
            SamplingFields {
                temperature: Some(-1.0),
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingFields {
                top_p: Some(0.0),
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingFields {
                top_k: Some(-2),
                ..Default::default()
            },
            "top_k",
        ),
        (
            SamplingFields {
                min_p: Some(1.5),
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplingFields {
                presence_penalty: Some(3.0),
                ..Default::default()
            },
            "presence_penalty",
        ),
        (
            SamplingFields {
                frequency_penalty: Some(-3.0),
                ..Default::default()
            },
            "frequency_penalty",
        ),
        (
            SamplingFields {
                repetition_penalty: Some(0.0),
                ..Default::default()
            },
            "repetition_penalty",
        ),
        (
            SamplingFields {
                logprobs: Some(21),
                ..Default::default()
            },
            "logprobs",
        ),
        (
            SamplingFields {
                logprobs: Some(-1),
                logprobs_param: "top_logprobs",
                ..Default::default()
            },
            "top_logprobs",
        ),
        (
            SamplingFields {
                stop: Some(Stop::One(String::new())),
                ..Default::default()
            },
            "stop",
        ),
        (
            SamplingFields {
                stop: Some(Stop::Many(vec!["a".into(); 5])),
                ..Default::default()
            },
            "stop",
        ),
        (
            SamplingFields {
                stop_token_ids: Some(vec![50]),
                ..Default::default()
            },
            "stop_token_ids",
        ),
    ];
    for (fields, want) in cases {
        let (param, message) = param_of(fields);
        assert_eq!(param, want, "{message}");
        assert!(
            message.contains(want),
            "message should name {want}: {message}"
        );
    }
}

#[test]
fn context_length_names_both_numbers() {
    let (param, message) = param_of(SamplingFields {
        max_tokens: Some(98),
        ..Default::default()
    });
    assert_eq!(param, "max_tokens");
    assert!(message.contains("100 tokens"), "{message}");
    assert!(message.contains("101 tokens"), "{message}");
    assert!(message.contains("3 in the prompt"), "{message}");
    assert!(message.contains("98 in the completion"), "{message}");
    // Exactly filling the window is fine.
    let ok = check(SamplingFields {
        max_tokens: Some(97),
        ..Default::default()
    });
    assert!(ok.is_ok());
}

#[test]
fn prompts_are_checked() {
    let defaults = GenerationDefaults::default();
    let v = SamplingFields::default()
        .validate(limits(&defaults), DefaultMaxTokens::Remaining)
        .unwrap();
    let e = v.requests(vec![], "messages").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages"));
    let e = v.requests(vec![1, 99], "prompt").unwrap_err();
    assert!(e.message.contains("99"), "{}", e.message);
    let e = v.requests(vec![1; 100], "prompt").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("prompt"));
    assert_eq!(e.code, Some("context_length_exceeded"));
    // Chat's default output budget is what the window leaves.
    let r = v.requests(vec![1; 40], "messages").unwrap();
    assert_eq!(r[0].request.stop.max_tokens, 60);
}

#[test]
fn defaults_come_from_generation_config_unless_given() {
    let defaults = GenerationDefaults {
        temperature: Some(0.7),
        top_p: Some(0.9),
        top_k: Some(40),
        repetition_penalty: Some(1.1),
        ..Default::default()
    };
    let v = SamplingFields::default()
        .validate(limits(&defaults), DefaultMaxTokens::Fixed(16))
        .unwrap();
    assert_eq!(v.params.temperature, 0.7);
    assert_eq!(v.params.top_p, 0.9);
    assert_eq!(v.params.top_k, Some(40));
    assert_eq!(v.params.repetition_penalty, 1.1);
    let v = SamplingFields {
        temperature: Some(0.0),
        top_k: Some(-1),
        ..Default::default()
    }
    .validate(limits(&defaults), DefaultMaxTokens::Fixed(16))
    .unwrap();
    assert_eq!(v.params.temperature, 0.0);
    assert_eq!(
        v.params.top_k, None,
        "-1 disables top_k even over a default"
    );
}

#[test]
fn n_choices_get_distinct_reproducible_seeds() {
    let r = check(SamplingFields {
        n: Some(3),
        seed: Some(7),
        stop: Some(Stop::One("x".into())),
        ignore_eos: Some(true),
        ..Default::default()
    })
    .unwrap();
    let seeds: Vec<_> = r.iter().map(|r| r.request.params.seed).collect();
    assert_eq!(seeds, vec![Some(7), Some(8), Some(9)]);
    assert!(r.iter().all(|r| r.stop_strings == ["x"]));
    assert!(r.iter().all(|r| r.request.stop.ignore_eos));
    assert!(r.iter().all(|r| r.request.stop.max_tokens == 16));
}
