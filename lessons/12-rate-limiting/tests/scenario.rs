//! Lesson 12's scripted scenarios (`scenarios/12-*.toml`), run against this
//! package's own binary and compared with their snapshots.

#[test]
fn scenario() {
    scenarios::snapshot_test(env!("CARGO_BIN_EXE_lesson-12"), "12");
}
