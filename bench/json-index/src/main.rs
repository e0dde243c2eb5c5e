//! `json-index-compare check [MUTATIONS]`: every candidate's reading of the benchmark's reviews
//! against today's index, and its acceptance against serde_json's on mutated small reviews.
//!
//! `json-index-compare run CANDIDATE REVIEW ITERATIONS`: read REVIEW that many times through
//! CANDIDATE (or, as CANDIDATE `review`, run today's whole `admission::review`), for callgrind:
//! `compare.sh` counts instructions per reading as (Ir(N + 1) - Ir(1)) / N.

use std::hint::black_box;
use std::process::ExitCode;

use json_index_compare::{candidate, check, reviews};
use pytorchjob_guard::admission;
use pytorchjob_guard::policy::Policy;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["check", rest @ ..] => {
            let mutations = rest.first().and_then(|n| n.parse().ok()).unwrap_or(20_000);
            let mut ok = true;
            println!(
                "| candidate | reads the 4 reviews as the index does | mutated bodies read differently from the index or against serde_json |"
            );
            println!("| --- | --- | ---: |");
            for (name, same, disagreements, tried) in check(mutations) {
                println!(
                    "| {name} | {} | {disagreements} of {tried} |",
                    if same { "yes" } else { "NO" }
                );
                ok &= same && disagreements == 0;
            }
            println!();
            println!(
                "| text (validity alone) | serde_json (`IgnoredAny`) | index (`Index::of`) | sonic-rs (`from_str::<IgnoredAny>`) | simd-json (`to_borrowed_value`) |"
            );
            println!("| --- | --- | --- | --- | --- |");
            for (text, accepts) in json_index_compare::probes() {
                let shown = if text.len() > 24 {
                    format!("{} levels of `[]`", text.len() / 2)
                } else {
                    format!("`{}`", text.escape_debug())
                };
                let cell = |b: bool| if b { "accepts" } else { "refuses" };
                println!(
                    "| {shown} | {} | {} | {} | {} |",
                    cell(accepts[0]),
                    cell(accepts[1]),
                    cell(accepts[2]),
                    cell(accepts[3])
                );
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        ["run", name, review, iterations] => {
            let Some(body) = reviews::all()
                .into_iter()
                .find(|(r, _)| r == review)
                .map(|(_, b)| b)
            else {
                return fail("no such review");
            };
            let Ok(iterations) = iterations.parse::<usize>() else {
                return fail("ITERATIONS is a count");
            };
            if *name == "review" {
                let policy = Policy::default();
                for _ in 0..iterations {
                    black_box(admission::review(&policy, black_box(&body)).is_ok());
                }
                return ExitCode::SUCCESS;
            }
            let Some(reader) = candidate(name) else {
                return fail("no such candidate");
            };
            for _ in 0..iterations {
                let reading = reader(black_box(&body));
                black_box(reading.map(|r| r.changed.len()));
            }
            ExitCode::SUCCESS
        }
        _ => fail("usage: json-index-compare check [MUTATIONS] | run CANDIDATE REVIEW ITERATIONS"),
    }
}
