//! How an edited services.toml maps onto the running one.
//!
//! Node indices are kept: a node of the old configuration keeps its index (a removed one stays
//! as a tombstone without dependencies, so a later reload can add it back at the same index),
//! and new nodes are appended. Runners and their reports stay valid across the swap.

use std::collections::HashMap;

use crate::engine::config::{Config, Node, node_fingerprint};

/// The merged configuration and what changed.
pub(super) struct ReloadPlan {
    pub(super) merged: Config,
    pub(super) added: Vec<usize>,
    pub(super) removed: Vec<usize>,
    pub(super) changed: Vec<usize>,
    pub(super) unchanged: usize,
}

impl ReloadPlan {
    pub(super) fn new(old: &Config, new: Config) -> Self {
        let mut nodes = Vec::with_capacity(old.nodes.len() + new.nodes.len());
        let (mut removed, mut changed, mut unchanged) = (Vec::new(), Vec::new(), 0);
        for (i, before) in old.nodes.iter().enumerate() {
            match new.node(&before.name) {
                Some(after) => {
                    if node_fingerprint(old, before) == node_fingerprint(&new, after) {
                        unchanged += 1;
                    } else {
                        changed.push(i);
                    }
                    nodes.push(after.clone());
                }
                None => {
                    removed.push(i);
                    nodes.push(Node {
                        depends_on: Vec::new(),
                        ..before.clone()
                    });
                }
            }
        }
        let mut added = Vec::new();
        for after in &new.nodes {
            if old.node(&after.name).is_none() {
                added.push(nodes.len());
                nodes.push(after.clone());
            }
        }
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for node in &mut nodes {
            for dep in &mut node.depends_on {
                dep.node = index[&dep.name];
            }
        }
        Self {
            merged: Config { nodes, ..new },
            added,
            removed,
            changed,
            unchanged,
        }
    }
}

/// Socket activation binds before anything starts; a reload cannot rebind.
pub(super) fn check_sockets_unchanged(old: &Config, new: &Config) -> Result<(), String> {
    for node in &new.nodes {
        let before = old
            .node(&node.name)
            .map_or(&[][..], |o| o.sockets.as_slice());
        if before != node.sockets.as_slice() {
            return Err(format!(
                "the sockets of `{}` changed; socket activation needs a full restart (`dagstart down`, then `dagstart run`)",
                node.name
            ));
        }
    }
    Ok(())
}
