//! The spanned TOML tree of services.toml, parsed on two threads when the file is large.
//!
//! A file of thousands of nodes is almost all `[services.NAME]` and `[components.NAME]`
//! tables, and its parse is the largest part of loading it (100,000 nodes: 45 %). Such a file
//! is cut at a node's table header past its middle and each half is parsed on its own thread;
//! the second half's node tables are then moved into the first half's sections. The second
//! half is parsed from a copy of the file whose first half is one blank comment, so that every
//! span it reports is a place in the file.
//!
//! The joined tree must be exactly the tree the parse of the whole file gives, spans and order
//! included; wherever that is not certain, the whole file is parsed again on one thread, which
//! also finds every syntax error with its place. That is the case when either half has a
//! syntax error (the cut was inside a multi-line string or array, or the file is broken), when
//! the second half declares anything but node tables (a table of its own, an explicit
//! `[services]` header, an array of tables), when a section of the first half is not a table
//! written with headers or dotted keys (an inline table cannot be extended), and when both
//! halves name the same node (what a later header may add to an earlier table is TOML's to
//! judge). The unit tests compare both parses on files built to hit each of these.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::engine::config::NodeKind;
use crate::engine::parallel;

/// Files smaller than this are parsed on one thread: a thread and a copy cost more than they
/// save below it (a megabyte is about 10,000 nodes).
const SPLIT_FROM_BYTES: usize = 1 << 20;

/// The tables a node header opens: the only ones the second half may hold.
const SECTIONS: [&str; 2] = [NodeKind::Service.section(), NodeKind::Component.section()];

/// What [`DeTable::parse_recoverable`] returns.
type Parsed<'i> = (Spanned<DeTable<'i>>, Vec<toml::de::Error>);

/// Parses `text`, on two threads when it is large. `scratch` holds the copy the second half is
/// parsed from, which the tree borrows from like it borrows from `text`.
pub(super) fn document<'i>(text: &'i str, scratch: &'i mut String) -> Parsed<'i> {
    document_split_from(text, scratch, SPLIT_FROM_BYTES)
}

fn document_split_from<'i>(text: &'i str, scratch: &'i mut String, min_len: usize) -> Parsed<'i> {
    if text.len() < min_len {
        return DeTable::parse_recoverable(text);
    }
    split(text, scratch).unwrap_or_else(|| DeTable::parse_recoverable(text))
}

/// The tree of `text` parsed in two halves, or `None` where there is no cut or the halves
/// might not join into the whole file's tree.
fn split<'i>(text: &'i str, scratch: &'i mut String) -> Option<Parsed<'i>> {
    let cut = cut_point(text)?;
    *scratch = blanked_before(text, cut);
    let second_text: &'i str = scratch;
    let (first, second) = parallel::join(
        || DeTable::parse_recoverable(&text[..cut]),
        || DeTable::parse_recoverable(second_text),
    );
    join_halves(first, second, text)
}

/// The start of the first line past the middle of `text` that opens a node's table.
fn cut_point(text: &str) -> Option<usize> {
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle += 1;
    }
    let rest = &text[middle..];
    SECTIONS
        .iter()
        .filter_map(|section| rest.find(&format!("\n[{section}.")))
        .min()
        .map(|at| middle + at + 1)
}

/// `text` with everything before `cut` replaced by a comment of the same length (the line
/// break before `cut` is kept), so that what follows is parsed at its own offsets.
fn blanked_before(text: &str, cut: usize) -> String {
    let mut copy = String::with_capacity(text.len());
    copy.push('#');
    copy.extend(std::iter::repeat_n(' ', cut - 2));
    copy.push('\n');
    copy.push_str(&text[cut..]);
    copy
}

