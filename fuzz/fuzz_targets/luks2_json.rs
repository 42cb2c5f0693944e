//! Any bytes as a JSON area: parsing must not panic, and metadata it accepts
//! must survive `to_json` -> `from_json` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wrapcrypt_format::luks2::{parse_json_area, Metadata};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = parse_json_area(data) else {
        return;
    };
    let Ok(m) = Metadata::from_json(&json) else {
        return;
    };
    // Layout checks must not panic on any accepted metadata either.
    for hs in wrapcrypt_format::luks2::METADATA_SIZES {
        let _ = m.validate_layout(hs, true);
        let _ = m.validate_layout(hs, false);
    }
    let again = Metadata::from_json(&m.to_json()).expect("re-encoded metadata parses");
    assert_eq!(again, m, "re-encoded metadata decodes differently");
});
