//! demo-svc: the demo and test service (see `dagstart::demo`), under its own name.

fn main() {
    dagstart::demo::main(std::env::args_os());
}
