//! Prints the encoding figures of the network sinks (a benchmark, not a test; ignored unless
//! asked for): `cargo test --release -p tailor-agent --test sinks_bench -- --ignored --nocapture`.

use tailor_agent::sinks::net::bench::bench_encodings;

#[test]
#[ignore = "benchmark: prints figures"]
fn sink_encodings_at_256_byte_events() {
    println!("200000 events of 256-byte messages, batches of 1000, one thread:");
    for figure in bench_encodings(200_000, 256, 1000) {
        println!("{figure}");
    }
}
