//! Where the dashboard draws each node of the DAG: layers by dependency (left to right), and
//! an order within each layer that keeps edges from crossing where it can.
//!
//! A light Sugiyama layout: every node sits in the layer after its deepest dependency; long
//! edges get a virtual point in each layer they pass, so they take part in the ordering; then
//! alternating sweeps place each node at the mean position of its neighbours in the layer just
//! swept (the barycenter heuristic), keeping the order with the fewest crossings seen. Readable
//! at 50 nodes and more; computed once per run, in microseconds.

use serde::Serialize;

/// A node as the layout sees it: its dependencies, by index.
#[derive(Debug, Clone)]
pub struct LayoutNode {
    pub name: String,
    pub depends_on: Vec<usize>,
}

/// Where a node goes: its layer (column) and its row within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Place {
    pub layer: usize,
    pub row: usize,
}

/// Sweeps of the barycenter heuristic (each one down and up).
const SWEEPS: usize = 8;

/// The places of `nodes` (whose dependencies come before them or after, in any order; the
/// graph has no cycles), and how many crossings remain.
pub fn layout(nodes: &[LayoutNode]) -> (Vec<Place>, usize) {
    let (places, _, fewest) = layout_counted(nodes);
    (places, fewest)
}

/// The layout, the crossings of the file's own order, and those left.
fn layout_counted(nodes: &[LayoutNode]) -> (Vec<Place>, usize, usize) {
    let layer = layers(nodes);
    let depth = layer.iter().max().map_or(0, |m| m + 1);
    // Every item of a layer: a node, or a point of a long edge passing through.
    let mut items: Vec<Vec<Item>> = vec![Vec::new(); depth];
    for (n, &l) in layer.iter().enumerate() {
        items[l].push(Item::Node(n));
    }
    // Links between adjacent layers: (item index in layer l, item index in layer l + 1).
    let mut links: Vec<Vec<(usize, usize)>> = vec![Vec::new(); depth.saturating_sub(1)];
    for (n, node) in nodes.iter().enumerate() {
        for &d in &node.depends_on {
            let mut from = position_of(&items[layer[d]], Item::Node(d));
            for l in layer[d] + 1..layer[n] {
                items[l].push(Item::Through(d, n));
                let here = items[l].len() - 1;
                links[l - 1].push((from, here));
                from = here;
            }
            let to = position_of(&items[layer[n]], Item::Node(n));
            links[layer[n] - 1].push((from, to));
        }
    }
    let mut order: Vec<Vec<usize>> = items.iter().map(|l| (0..l.len()).collect()).collect();
    let mut best = order.clone();
    let mut fewest = crossings(&order, &links);
    let unsorted = fewest;
    for sweep in 0..SWEEPS * 2 {
        if fewest == 0 {
            break;
        }
        let down = sweep % 2 == 0;
        let layers: Vec<usize> = if down {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for l in layers {
            reorder(&mut order, &links, l, down);
        }
        let now = crossings(&order, &links);
        if now < fewest {
            fewest = now;
            best = order.clone();
        }
    }
    let mut places = vec![Place { layer: 0, row: 0 }; nodes.len()];
    for (l, layer_order) in best.iter().enumerate() {
        // Rows count only nodes: the points of long edges leave no gaps.
        let mut row = 0;
        for &i in layer_order {
            if let Item::Node(n) = items[l][i] {
                places[n] = Place { layer: l, row };
                row += 1;
            }
        }
    }
    (places, unsorted, fewest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Node(usize),
    /// A point of the edge from the first node to the second.
    Through(usize, usize),
}

fn position_of(layer: &[Item], item: Item) -> usize {
    layer
        .iter()
        .position(|&i| i == item)
        .expect("the node was placed in its layer")
}

/// Each node's layer: one after its deepest dependency.
fn layers(nodes: &[LayoutNode]) -> Vec<usize> {
    let mut layer: Vec<Option<usize>> = vec![None; nodes.len()];
    for start in 0..nodes.len() {
        // Depth-first, without recursion (a long chain must not overflow the stack).
        let mut stack = vec![(start, false)];
        while let Some((n, expanded)) = stack.pop() {
            if layer[n].is_some() {
                continue;
            }
            if expanded {
                let deepest = nodes[n].depends_on.iter().filter_map(|&d| layer[d]).max();
                layer[n] = Some(deepest.map_or(0, |l| l + 1));
            } else {
                stack.push((n, true));
                stack.extend(
                    nodes[n]
                        .depends_on
                        .iter()
                        .filter(|&&d| layer[d].is_none())
                        .map(|&d| (d, false)),
                );
            }
        }
    }
    layer.into_iter().map(Option::unwrap_or_default).collect()
}

/// Orders layer `l` by the mean position of each item's neighbours in the layer before
/// (`down`) or after it; an item without neighbours there keeps its position.
fn reorder(order: &mut [Vec<usize>], links: &[Vec<(usize, usize)>], l: usize, down: bool) {
    let (other, pairs) = if down {
        (l - 1, &links[l - 1])
    } else {
        (l + 1, &links[l])
    };
    let mut position = vec![0usize; order[other].len()];
    for (p, &i) in order[other].iter().enumerate() {
        position[i] = p;
    }
    let mut sums = vec![(0usize, 0usize); order[l].len()];
    for &(a, b) in pairs {
        let (mine, theirs) = if down { (b, a) } else { (a, b) };
        sums[mine].0 += position[theirs];
        sums[mine].1 += 1;
    }
    let current: Vec<usize> = order[l].clone();
    let mut keyed: Vec<(f64, usize, usize)> = current
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            let (sum, count) = sums[i];
            let key = if count == 0 {
                p as f64
            } else {
                sum as f64 / count as f64
            };
            (key, p, i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order[l] = keyed.into_iter().map(|(_, _, i)| i).collect();
}

/// Pairs of links between adjacent layers that cross.
fn crossings(order: &[Vec<usize>], links: &[Vec<(usize, usize)>]) -> usize {
    let mut total = 0;
    for (l, pairs) in links.iter().enumerate() {
        let mut position_a = vec![0usize; order[l].len()];
        for (p, &i) in order[l].iter().enumerate() {
            position_a[i] = p;
        }
        let mut position_b = vec![0usize; order[l + 1].len()];
        for (p, &i) in order[l + 1].iter().enumerate() {
            position_b[i] = p;
        }
        let placed: Vec<(usize, usize)> = pairs
            .iter()
            .map(|&(a, b)| (position_a[a], position_b[b]))
            .collect();
        for (i, &(a1, b1)) in placed.iter().enumerate() {
            for &(a2, b2) in &placed[i + 1..] {
                if (a1 < a2 && b1 > b2) || (a1 > a2 && b1 < b2) {
                    total += 1;
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, &[usize])]) -> Vec<LayoutNode> {
        spec.iter()
            .map(|(name, deps)| LayoutNode {
                name: (*name).to_owned(),
                depends_on: deps.to_vec(),
            })
            .collect()
    }

    #[test]
    fn layers_follow_the_deepest_dependency() {
        let n = nodes(&[
            ("db", &[]),
            ("migrate", &[0]),
            ("api", &[1, 0]),
            ("cache", &[]),
        ]);
        let (places, _) = layout(&n);
        let layers: Vec<usize> = places.iter().map(|p| p.layer).collect();
        assert_eq!(layers, [0, 1, 2, 0]);
    }

    #[test]
    fn crossings_are_removed_where_the_graph_allows() {
        // a -> y and b -> x, listed so that the first order crosses.
        let n = nodes(&[("a", &[]), ("b", &[]), ("x", &[1]), ("y", &[0])]);
        let (places, crossings) = layout(&n);
        assert_eq!(crossings, 0);
        assert_eq!(places[0].row < places[1].row, places[3].row < places[2].row);
    }

    #[test]
    fn fifty_nodes_get_distinct_places_and_fewer_crossings() {
        let text = crate::synth::random_dag(50, 3, 11);
        let config = crate::engine::config::load_str(
            std::path::Path::new("/t/services.toml"),
            text,
            &crate::engine::config::Environment::default(),
        )
        .unwrap();
        let n: Vec<LayoutNode> = config
            .nodes
            .iter()
            .map(|node| LayoutNode {
                name: node.name.clone(),
                depends_on: node.depends_on.iter().map(|d| d.node).collect(),
            })
            .collect();
        let (places, unsorted, fewest) = layout_counted(&n);
        let mut seen = std::collections::HashSet::new();
        assert!(
            places.iter().all(|p| seen.insert(*p)),
            "two nodes in one place"
        );
        assert!(
            fewest * 2 < unsorted,
            "{fewest} crossings left of {unsorted} in the file's order"
        );
    }
}
