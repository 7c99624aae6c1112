//! The spanned TOML tree of services.toml, whole or, for a large file, in pieces.
//!
//! A file of thousands of nodes is almost all `[services.NAME]` and `[components.NAME]`
//! tables, and its parse is the largest part of loading it. The parser lexes the whole text
//! into tokens and then events before it builds the tree: buffers of about 25 times the text
//! (100,000 nodes: 200 MB), every page of them a fault on first touch. A file of over a
//! megabyte is therefore cut before node table headers into pieces of about 64 KiB. The
//! first piece, which holds every other table, is parsed here; the loader parses the others
//! one at a time ([`node_tables`]) and reads each one's nodes before the next, so that the
//! buffers and the tree of a piece serve the next one (`Loader::in_pieces`, on two threads). A
//! piece's spans are shifted by its offset: they are places in the file.
//!
//! What is read in pieces must be exactly what the whole file gives; wherever that is not
//! certain, the whole file is parsed on one thread, which also finds every syntax error with
//! its place. That is the case when a piece has a syntax error (the cut was inside a
//! multi-line string or array, or the file is broken), when a piece after the first declares
//! anything but node tables (a table of its own, an explicit `[services]` header, an array of
//! tables), when the first piece's section is not a table written with headers or dotted keys
//! (an inline table cannot be extended), and, found by the loader, when a node is not a table
//! or two pieces declare the same node (what a later header may add to an earlier table is
//! TOML's to judge). Pieces are cut only before a header of a node's own table
//! (`[services.NAME]`), never before one of its sub-tables, so that a node and its
//! `[services.NAME.health]` usually stay together. The loader's tests load random files both
//! ways and compare the results.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::engine::config::NodeKind;

/// Which files are cut into pieces, and how small.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cutting {
    pub(super) from_bytes: usize,
    pub(super) piece_bytes: usize,
}

/// How services.toml is cut: files from a megabyte on (about 10,000 nodes; below it a thread
/// costs more than it saves), into pieces of 64 KiB, whose parser buffers (about 1.6 MB) are
/// reused from piece to piece instead of being touched anew.
pub(super) const LARGE_FILES: Cutting = Cutting {
    from_bytes: 1 << 20,
    piece_bytes: 64 << 10,
};

/// The tables a node header opens, in the order of [`NodeKind::ALL`]: the only ones a piece
/// after the first may hold.
const SECTIONS: [&str; 2] = [NodeKind::Service.section(), NodeKind::Component.section()];

/// What [`DeTable::parse_recoverable`] returns.
pub(super) type Parsed<'i> = (Spanned<DeTable<'i>>, Vec<toml::de::Error>);

/// A large file cut into pieces: the first one parsed, the others still to be.
pub(super) struct Pieces<'i> {
    /// The first piece: every table but the nodes', and the first nodes.
    pub(super) head: DeTable<'i>,
    /// Where the other pieces are in the file, in file order.
    pub(super) rest: Vec<Range<usize>>,
}

/// The whole file parsed, on one thread.
pub(super) fn whole(text: &str) -> Parsed<'_> {
    DeTable::parse_recoverable(text)
}

/// `text` cut into pieces and its first piece parsed, where it is large, has more than one
/// piece, and the first piece parses without error and leaves its sections open to more
/// nodes. `None` means: parse it whole.
pub(super) fn pieces(text: &str, cutting: Cutting) -> Option<Pieces<'_>> {
    if text.len() < cutting.from_bytes {
        return None;
    }
    let cuts = cut_points(text, cutting.piece_bytes);
    if cuts.len() < 3 {
        return None;
    }
    let head = parsed_piece(text, 0..cuts[1])?.into_inner();
    let open = SECTIONS.iter().all(|section| match head.get(*section) {
        Some(table) => extendable(table, text),
        None => true,
    });
    let rest = cuts[1..]
        .windows(2)
        .map(|piece| piece[0]..piece[1])
        .collect();
    open.then_some(Pieces { head, rest })
}

