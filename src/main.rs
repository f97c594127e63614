//! The `redproof` binary: everything happens in [`redproof::app`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(redproof::app::main())
}
