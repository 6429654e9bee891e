//! The book allocates nothing in steady state: after a warm-up, a long stretch of the realistic
//! stream — and of each market regime's, flash crash included — runs with a counting global
//! allocator that sees zero allocations from this thread.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use perf::peers::{Book, Ours};
use perf::regime::{self, Regime, RegimeSpec};
use perf::stream::{self, Mix, StreamSpec};

/// Counts allocations made by a thread while its `COUNTING` flag is set (per thread, so tests
/// running in parallel don't see each other's).
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter only touches
// const-initialised thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_allocates_nothing() {
    let spec = StreamSpec { mix: Mix::Full, commands: 200_000, symbols: 4, depth: 2_000, seed: 9 };
    let (cmds, stats) = stream::generate(&spec);
    assert!(stats.fills > 10_000 && stats.cancels > 50_000, "the stream exercises matching: {stats:?}");
    let table = stream::table(spec.symbols);
    let mut book = Ours::new(&table, stream::capacity(&spec));
    let (warm, measured) = cmds.split_at(50_000);
    for cmd in warm {
        book.apply(cmd);
    }
    COUNTING.with(|c| c.set(true));
    for cmd in measured {
        book.apply(cmd);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(allocations(), 0, "allocations while applying {} commands", measured.len());
    book.engine().validate().unwrap();
}

#[test]
fn every_regime_allocates_nothing_after_the_warm_up() {
    for regime in Regime::ALL {
        let spec = RegimeSpec { regime, commands: 300_000, depth: 5_000, seed: 9 };
        let stream = regime::generate(&spec);
        let mut book = Ours::new(&stream::table(1), regime::capacity(&stream));
        // The warm-up fills the book; the flash crash (from 40 %) comes after it.
        let (warm, measured) = stream.native.split_at(stream.stats.warm_up);
        for cmd in warm {
            book.apply(cmd);
        }
        let before = allocations();
        COUNTING.with(|c| c.set(true));
        for cmd in measured {
            book.apply(cmd);
        }
        COUNTING.with(|c| c.set(false));
        assert_eq!(
            allocations() - before,
            0,
            "{regime:?}: allocations while applying {} messages",
            measured.len()
        );
        book.engine().validate().unwrap();
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The test above could pass vacuously if the counter were broken.
    COUNTING.with(|c| c.set(true));
    let before = allocations();
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(16));
    COUNTING.with(|c| c.set(false));
    assert!(allocations() > before);
    drop(v);
}
