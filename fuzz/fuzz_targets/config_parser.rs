//! Any text given to the config loader yields a config or FILE:LINE:COL errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let opts = deskgate::config::LoadOptions {
            skip_files: true,
            ..Default::default()
        };
        if let Err(errors) = deskgate::runtime::load_str("fuzz.yaml", text, opts) {
            for e in errors {
                assert!(e.line >= 1 && e.column >= 1, "{e}");
            }
        }
    }
});
