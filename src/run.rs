//! `dagstart run`: placeholder until the executor lands.

use std::path::Path;

use crate::cli::RunArgs;
use crate::config::Environment;
use crate::error::Error;

pub fn run(path: &Path, env: &Environment, _args: RunArgs) -> Result<i32, Error> {
    let _config = crate::app::load_config(path, env)?;
    eprintln!("dagstart run is not implemented yet");
    Ok(crate::exit_code::FAILURE)
}
