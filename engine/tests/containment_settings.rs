//! The automatic-containment settings of a policy file.

use gatehouse_engine::policy::{Containment, Policy};

#[test]
fn containment_settings_parse_and_are_checked() {
    let p = Policy::parse("[settings]\ncontain_after_denials = 5\ncontain_window_seconds = 60\n")
        .unwrap();
    assert_eq!(
        p.settings().containment,
        Some(Containment {
            denials: 5,
            window_seconds: 60
        })
    );
    assert_eq!(Policy::parse("").unwrap().settings().containment, None);
    let e = Policy::parse("[settings]\ncontain_after_denials = 5\n").unwrap_err();
    assert!(e.message.contains("contain_window_seconds"), "{e}");
    assert_eq!(e.line, 2);
    let e = Policy::parse("[settings]\ncontain_after_denials = 0\ncontain_window_seconds = 60\n")
        .unwrap_err();
    assert!(e.message.contains("between 1"), "{e}");
    let e =
        Policy::parse("[settings]\ncontain_after_denials = 3\ncontain_window_seconds = 100000\n")
            .unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}
