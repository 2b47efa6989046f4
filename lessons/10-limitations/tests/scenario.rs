//! Lesson 10's scripted scenarios (`scenarios/10-*.toml`), run against this
//! package's own binary and compared with their snapshots.

#[test]
fn scenario() {
    scenarios::snapshot_test(env!("CARGO_BIN_EXE_lesson-10"), "10");
}
