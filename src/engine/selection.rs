//! Which nodes a run takes part in: the nodes named on the command line and what they depend
//! on, or else every node whose profiles are active.
//!
//! A node with `profiles = [...]` runs only when one of them is active (`run --profile`,
//! `DAGSTART_PROFILES`); a node without runs always. Naming a node pulls in what it depends
//! on, profiled or not (systemd's `Requires` and `Wants`); selecting by profile does not, so a
//! selected node whose required dependency sits only in inactive profiles is refused, naming
//! both and the profile to add. An optional dependency that is not selected is simply not
//! waited for.

use crate::engine::config::{Config, did_you_mean};
use crate::engine::graph::{Graph, UnknownNode};

/// Why no selection could be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SelectionError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    UnknownNode(#[from] UnknownNode),

    #[error("no node has the profile `{name}`")]
    #[diagnostic(code(dagstart::unknown_profile))]
    UnknownProfile {
        name: String,
        #[help]
        help: Option<String>,
    },

    #[error("{}", needs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    #[diagnostic(
        code(dagstart::inactive_dependency),
        help(
            "activate the profile (`--profile NAME` or DAGSTART_PROFILES), name the node on the command line, or mark the dependency `required = false`"
        )
    )]
    InactiveDependencies { needs: Vec<InactiveDependency> },
}

/// A selected node that requires a node of inactive profiles only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InactiveDependency {
    pub node: String,
    pub dependency: String,
    pub profiles: Vec<String>,
}

impl std::fmt::Display for InactiveDependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags: Vec<String> = self
            .profiles
            .iter()
            .map(|p| format!("--profile {p}"))
            .collect();
        write!(
            f,
            "`{}` requires `{}`, which runs only with the profile {}: add {}",
            self.node,
            self.dependency,
            self.profiles
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            flags.join(" or ")
        )
    }
}

/// The nodes of the run: `names` and what they depend on when any are named, otherwise every
/// node whose profiles allow it.
pub fn select(
    config: &Config,
    graph: &Graph,
    names: &[String],
    profiles: &[String],
) -> Result<Vec<bool>, SelectionError> {
    check_profiles_exist(config, profiles)?;
    if !names.is_empty() {
        return Ok(graph.select(config, names)?);
    }
    let selected: Vec<bool> = config
        .nodes
        .iter()
        .map(|n| is_active(&n.profiles, profiles))
        .collect();
    let needs: Vec<InactiveDependency> = config
        .nodes
        .iter()
        .enumerate()
        .filter(|&(i, _)| selected[i])
        .flat_map(|(_, node)| {
            node.depends_on
                .iter()
                .filter(|d| d.required && !selected[d.node])
                .map(|d| InactiveDependency {
                    node: node.name.clone(),
                    dependency: d.name.clone(),
                    profiles: config.nodes[d.node].profiles.clone(),
                })
        })
        .collect();
    if needs.is_empty() {
        Ok(selected)
    } else {
        Err(SelectionError::InactiveDependencies { needs })
    }
}

/// Whether a node with `node_profiles` runs when `active` are active.
pub fn is_active(node_profiles: &[String], active: &[String]) -> bool {
    node_profiles.is_empty() || node_profiles.iter().any(|p| active.contains(p))
}

/// The profiles named in `DAGSTART_PROFILES` ("debug,tools"), or none.
pub fn profiles_from_env(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A profile that no node declares is a typo, not an empty selection.
fn check_profiles_exist(config: &Config, profiles: &[String]) -> Result<(), SelectionError> {
    let declared = || config.nodes.iter().flat_map(|n| n.profiles.iter());
    for name in profiles {
        if !declared().any(|p| p == name) {
            let help = did_you_mean(name, declared().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    let mut all: Vec<&str> = declared().map(String::as_str).collect();
                    all.sort_unstable();
                    all.dedup();
                    (!all.is_empty()).then(|| format!("profiles in this file: {}", all.join(", ")))
                });
            return Err(SelectionError::UnknownProfile {
                name: name.clone(),
                help,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::{Environment, load_str};

    fn config(text: &str) -> Config {
        load_str(
            std::path::Path::new("/p/services.toml"),
            text.to_owned(),
            &Environment::from_pairs::<&str, &str>([]),
        )
        .unwrap()
    }

    fn names(config: &Config, selected: &[bool]) -> Vec<String> {
        config
            .nodes
            .iter()
            .zip(selected)
            .filter(|(_, on)| **on)
            .map(|(n, _)| n.name.clone())
            .collect()
    }

    const FILE: &str = r#"
[services.db]
command = "db"

[services.debugger]
command = "dbg"
profiles = ["debug"]

[services.app]
command = "app"
depends_on = { db = "healthy", debugger = { required = false } }

[services.probe]
command = "probe"
profiles = ["debug", "tools"]
depends_on = ["debugger"]
"#;

    #[test]
    fn profiles_select_nodes_and_optional_dependencies_may_be_left_out() {
        let c = config(FILE);
        let g = Graph::build(&c);
        let none = select(&c, &g, &[], &[]).unwrap();
        assert_eq!(names(&c, &none), ["db", "app"]);
        let debug = select(&c, &g, &[], &["debug".into()]).unwrap();
        assert_eq!(names(&c, &debug), ["db", "debugger", "app", "probe"]);
    }

    #[test]
    fn a_required_dependency_of_an_inactive_profile_is_refused_naming_both_and_the_profile() {
        let c = config(FILE);
        let g = Graph::build(&c);
        let err = select(&c, &g, &[], &["tools".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`probe` requires `debugger`, which runs only with the profile `debug`: add --profile debug"
        );
    }

    #[test]
    fn naming_a_node_pulls_in_what_it_depends_on_profiled_or_not() {
        let c = config(FILE);
        let g = Graph::build(&c);
        let probe = select(&c, &g, &["probe".into()], &[]).unwrap();
        assert_eq!(names(&c, &probe), ["debugger", "probe"]);
        let app = select(&c, &g, &["app".into()], &[]).unwrap();
        assert_eq!(names(&c, &app), ["db", "debugger", "app"]);
    }

    #[test]
    fn an_unknown_profile_is_an_error_with_a_suggestion() {
        let c = config(FILE);
        let g = Graph::build(&c);
        let err = select(&c, &g, &[], &["debgu".into()]).unwrap_err();
        assert_eq!(err.to_string(), "no node has the profile `debgu`");
        let SelectionError::UnknownProfile { help, .. } = err else {
            panic!()
        };
        assert_eq!(help.as_deref(), Some("did you mean `debug`?"));
    }

    #[test]
    fn the_environment_list_is_split_on_commas() {
        assert_eq!(
            profiles_from_env(Some(" debug, tools,,")),
            ["debug", "tools"]
        );
        assert!(profiles_from_env(None).is_empty());
    }
}
