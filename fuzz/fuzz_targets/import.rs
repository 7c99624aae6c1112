//! Any bytes as a docker compose file, a process-compose file and a Procfile: the importers,
//! the services.toml they write, the loader reading that, and the process-compose and systemd
//! exports of the result must not panic or hang. Seeds: `tests/fixtures/import/` (see `.ci/fuzz`).
#![no_main]

use std::path::Path;

use dagstart::convert::{Format, SystemdExport, import_text, to_process_compose, to_systemd};
use dagstart::engine::config::{Environment, load_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Files the input names (env_file, .env) are looked for where there are none.
    let dir = Path::new("/nonexistent/dagstart-fuzz");
    for format in [Format::Compose, Format::ProcessCompose, Format::Procfile] {
        let Ok(draft) = import_text(&text, format, dir, &|name| (name == "X").then(|| "x".into()))
        else {
            continue;
        };
        let written = draft.to_toml();
        if let Ok(config) = load_str(Path::new("services.toml"), written, &Environment::default()) {
            let _ = to_process_compose(&config);
            let export = SystemdExport {
                project: "fuzz",
                dagstart: Path::new("/usr/bin/dagstart"),
                services_toml: Path::new("/srv/services.toml"),
            };
            let _ = to_systemd(&config, &export);
        }
    }
});
