//! `check` and `graph --format json` on a 100,000-node, ~400,000-edge random DAG.
//!
//! Run: `cargo bench --bench graph`. Figures are recorded in docs/performance.md.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use dagstart::engine::config::{Environment, load_str};
use dagstart::engine::graph::Graph;
use dagstart::views::graph_render::render_json;

fn big_dag(c: &mut Criterion) {
    let text = dagstart::synth::random_dag(100_000, 4, 42);
    let env = Environment::default();
    let path = Path::new("services.toml");
    let mut group = c.benchmark_group("dag_100k");
    group.sample_size(10);
    group.bench_function("check", |b| {
        b.iter(|| {
            let config = load_str(path, text.clone(), &env).expect("valid");
            Graph::build(&config).depth()
        });
    });
    group.bench_function("graph_json", |b| {
        b.iter(|| {
            let config = load_str(path, text.clone(), &env).expect("valid");
            let graph = Graph::build(&config);
            let all = vec![true; graph.len()];
            render_json(&config, &graph, &all).len()
        });
    });
    group.finish();
}

criterion_group!(benches, big_dag);
criterion_main!(benches);
