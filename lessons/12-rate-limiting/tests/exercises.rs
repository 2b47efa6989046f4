//! Lesson 12's exercises (`exercises/12.K.toml`): each prediction's
//! scenario passes on this lesson as shipped.

#[test]
fn exercises_hold_as_declared() {
    scenarios::exercise::prove_lesson(env!("CARGO_BIN_EXE_lesson-12"), "12");
}
