//! Lesson 05's exercises (`exercises/05.K.toml`): a change-the-code
//! exercise's scenario fails on this lesson as shipped and passes with its
//! reference patch applied to a copy of the workspace.

#[test]
fn exercises_fail_as_shipped_and_pass_solved() {
    scenarios::exercise::prove_lesson(env!("CARGO_BIN_EXE_lesson-05"), "05");
}
