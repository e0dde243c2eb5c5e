//! `memory CANDIDATE REVIEW`: the peak of heap bytes live during one reading of REVIEW through
//! CANDIDATE, beyond what was live before it (the body itself is not counted: every candidate
//! reads it where it lies, except `simd_json`, whose copy is counted), and that per body byte.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use json_index_compare::{candidate, reviews};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                + (new_size - layout.size());
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, review] = args.as_slice() else {
        eprintln!("usage: memory CANDIDATE REVIEW");
        std::process::exit(2);
    };
    let reader = candidate(name).expect("a candidate");
    let body = reviews::all()
        .into_iter()
        .find(|(r, _)| r == review)
        .map(|(_, b)| b)
        .expect("a review");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let reading = reader(std::hint::black_box(&body));
    assert!(reading.is_some(), "{name} reads {review}");
    drop(reading);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "{name} {review} {} {peak} {:.2}",
        body.len(),
        peak as f64 / body.len() as f64
    );
}