/// At most this many nodes are declared in `text`: it has as many lines that open a table.
pub(super) fn most_nodes(text: &str) -> usize {
    // memchr's vectorised search: the standard library's took 7 ms over 100,000 nodes.
    1 + memchr::memmem::find_iter(text.as_bytes(), b"\n[").count()
}

/// The node tables of the piece of `text` at `range`, by section (the sections it does not
/// have are empty), with spans into `text`; `None` where the piece has a syntax error or
/// anything but node tables opened by their own headers (see the module documentation).
pub(super) fn node_tables<'i>(text: &'i str, range: Range<usize>) -> Option<[DeTable<'i>; 2]> {
    let mut piece = parsed_piece(text, range)?.into_inner();
    let only_node_tables = piece.iter().all(|(key, value)| {
        let opened_by_header = text.as_bytes().get(value.span().start) == Some(&b'[');
        SECTIONS.contains(&key.get_ref().as_ref())
            && value.get_ref().as_table().is_some()
            && !opened_by_header
    });
    if !only_node_tables {
        return None;
    }
    Some(SECTIONS.map(
        |section| match piece.remove(section).map(Spanned::into_inner) {
            Some(DeValue::Table(table)) => table,
            _ => DeTable::new(),
        },
    ))
}

/// Whether a later piece's `[SECTION.NAME]` adds to `section` as it would in the whole file:
/// it must be a table, and not an inline one.
fn extendable(section: &Spanned<DeValue<'_>>, text: &str) -> bool {
    let inline = text.as_bytes().get(section.span().start) == Some(&b'{');
    section.get_ref().as_table().is_some() && !inline
}

/// The offsets where pieces start, then the end of `text`: the first is 0, each next one the
/// start of the first line at least `piece_len` further on that opens a node's own table.
fn cut_points(text: &str, piece_len: usize) -> Vec<usize> {
    let mut cuts = vec![0];
    let mut from = piece_len;
    while let Some(cut) = node_header_from(text, from) {
        cuts.push(cut);
        from = cut + piece_len;
    }
    cuts.push(text.len());
    cuts
}

/// The start of the first line at or after `from` that is a header `[SECTION.NAME]` with a
/// bare NAME.
fn node_header_from(text: &str, from: usize) -> Option<usize> {
    let mut at = from.checked_sub(1)?;
    loop {
        at += text.get(at..)?.find("\n[")? + 1;
        if opens_node_table(&text.as_bytes()[at..]) {
            return Some(at);
        }
    }
}

/// Whether `line` starts with `[SECTION.NAME]`, NAME a bare key.
fn opens_node_table(line: &[u8]) -> bool {
    SECTIONS.iter().any(|section| {
        let Some(rest) = line
            .strip_prefix(b"[")
            .and_then(|rest| rest.strip_prefix(section.as_bytes()))
            .and_then(|rest| rest.strip_prefix(b"."))
        else {
            return false;
        };
        let name_len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
            .count();
        name_len > 0 && rest.get(name_len) == Some(&b']')
    })
}

/// The tree of `text[range]` with spans into `text`, or `None` if it has a syntax error.
fn parsed_piece(text: &str, range: Range<usize>) -> Option<Spanned<DeTable<'_>>> {
    let by = range.start;
    let (tree, errors) = DeTable::parse_recoverable(&text[range]);
    if !errors.is_empty() {
        return None;
    }
    if by == 0 {
        return Some(tree);
    }
    let span = shifted_span(tree.span(), by);
    Some(Spanned::new(span, shifted_table(tree.into_inner(), by)))
}

fn shifted_span(span: Range<usize>, by: usize) -> Range<usize> {
    span.start + by..span.end + by
}

/// `table` with every span in it moved `by` bytes on. Keys cannot be changed in place: the
/// table is built again.
fn shifted_table(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut moved = DeTable::with_capacity(table.len());
    for (key, value) in table {
        let key: Spanned<DeString<'_>> =
            Spanned::new(shifted_span(key.span(), by), key.into_inner());
        moved.insert(key, shifted(value, by));
    }
    moved
}

