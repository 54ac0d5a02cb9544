//! Things shared by the tests of one binary (the control plane, the operator replicas) live in
//! statics, which Rust never drops. They are registered here instead and dropped, last registered
//! first, when the process exits: libtest ends with `exit()` whether tests passed or failed, and
//! `exit()` runs `atexit` handlers.

use std::sync::{Mutex, Once};

type Action = Box<dyn FnOnce() + Send>;

static ACTIONS: Mutex<Vec<Action>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Drops `value` when the process exits (after everything registered later).
pub fn at_exit<T: Send + 'static>(value: T) {
    REGISTER.call_once(|| {
        // SAFETY: `run` is a plain `extern "C" fn()` that never unwinds across the boundary.
        unsafe {
            libc::atexit(run);
        }
    });
    if let Ok(mut actions) = ACTIONS.lock() {
        actions.push(Box::new(move || drop(value)));
    }
}

extern "C" fn run() {
    let actions = match ACTIONS.lock() {
        Ok(mut a) => std::mem::take(&mut *a),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for action in actions.into_iter().rev() {
        // A panic must not unwind into libc.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(action));
    }
}
