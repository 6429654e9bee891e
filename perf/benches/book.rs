//! Criterion twin of `book-bench`: replays of a fixed stream through each book, fresh book per
//! iteration (its construction is not timed). `cargo test --benches` runs each once.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use perf::peers::{Book, Lobster, OrderbookRs, Ours};
use perf::stream::{self, Mix, StreamSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn replay<B: Book>(book: &mut B, cmds: &[common::Command]) {
    for cmd in cmds {
        book.apply(cmd);
    }
}

fn bench(c: &mut Criterion) {
    let full = StreamSpec { mix: Mix::Full, commands: 100_000, symbols: 4, depth: 2_000, seed: 42 };
    let (cmds, _) = stream::generate(&full);
    let table = stream::table(full.symbols);
    let capacity = stream::capacity(&full);
    let mut g = c.benchmark_group("full-mix");
    g.throughput(Throughput::Elements(cmds.len() as u64));
    g.bench_function("trading-lab", |b| {
        b.iter_batched_ref(|| Ours::new(&table, capacity), |book| replay(book, &cmds), BatchSize::LargeInput)
    });
    g.finish();

    let common = StreamSpec { mix: Mix::Common, symbols: 1, ..full };
    let (cmds, _) = stream::generate(&common);
    let table = stream::table(1);
    let mut g = c.benchmark_group("common-subset");
    g.throughput(Throughput::Elements(cmds.len() as u64));
    g.bench_function("trading-lab", |b| {
        b.iter_batched_ref(|| Ours::new(&table, capacity), |book| replay(book, &cmds), BatchSize::LargeInput)
    });
    g.bench_function("lobster", |b| {
        b.iter_batched_ref(
            || Lobster::new(capacity.orders),
            |book| replay(book, &cmds),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("orderbook-rs", |b| {
        b.iter_batched_ref(OrderbookRs::new, |book| replay(book, &cmds), BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
