//! The relay framer over a realistic backend stream: RowDescription, 10,000
//! DataRows of 10 text columns, CommandComplete, ReadyForQuery.
//!
//! - `forward_untouched`: what the relay does with frames no phase inspects
//!   (finds the longest run of complete frames; nothing is copied).
//! - `split_every_frame`: what it does when a phase inspects every DataRow
//!   (each frame split off as its own `Bytes`).
//! - `split_in_reads`: the same, with the stream arriving in 64 KiB reads.
//!
//! Each is reported twice: `framer_bytes/*` in bytes/s and `framer_rows/*`
//! in DataRows/s.

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pgward::wire::Framer;

const ROWS: usize = 10_000;
const COLUMNS: usize = 10;

fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(4 + body.len() as i32);
    out.put_slice(body);
}

/// The bytes PostgreSQL sends for `SELECT` of 10 text columns x 10,000 rows.
fn backend_stream() -> BytesMut {
    let mut out = BytesMut::new();
    let mut desc = BytesMut::new();
    desc.put_i16(COLUMNS as i16);
    for c in 0..COLUMNS {
        desc.put_slice(format!("column_{c}\0").as_bytes());
        desc.put_i32(16_384); // table OID
        desc.put_i16(c as i16 + 1);
        desc.put_i32(25); // text
        desc.put_i16(-1);
        desc.put_i32(-1);
        desc.put_i16(0);
    }
    message(&mut out, b'T', &desc);
    let mut row = BytesMut::new();
    for r in 0..ROWS {
        row.clear();
        row.put_i16(COLUMNS as i16);
        for c in 0..COLUMNS {
            let value = format!("value {r} of column {c} ......");
            row.put_i32(value.len() as i32);
            row.put_slice(value.as_bytes());
        }
        message(&mut out, b'D', &row);
    }
    message(&mut out, b'C', b"SELECT 10000\0");
    message(&mut out, b'Z', b"I");
    out
}

fn framer(c: &mut Criterion) {
    let stream = backend_stream();
    eprintln!(
        "stream: {} bytes, {} bytes per row",
        stream.len(),
        stream.len() / ROWS
    );
    let framer = Framer::new(1 << 30);
    // The same three measurements twice: once reported in bytes/s, once in
    // rows/s (DataRows per second).
    for (group_name, throughput) in [
        ("framer_bytes", Throughput::Bytes(stream.len() as u64)),
        ("framer_rows", Throughput::Elements(ROWS as u64)),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(throughput);
        bench_group(&mut group, &framer, &stream);
        group.finish();
    }
}

fn bench_group(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    framer: &Framer,
    stream: &BytesMut,
) {
    group.bench_function("forward_untouched", |b| {
        b.iter(|| {
            let run = framer
                .complete_prefix(black_box(stream), |_| false, &[])
                .expect("valid stream");
            assert_eq!(run.len, stream.len());
        })
    });

    group.bench_function("split_every_frame", |b| {
        b.iter_batched(
            || stream.clone(),
            |mut buf| {
                let mut frames = 0;
                while let Some(frame) = framer.next_frame(&mut buf).expect("valid") {
                    frames += black_box(frame.tag() == b'D') as usize;
                }
                assert_eq!(frames, ROWS);
            },
            criterion::BatchSize::LargeInput,
        )
    });

    group.bench_function("split_in_reads", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(128 * 1024);
            let mut frames = 0;
            for chunk in stream.chunks(64 * 1024) {
                buf.extend_from_slice(chunk);
                while let Some(frame) = framer.next_frame(&mut buf).expect("valid") {
                    frames += black_box(frame.tag() == b'D') as usize;
                }
            }
            assert_eq!(frames, ROWS);
        })
    });
}

criterion_group!(benches, framer);
criterion_main!(benches);
