//! Two pieces of work at once on a machine's cores: one on the calling thread, the other on a
//! scoped thread beside it. Loading a large services.toml uses it (its pieces, their nodes and
//! dependencies), and so do `check` and `graph --format json`.

/// Runs `here` on this thread and `beside` on another, at once, and returns both results. A
/// panic in either is the caller's panic.
pub fn join<A, B: Send>(here: impl FnOnce() -> A, beside: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let beside = scope.spawn(beside);
        let here = here();
        let beside = beside
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (here, beside)
    })
}
