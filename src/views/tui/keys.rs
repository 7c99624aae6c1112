//! Keys from the terminal, read from stdin by the UI itself.
//!
//! Not crossterm's event reader: once the terminal hangs up (its window closed, tmux killed)
//! that reader spins on end-of-file forever and the UI never ends. Here end-of-file and a
//! hang-up end the UI, and the few sequences the UI knows are parsed by hand.

use std::os::fd::AsFd as _;

use crate::views::tui::model::Key;

/// What came from the terminal within one wait.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Input {
    Keys(Vec<Key>),
    /// Ctrl-C.
    Interrupt,
    /// The terminal is gone.
    HungUp,
}

/// Waits up to `timeout_ms` for input on stdin.
pub(super) fn read(timeout_ms: u16) -> Input {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(0) => return Input::Keys(Vec::new()),
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Input::Keys(Vec::new()),
        Err(_) => return Input::HungUp,
    }
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    if !revents.contains(PollFlags::POLLIN)
        && revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
    {
        return Input::HungUp;
    }
    let mut buf = [0u8; 256];
    match nix::unistd::read(fd, &mut buf) {
        Ok(0) | Err(_) => Input::HungUp,
        Ok(n) => parse(&buf[..n]),
    }
}

/// The keys in what one read returned.
pub(super) fn parse(bytes: &[u8]) -> Input {
    let mut keys = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let key = match c {
            '\u{3}' => return Input::Interrupt,
            '\r' | '\n' => Key::Enter,
            '\u{7f}' | '\u{8}' => Key::Backspace,
            '\u{1b}' => match chars.peek() {
                Some('[' | 'O') => {
                    chars.next();
                    let mut sequence = String::new();
                    while let Some(&next) = chars.peek() {
                        chars.next();
                        sequence.push(next);
                        if next.is_ascii_alphabetic() || next == '~' {
                            break;
                        }
                    }
                    match sequence.as_str() {
                        "A" => Key::Up,
                        "B" => Key::Down,
                        "5~" => Key::PageUp,
                        "6~" => Key::PageDown,
                        _ => continue,
                    }
                }
                _ => Key::Escape,
            },
            c if !c.is_control() => Key::Char(c),
            _ => continue,
        };
        keys.push(key);
    }
    Input::Keys(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequences_the_ui_knows() {
        assert_eq!(
            parse(b"\x1b[A\x1b[Bx/ab\r\x1b\x7f\x1b[5~\x1b[6~\x1bOA"),
            Input::Keys(vec![
                Key::Up,
                Key::Down,
                Key::Char('x'),
                Key::Char('/'),
                Key::Char('a'),
                Key::Char('b'),
                Key::Enter,
                Key::Escape,
                Key::Backspace,
                Key::PageUp,
                Key::PageDown,
                Key::Up,
            ])
        );
        assert_eq!(parse(b"q\x03"), Input::Interrupt);
        assert_eq!(
            parse(b"\x1b[1;5C"),
            Input::Keys(Vec::new()),
            "unknown sequences are skipped"
        );
    }
}
