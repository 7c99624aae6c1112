//! Any bytes as services.toml: the loader and everything that renders its result (diagnostics
//! as text and JSON, the graph, the resolved configuration) must not panic, hang or grow
//! without bound. Seeds: `tests/fixtures/hostile/` (see `.ci/fuzz`).
#![no_main]

use std::path::Path;

use dagstart::engine::config::{Environment, load_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let env = Environment::from_pairs([("X", "x")]);
    match load_str(Path::new("services.toml"), text, &env) {
        Ok(mut config) => {
            if config.cluster.is_some() {
                // As an agent of host `h` sees it: the other hosts' nodes mirrored.
                dagstart::engine::cluster::localize(&mut config, "h", "main");
            }
            let graph = dagstart::engine::graph::Graph::build(&config);
            let all = vec![true; graph.len()];
            let _ = dagstart::views::graph_render::render_text(&config, &graph, &all, None);
            let _ = dagstart::views::graph_render::render_json(&config, &graph, &all);
            let _ = dagstart::engine::config::render_toml(&config);
        }
        Err(error) => {
            let _ = dagstart::cli::error::render(
                &dagstart::Error::Config(error.clone()),
                &dagstart::cli::error::plain_handler(),
            );
            let _ = error.to_json();
        }
    }
});
