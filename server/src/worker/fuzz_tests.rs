//! The worker's internal API bodies under hostile input (the stand-in for
//! cargo-fuzz, as the API's own in `api/tests/fuzz.rs`): any JSON or bytes
//! parse into the wire types or are refused, never a panic.

use proptest::prelude::*;
use serde_json::Value;

use super::wire::{DecodeRequest, ReleaseRequest};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "request",
                    "kv",
                    "output_tokens",
                    "agent",
                    "block_ids",
                    "lease",
                    "prompt_tokens",
                    "params"
                ]),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn worker_wire_bodies_parse_or_refuse(value in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        for body in [value.to_string().into_bytes(), bytes] {
            let _ = serde_json::from_slice::<DecodeRequest>(&body);
            let _ = serde_json::from_slice::<ReleaseRequest>(&body);
            let _ = serde_json::from_slice::<tandem_engine::serving::ServingRequest>(&body);
        }
    }
}
