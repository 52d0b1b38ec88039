//! Arbitrary bytes as statement text, judged under the built-in rules with
//! both lexing settings and both certainty states: never a panic or an
//! abort, and a verdict for every input. The first byte picks the settings,
//! so the fuzzer can reach both scanner modes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::config::raw::RawPolicy;
use pgward::policy::lexer::LexSettings;
use pgward::policy::rules::{Identity, Verdict};
use pgward::config::policy::compile;
use pgward::policy::{Lexing, Policy};
use std::sync::{Arc, OnceLock};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::new(Arc::new(compile(&RawPolicy::default()).expect("built-in rules"))))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let settings = LexSettings {
        standard_conforming_strings: mode & 1 == 0,
    };
    let lexing = if mode & 2 == 0 {
        Lexing::Known(settings)
    } else {
        Lexing::Uncertain(settings)
    };
    let who = Identity {
        user: "fuzz".into(),
        groups: Vec::new(),
    };
    let outcome = policy().judge(text, &who, lexing);
    if let Verdict::Deny(d) = &outcome.verdict {
        assert!(!d.message.is_empty());
    }
});
