//! Statement judging for a 100-byte statement under the built-in rules: a
//! cold verdict (PostgreSQL's parser, the tree walk and the rules) against
//! cached ones: the same text again (one lookup), and the same statement
//! with other literals (PostgreSQL's scanner, the shape and a lookup).
//!
//! `cargo bench --bench policy`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgward::config::policy::compile;
use pgward::config::raw::RawPolicy;
use pgward::policy::lexer::LexSettings;
use pgward::policy::rules::Identity;
use pgward::policy::{Lexing, Policy};
use std::sync::Arc;

const SQL: &str =
    "SELECT abalance, filler FROM pgbench_accounts WHERE aid = 48213 AND bid = 120 ORDER BY aid LIMIT 100";

fn policy() -> Policy {
    Policy::new(Arc::new(
        compile(&RawPolicy::default()).expect("built-in rules"),
    ))
}

fn bench(c: &mut Criterion) {
    assert_eq!(SQL.len(), 100);
    let who = Identity {
        user: "alice".into(),
        groups: vec!["support".into()],
    };
    let lexing = Lexing::Known(LexSettings::default());
    let mut g = c.benchmark_group("judge_100_byte_select");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cold (parse + classify + rules)", |b| {
        b.iter_batched(
            policy,
            |p| black_box(p.judge(black_box(SQL.as_bytes()), &who, lexing)),
            BatchSize::SmallInput,
        )
    });
    let warm = policy();
    warm.judge(SQL.as_bytes(), &who, lexing);
    g.bench_function("cached, same text (one lookup)", |b| {
        b.iter(|| black_box(warm.judge(black_box(SQL.as_bytes()), &who, lexing)))
    });
    // Same shape, other literals: still one cache entry.
    let texts: Vec<String> = (0..64)
        .map(|i| SQL.replace("48213", &format!("{:05}", 10_000 + i * 7)))
        .collect();
    let mut i = 0;
    g.bench_function("cached, literals vary (scan + shape + lookup)", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            black_box(warm.judge(black_box(texts[i].as_bytes()), &who, lexing))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
