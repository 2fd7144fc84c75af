//! The full screen `herd top` draws on: raw mode and the alternate screen while it lives, and
//! the user's terminal back as it was however `herd top` ends: a return, an error or a panic.

use std::io::{Stdout, stdout};
use std::ops::{Deref, DerefMut};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is in raw mode on the alternate screen, so restoring it is due.
static TAKEN_OVER: AtomicBool = AtomicBool::new(false);

/// The terminal, taken over until this is dropped.
pub struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Switches to raw mode and the alternate screen.
    pub fn take_over() -> anyhow::Result<Screen> {
        install_panic_hook();
        enable_raw_mode().context("switching the terminal to raw mode")?;
        TAKEN_OVER.store(true, Ordering::SeqCst);
        // From here on a failure must give the terminal back: `restore` does, and is harmless
        // when nothing was changed.
        let setup = execute!(stdout(), EnterAlternateScreen, Hide)
            .context("switching to the alternate screen")
            .and_then(|()| Terminal::new(CrosstermBackend::new(stdout())).context("setting up the screen"));
        match setup {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

impl Deref for Screen {
    type Target = Terminal<CrosstermBackend<Stdout>>;

    fn deref(&self) -> &Self::Target {
        &self.terminal
    }
}

impl DerefMut for Screen {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.terminal
    }
}

/// Gives the terminal back (once; later calls do nothing).
fn restore() {
    if TAKEN_OVER.swap(false, Ordering::SeqCst) {
        // Nothing useful to do if these fail: the terminal is as good as it gets.
        let _ = disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen, Show);
    }
}

/// Restores the terminal before a panic's message is printed, so the message lands on the
/// normal screen and the shell afterwards is usable. Chains to the hook that was there.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
