//! The configuration loader (`trawl.toml`): any text is refused with an error that renders, or
//! loads into a configuration that passes the range checks, renders for `trawl config show`,
//! and, written back out as TOML, loads again as the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trawl_shared::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(config) => {
            let _ = config.to_redacted_toml();
            let written = toml::to_string(&config)
                .unwrap_or_else(|e| panic!("a loaded configuration does not serialise: {e}"));
            let again = Config::from_toml_str(&written)
                .unwrap_or_else(|e| panic!("written out, it does not load again: {e}\n{written}"));
            assert_eq!(
                again, config,
                "written out and loaded again, it changed:\n{written}"
            );
        }
    }
});
