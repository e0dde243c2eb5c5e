//! Criterion times of each candidate's reading (`src/lib.rs`) and of today's whole
//! `admission::review`, on the benchmark's reviews: `cargo bench --bench json_index`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use json_index_compare::{CANDIDATES, reviews};
use pytorchjob_guard::admission;
use pytorchjob_guard::policy::Policy;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn benches(c: &mut Criterion) {
    let policy = Policy::default();
    for (review, body) in reviews::all() {
        let mut group = c.benchmark_group(review);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter("review"), &body, |b, body| {
            b.iter(|| admission::review(&policy, black_box(body)).is_ok());
        });
        for (name, reader) in CANDIDATES {
            group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
                b.iter(|| reader(black_box(body)).map(|r| r.changed.len()));
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = json_index;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = benches
}
criterion_main!(json_index);
