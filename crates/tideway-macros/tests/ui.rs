//! Compile-fail tests pin the macro's error messages and spans (`tests/ui/*.stderr`); the pass
//! tests show that a service using every feature compiles lint-clean. Regenerate the `.stderr`
//! files with `TRYBUILD=overwrite cargo test -p tideway-macros --test ui`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}
