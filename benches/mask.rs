//! The DataRow rewrite: 10 text columns, 2 masked (partial and e-mail),
//! against rows with nothing to mask (forwarded untouched).
//!
//! And the guard's verdict for a 100-byte statement: judged afresh (parse)
//! against remembered by shape with new literals (scan + shape + lookup).
//!
//! `cargo bench --bench mask`

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pgward::mask::rewrite::{rewrite_into, ColumnMask, RowPlan};
use pgward::mask::strategy::{BinaryKind, HashKey, Strategy};
use pgward::wire::{Frame, Framer};
use std::sync::Arc;

const ROWS: usize = 10_000;

fn rows() -> Vec<Frame> {
    let framer = Framer::new(1 << 20);
    (0..ROWS)
        .map(|i| {
            let mut b = BytesMut::new();
            b.put_u8(b'D');
            b.put_i32(0);
            b.put_i16(10);
            for c in 0..10 {
                let v = match c {
                    2 => format!("{:016}", 4_111_111_111_111_111u64 + i as u64),
                    5 => format!("user{i}@example.com"),
                    _ => format!("{:032x}", (i * 31 + c) as u128 * 0x9e37_79b9_7f4a_7c15),
                };
                b.put_i32(v.len() as i32);
                b.extend_from_slice(v.as_bytes());
            }
            let len = (b.len() - 1) as i32;
            b[1..5].copy_from_slice(&len.to_be_bytes());
            framer.next_frame(&mut b).expect("frame").expect("complete")
        })
        .collect()
}

fn mask(s: Strategy) -> Option<ColumnMask> {
    Some(ColumnMask {
        strategy: Arc::new(s),
        binary: false,
        kind: BinaryKind::Text,
    })
}

fn bench(c: &mut Criterion) {
    let rows = rows();
    let key = HashKey::default();
    let mut masked = RowPlan {
        columns: vec![None; 10],
    };
    masked.columns[2] = mask(Strategy::Partial {
        keep_first: 0,
        keep_last: 4,
        fill: '*',
    });
    masked.columns[5] = mask(Strategy::Email);
    let clear = RowPlan {
        columns: vec![None; 10],
    };
    let mut g = c.benchmark_group("data_row_10_text_columns");
    g.throughput(Throughput::Elements(ROWS as u64));
    // What the relay does: rows rewritten straight into the outgoing
    // buffer, which is written and cleared per batch.
    let mut out = bytes::BytesMut::with_capacity(64 * 1024);
    g.bench_function("2 masked", |b| {
        b.iter(|| {
            out.clear();
            for row in &rows {
                rewrite_into(row.raw(), &masked, &key, &mut out).expect("row");
            }
            black_box(out.len())
        })
    });
    g.bench_function("none masked (untouched)", |b| {
        b.iter(|| {
            out.clear();
            for row in &rows {
                rewrite_into(row.raw(), &clear, &key, &mut out).expect("row");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

/// About 100 bytes; each run binds new literals.
fn statement(n: u64) -> String {
    format!("SELECT id, name, email, ssn FROM public.customers WHERE id = {n} AND status = 'active' ORDER BY id")
}

fn guard(c: &mut Criterion) {
    use pgward::mask::guard::{check, Masked};
    use pgward::mask::memo::{shape_key, Memo};
    use pgward::policy::lexer::LexSettings;
    let masked = Masked::with_catalog(
        vec![(
            "public".into(),
            "customers".into(),
            ["ssn".to_owned(), "email".to_owned()].into(),
        )],
        Default::default(),
        Default::default(),
        [("public".to_owned(), "customers".to_owned())].into(),
    );
    let settings = [LexSettings::default()];
    let first = statement(1);
    assert!((90..=110).contains(&first.len()), "{} bytes", first.len());
    check(&first, settings[0], &masked).expect("passes the guard");
    let mut memo = Memo::new(1024);
    memo.remember(
        first.as_bytes(),
        shape_key(&first, &settings).as_deref(),
        (),
    );
    let texts: Vec<String> = (2..1002).map(statement).collect();
    let mut g = c.benchmark_group("guard_100_byte_statement");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("judged afresh (parse + resolve)", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            black_box(check(&texts[i], settings[0], &masked).is_ok())
        })
    });
    g.bench_function(
        "remembered by shape, new literals (scan + shape + lookup)",
        |b| {
            b.iter(|| {
                i = (i + 1) % texts.len();
                let text = &texts[i];
                let hit = memo.texts.contains_key(text.as_bytes())
                    || shape_key(text, &settings).is_some_and(|k| memo.shapes.contains_key(&k));
                assert!(hit);
                black_box(hit)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench, guard);
criterion_main!(benches);
