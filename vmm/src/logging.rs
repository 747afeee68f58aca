//! The VMM's log filter: `-v` sets the level of every target, `RUST_LOG`
//! (env_logger's syntax, e.g. `cmdqv=info`, `warn,vfio=debug`) overrides
//! it wherever it speaks.
//!
//! `RUST_LOG`'s directives are laid over the `-v` level rather than
//! replacing it, so `RUST_LOG=cmdqv=info` adds the CMD-QV model's info
//! lines without silencing the other targets' warnings and errors; a bare
//! level in `RUST_LOG` (`RUST_LOG=debug`) replaces the `-v` level.

use log::LevelFilter;

/// The level of every target for `-v` given `verbose` times.
pub fn level_for(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// The logger for `-v` given `verbose` times and `rust_log` (the value of
/// `RUST_LOG`; unset or empty: `-v` alone).
pub fn builder(verbose: u8, rust_log: Option<&str>) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level_for(verbose));
    if let Some(spec) = rust_log.filter(|s| !s.trim().is_empty()) {
        builder.parse_filters(spec);
    }
    builder
}

/// Install the process's logger from `-v` and the environment's `RUST_LOG`.
pub fn init(verbose: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    builder(verbose, rust_log.as_deref()).init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, Log, Metadata};

    fn enabled(verbose: u8, rust_log: Option<&str>, target: &str, level: Level) -> bool {
        let logger = builder(verbose, rust_log).build();
        logger.enabled(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn without_rust_log_v_sets_every_target() {
        assert!(!enabled(0, None, "cmdqv", Level::Info));
        assert!(enabled(0, None, "cmdqv", Level::Warn));
        assert!(enabled(1, None, "cmdqv", Level::Info));
        assert!(!enabled(1, None, "vfio", Level::Debug));
        assert!(enabled(3, None, "vfio", Level::Trace));
        assert!(!enabled(0, Some(""), "cmdqv", Level::Info));
    }

    #[test]
    fn rust_log_target_directive_adds_to_the_v_level() {
        let spec = Some("cmdqv=info");
        assert!(enabled(0, spec, "cmdqv", Level::Info));
        assert!(!enabled(0, spec, "smmuv3", Level::Info));
        assert!(enabled(0, spec, "smmuv3", Level::Warn));
    }

    #[test]
    fn rust_log_wins_over_v_where_it_speaks() {
        assert!(!enabled(2, Some("cmdqv=warn"), "cmdqv", Level::Info));
        assert!(enabled(2, Some("cmdqv=warn"), "vfio", Level::Debug));
        assert!(!enabled(3, Some("error"), "vfio", Level::Warn));
        assert!(enabled(0, Some("warn,vfio=debug"), "vfio", Level::Debug));
    }
}