/// The first half's tree with the second half's node tables moved in, or `None` where the
/// whole file's parse might differ (see the module documentation).
fn join_halves<'i>(first: Parsed<'i>, second: Parsed<'i>, text: &str) -> Option<Parsed<'i>> {
    let ((first, first_errors), (second, second_errors)) = (first, second);
    if !first_errors.is_empty() || !second_errors.is_empty() {
        return None;
    }
    let span = first.span();
    let mut root = first.into_inner();
    let second = second.into_inner();
    if !second
        .keys()
        .all(|key| SECTIONS.contains(&key.get_ref().as_ref()))
    {
        return None;
    }
    for (key, value) in &second {
        let opened_by_header = text.as_bytes().get(value.span().start) == Some(&b'[');
        if value.get_ref().as_table().is_none() || opened_by_header {
            return None;
        }
        if let Some(existing) = root.get(key.get_ref().as_ref()) {
            let inline = text.as_bytes().get(existing.span().start) == Some(&b'{');
            let existing = existing.get_ref().as_table().filter(|_| !inline)?;
            let table = value.get_ref().as_table()?;
            if table
                .keys()
                .any(|name| existing.contains_key(name.get_ref().as_ref()))
            {
                return None;
            }
        }
    }
    for (key, value) in second {
        match root.get_mut(key.get_ref().as_ref()) {
            Some(existing) => {
                let DeValue::Table(into) = existing.get_mut() else {
                    return None;
                };
                let DeValue::Table(from) = value.into_inner() else {
                    return None;
                };
                for (name, node) in from {
                    into.insert(name, node);
                }
            }
            None => {
                root.insert(key, value);
            }
        }
    }
    Some((Spanned::new(span, root), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` in halves and whole. Where the split is kept, both must give the same
    /// tree, spans included. Returns whether it was kept.
    fn same_as_whole(text: &str) -> bool {
        let mut scratch = String::new();
        let Some(split) = split(text, &mut scratch) else {
            return false;
        };
        let whole = DeTable::parse_recoverable(text);
        assert!(whole.1.is_empty(), "the whole file has errors:\n{text}");
        assert_eq!(
            format!("{:?}", split.0),
            format!("{:?}", whole.0),
            "trees differ for:\n{text}"
        );
        true
    }

    #[test]
    fn small_files_are_parsed_whole_and_large_ones_split() {
        let text = nodes("services", 0..60);
        let mut scratch = String::new();
        document(&text, &mut scratch);
        assert!(scratch.is_empty());
        let (tree, errors) = document_split_from(&text, &mut scratch, 0);
        assert!(errors.is_empty());
        assert_eq!(
            tree.get_ref()["services"]
                .get_ref()
                .as_table()
                .unwrap()
                .len(),
            60
        );
        let mut scratch = String::new();
        assert!(split(&text, &mut scratch).is_some());
    }

    fn nodes(section: &str, names: std::ops::Range<usize>) -> String {
        names
            .map(|i| {
                format!("[{section}.n{i}]\ncommand = \"sleep {i}\"\ndepends_on = [\"n0\"]\n\n")
            })
            .collect()
    }

    #[test]
    fn plain_nodes_are_split_and_joined() {
        let text = format!(
            "[settings]\nstartup_timeout = \"5s\"\n\n{}{}",
            nodes("services", 0..40),
            nodes("components", 40..60)
        );
        assert!(same_as_whole(&text));
    }

    #[test]
    fn a_section_only_in_the_second_half_is_added() {
        let text = format!("{}{}", nodes("services", 0..5), nodes("components", 5..60));
        assert!(same_as_whole(&text));
    }

    #[test]
    fn the_whole_file_is_parsed_where_the_halves_could_disagree() {
        let cases = [
            // the same node in both halves
            format!("{}{}", nodes("services", 0..30), nodes("services", 0..30)),
            // a cut inside a multi-line string
            format!(
                "{}[services.s]\ncommand = '''\n{}'''\n",
                nodes("services", 0..2),
                nodes("services", 10..60)
            ),
            // an explicit [services] header in the second half
            format!(
                "{}[services]\nx = 1\n{}",
                nodes("services", 0..30),
                nodes("services", 30..40)
            ),
            // an explicit [services] header in both halves
            format!(
                "[services]\n{}\n[services]\n{}",
                nodes("services", 0..30),
                nodes("services", 30..40)
            ),
            // a table of its own in the second half
            format!("{}[settings]\nx = 1\n", nodes("services", 0..60)),
            // an inline table cannot be extended
            format!(
                "services = {{ a = {{ command = \"x\" }} }}\n\n{}",
                nodes("services", 0..60)
            ),
            // arrays of tables
            format!("{}[[services]]\nx = 1\n", nodes("services", 0..60)),
            format!("[[services]]\nx = 1\n{}", nodes("services", 0..60)),
            // a sub-table of a node of the first half
            format!("{}[services.n1.env]\nA = \"1\"\n", nodes("services", 0..60)),
            // a syntax error in either half
            format!("x = \n{}", nodes("services", 0..60)),
            format!("{}x = [\n", nodes("services", 0..60)),
        ];
        for text in &cases {
            assert!(!same_as_whole(text), "split was kept for:\n{text}");
        }
    }

    #[test]
    fn dotted_keys_and_sub_tables_join_like_the_whole() {
        let text = format!(
            "services.a.command = \"x\"\n\n{}[services.n50.env]\nA = \"1\"\n",
            nodes("services", 0..60)
        );
        assert!(same_as_whole(&text));
    }

    /// Files assembled from random pieces, most of them new nodes, some of them each construct
    /// above: a split that is kept always gives the whole file's tree. Prints the failing seed.
    #[test]
    fn random_files_parse_as_the_whole() {
        let nodes = [
            "[services.NAME]\ncommand = \"x\"\n",
            "[services.NAME]\ncommand = \"y\"\ndepends_on = [\n\"a\",\n]\n",
            "[components.NAME]\ncommand = 'z'\n",
            "[services.NAME]\ncommand = \"v\"\n[services.NAME.env]\nK = \"v\"\n",
            "[services.\"NAME.k\"]\ncommand = \"u\"\n",
            "[[services.NAME]]\nx = 1\n",
            "services.NAME.command = \"w\"\n",
        ];
        let others = [
            "[services]\n",
            "[components]\n",
            "[settings]\nlog_level = \"info\"\n",
            "services = { f = {} }\n",
            "x = \"\"\"\n[services.g]\n\"\"\"\n",
            "# [services.h]\n",
            "\n",
            "[services.a.env]\nK = \"v\"\n",
            "bad = \n",
        ];
        let mut kept = 0;
        for seed in 0..400u64 {
            let mut rng = crate::synth::Rng::new(seed + 1);
            let mut next = |n: usize| rng.below(n);
            let mut text = String::new();
            for i in 0..next(40) {
                if next(8) == 0 {
                    text.push_str(others[next(others.len())]);
                } else {
                    let name = format!("n{i}");
                    text.push_str(&nodes[next(nodes.len())].replace("NAME", &name));
                }
            }
            match std::panic::catch_unwind(|| same_as_whole(&text)) {
                Ok(true) => kept += 1,
                Ok(false) => {}
                Err(_) => panic!("seed {seed} failed"),
            }
        }
        assert!(
            kept > 100,
            "only {kept} of 400 files were split: the test proves little"
        );
    }
}
