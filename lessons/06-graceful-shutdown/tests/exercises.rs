//! Lesson 06's exercises (`exercises/06.K.toml`): a prediction's scenario
//! passes on this lesson as shipped; a change-the-code exercise's fails on
//! it and passes with its reference patch applied to a copy of the
//! workspace.

#[test]
fn exercises_hold_as_declared() {
    scenarios::exercise::prove_lesson(env!("CARGO_BIN_EXE_lesson-06"), "06");
}
