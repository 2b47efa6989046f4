//! Lesson 11's scripted scenarios (`scenarios/11-*.toml`), run against this
//! package's own binary and compared with their snapshots.

#[test]
fn scenario() {
    scenarios::snapshot_test(env!("CARGO_BIN_EXE_lesson-11"), "11");
}
