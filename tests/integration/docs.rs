//! The documentation keeps up with the code: every key the loader accepts is documented.

#[test]
fn every_key_is_in_the_configuration_reference() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut missing = Vec::new();
    for (table, keys) in dagstart::engine::config::KNOWN_KEYS {
        for key in *keys {
            if !docs.contains(&format!("`{key}`"))
                && !docs.contains(&format!("{key} ="))
                && !docs.contains(&format!("[{key}"))
            {
                missing.push(format!("{table}: {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented keys in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn every_command_is_in_the_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let cli = <dagstart::cli::args::Cli as clap::CommandFactory>::command();
    let missing: Vec<&str> = cli
        .get_subcommands()
        .map(clap::Command::get_name)
        .filter(|name| {
            !readme.contains(&format!("dagstart {name}")) && !readme.contains(&format!("|{name}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "commands missing from README.md: {missing:?}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definitions() {
    let project = crate::harness::Project::new("");
    let bash = project.dagstart(&["completions", "bash"]).output().unwrap();
    assert!(bash.status.success());
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(
        bash.contains("_dagstart()") && bash.contains("reload"),
        "{bash}"
    );
    let man = project.dagstart(&["man"]).output().unwrap();
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH dagstart") && man.contains("services.toml"),
        "{man}"
    );
    // Every page the main one refers to exists (it used to point at pages that did not).
    let dir = project.path().join("man1");
    let out = project
        .dagstart(&["man", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let referred: Vec<&str> = man
        .split("dagstart\\-")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(referred.contains(&"run"), "{referred:?}");
    for page in referred {
        assert!(
            dir.join(format!("dagstart-{page}.1")).is_file(),
            "dagstart-{page}.1 is referred to but not written"
        );
    }
}

#[test]
fn the_schema_knows_exactly_the_keys_the_loader_accepts() {
    let schema = dagstart::cli::schema::schema();
    let keys_of = |value: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = value["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let service = &schema["properties"]["services"]["additionalProperties"];
    let tables = [
        ("top level", &schema),
        ("[settings]", &schema["properties"]["settings"]),
        ("[services.NAME]", service),
        (
            "[components.NAME]",
            &schema["properties"]["components"]["additionalProperties"],
        ),
        ("health", &service["properties"]["health"]),
        ("liveness", &service["properties"]["liveness"]),
    ];
    for (table, node) in tables {
        let (_, known) = dagstart::engine::config::KNOWN_KEYS
            .iter()
            .find(|(t, _)| *t == table)
            .unwrap();
        let mut known: Vec<String> = known.iter().map(|k| (*k).to_owned()).collect();
        known.sort();
        assert_eq!(
            keys_of(node),
            known,
            "schema and loader disagree on {table}"
        );
    }
    let project = crate::harness::Project::new("");
    let out = project.dagstart(&["schema"]).output().unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, schema);
}
