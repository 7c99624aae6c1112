//! Synthetic configurations for benchmarks and scale tests: random DAGs of any size.
//!
//! Node `i` depends only on nodes before it, so the result is acyclic by construction.

use std::fmt::Write as _;

/// A small deterministic generator (xorshift64*), so a seed always gives the same graph (and
/// the simulation tests the same schedule).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A services.toml with `nodes` services, each depending on up to `degree` earlier ones
/// (chosen mostly among near neighbours so the graph is deep as well as wide).
pub fn random_dag(nodes: usize, degree: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(nodes * 80);
    for i in 0..nodes {
        let _ = write!(out, "[services.n{i}]\ncommand = \"true\"\n");
        if i == 0 || degree == 0 {
            continue;
        }
        let mut deps: Vec<usize> = (0..degree.min(i))
            .map(|_| {
                let window = i.min(1000);
                i - 1 - rng.below(window)
            })
            .collect();
        deps.sort_unstable();
        deps.dedup();
        out.push_str("depends_on = [");
        for (k, d) in deps.iter().enumerate() {
            let sep = if k == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}\"n{d}\"");
        }
        out.push_str("]\n");
    }
    out
}
