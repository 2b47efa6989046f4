//! Lesson 04's exercises (`exercises/04.K.toml`): each prediction's
//! scenario passes on this lesson as shipped.

#[test]
fn exercises_hold_as_declared() {
    scenarios::exercise::prove_lesson(env!("CARGO_BIN_EXE_lesson-04"), "04");
}
