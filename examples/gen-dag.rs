//! Prints a random acyclic services.toml: `cargo run --example gen-dag -- NODES DEGREE [SEED]`.

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are whole numbers"))
        .collect();
    let (nodes, degree, seed) = match args.as_slice() {
        [n, d] => (*n, *d, 42),
        [n, d, s] => (*n, *d, *s),
        _ => {
            eprintln!("usage: gen-dag NODES DEGREE [SEED]");
            std::process::exit(2);
        }
    };
    print!(
        "{}",
        dagstart::synth::random_dag(nodes, degree, seed as u64)
    );
}