fn shifted(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = shifted_span(value.span(), by);
    let value = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(shifted_table(table, by)),
        DeValue::Array(mut array) => {
            // In place: the array keeps whether it is an array of tables.
            for item in array.iter_mut() {
                let taken = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shifted(taken, by);
            }
            DeValue::Array(array)
        }
        scalar => scalar,
    };
    Spanned::new(span, value)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::engine::config) fn nodes(section: &str, names: Range<usize>) -> String {
        names
            .map(|i| {
                format!("[{section}.n{i}]\ncommand = \"sleep {i}\"\ndepends_on = [\"n0\"]\n\n")
            })
            .collect()
    }

    fn cut_small(piece_bytes: usize) -> Cutting {
        Cutting {
            from_bytes: 0,
            piece_bytes,
        }
    }

    #[test]
    fn small_files_are_parsed_whole_and_large_ones_in_pieces() {
        let text = nodes("services", 0..60);
        assert!(pieces(&text, LARGE_FILES).is_none());
        let cut = pieces(&text, cut_small(100)).unwrap();
        assert!(cut.rest.len() > 20);
        assert_eq!(cut.head.len(), 1);
    }

    #[test]
    fn pieces_are_cut_only_before_a_node_s_own_table() {
        let text = "[settings]\n[services.a]\n[services.a.env]\n[services.\"q\"]\n\
            [services.b ]\n [services.c]\n[components.d-1_x]\n[services.e]";
        let cuts: Vec<&str> = cut_points(text, 1)
            .windows(2)
            .map(|piece| &text[piece[0]..piece[1]])
            .collect();
        assert_eq!(
            cuts,
            [
                "[settings]\n",
                "[services.a]\n[services.a.env]\n[services.\"q\"]\n[services.b ]\n [services.c]\n",
                "[components.d-1_x]\n",
                "[services.e]"
            ]
        );
    }

    /// A piece's node tables carry the spans the whole file's parse gives them.
    #[test]
    fn a_piece_s_spans_are_places_in_the_file() {
        let text = format!(
            "{}{}[services.t]\nhealth = {{ tcp = 1, x = [1, {{ y = 2 }}] }}\n",
            nodes("services", 0..3),
            nodes("components", 3..5)
        );
        let cut = pieces(&text, cut_small(1)).unwrap();
        let (whole, errors) = whole(&text);
        assert!(errors.is_empty());
        let whole_section = |section: &str| whole.get_ref()[section].get_ref().as_table().unwrap();
        let mut compared = 0;
        for range in cut.rest {
            let tables = node_tables(&text, range).unwrap();
            for (section, table) in SECTIONS.iter().zip(tables) {
                for (name, node) in &table {
                    let (whole_name, whole_node) = whole_section(section)
                        .get_key_value(name.get_ref().as_ref())
                        .unwrap();
                    assert_eq!(format!("{name:?}"), format!("{whole_name:?}"));
                    assert_eq!(format!("{node:?}"), format!("{whole_node:?}"));
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 5);
    }

    #[test]
    fn a_piece_with_more_than_node_tables_is_refused() {
        let refused = [
            "[services]\nx = 1\n",
            "[settings]\nx = 1\n",
            "[services.a]\ncommand = '''\n",
            "[services.a]\nx = \n",
        ];
        for piece in refused {
            let text = format!("{}{piece}", nodes("services", 0..2));
            let start = text.len() - piece.len();
            assert!(node_tables(&text, start..text.len()).is_none(), "{piece}");
        }
    }

    #[test]
    fn a_first_piece_that_cannot_take_more_nodes_is_not_cut() {
        let closed = [
            "services = { a = { command = \"x\" } }\n",
            "services = 1\n",
            "[[services]]\nx = 1\n",
            "x = \n",
        ];
        for head in closed {
            let text = format!("{head}\n{}", nodes("services", 0..3));
            assert!(pieces(&text, cut_small(1)).is_none(), "{head}");
        }
    }
}
