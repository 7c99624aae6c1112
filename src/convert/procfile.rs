//! Procfiles (foreman, honcho): `name: command` per line, run by a shell, with the variables
//! of the `.env` beside it and `PORT` set per process type as foreman does (5000, 5100, ...).

use std::path::Path;

use super::compose::dotenv;
use super::draft::{Command, Draft, DraftNode};

pub(super) fn import(text: &str, dir: &Path) -> Draft {
    let mut draft = Draft {
        format: "Procfile",
        ..Draft::default()
    };
    if let Ok(env) = std::fs::read_to_string(dir.join(".env")) {
        draft.env.extend(dotenv(&env));
        if !draft.env.is_empty() {
            draft.lose(
                ".env",
                "its variables are copied into [env] (edit them there)",
            );
        }
    }
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            draft.lose(
                format!("line {}", number + 1),
                format!("`{line}` is not `name: command`"),
            );
            continue;
        };
        let port = 5000 + 100 * draft.nodes.len();
        let mut node = DraftNode {
            name: name.trim().to_owned(),
            command: Command::Shell(command.trim().to_owned()),
            ..DraftNode::default()
        };
        node.env.insert("PORT".into(), port.to_string());
        draft.nodes.push(node);
    }
    draft.settle_names();
    draft
}
