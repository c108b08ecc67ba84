//! What the client sees, checked in the display model's pixels (read back with the
//! terminal's own font), and what the target is sent.

use std::time::{Duration, Instant};

use base64::Engine as _;
use zt_display::{Display, DisplayLimits};
use zt_guac::{Decoder, Instruction, Limits};

use crate::readback::read_text;
use crate::{Event, FRAME_INTERVAL, Terminal, TerminalSettings};

/// Where the virtual clock starts; every later time is this plus a duration.
#[expect(
    clippy::disallowed_methods,
    reason = "the virtual clock needs one arbitrary instant to count from; nothing reads the clock after"
)]
fn epoch() -> Instant {
    Instant::now()
}

/// A terminal and a client's display fed with everything the terminal sends.
struct Client {
    term: Terminal,
    display: Display,
    decoder: Decoder,
    now: Instant,
    received: Vec<u8>,
}

impl Client {
    fn new(settings: TerminalSettings, width: u32, height: u32) -> Self {
        let now = epoch();
        let mut client = Self {
            term: Terminal::new(settings, width, height, 96, now),
            display: Display::new(DisplayLimits::default()),
            decoder: Decoder::new(Limits::default()),
            now,
            received: Vec::new(),
        };
        client.frame();
        client
    }

    /// Lets a frame interval pass and takes what the terminal sends; returns its bytes.
    fn frame(&mut self) -> Vec<u8> {
        self.now += FRAME_INTERVAL;
        let Some(out) = self.term.poll_client(self.now) else {
            return Vec::new();
        };
        self.received.extend_from_slice(&out);
        self.decoder.feed(&out);
        while let Some(instruction) = self.decoder.poll_instruction().unwrap() {
            self.display.handle(&instruction).unwrap();
        }
        assert!(
            !self.display.is_degraded(),
            "{:?}",
            self.display.degradation()
        );
        out.to_vec()
    }

    fn output(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.term.handle_target(bytes);
        self.frame()
    }

    fn send(&mut self, opcode: &str, args: &[&str]) {
        self.term.handle_client(&Instruction::new(opcode, args));
    }

    /// The screen's rows as the client's pixels show them.
    fn screen(&self) -> Vec<String> {
        let screen = self.display.screen();
        let g = self.term.geometry();
        let cell = self.term.cell_size();
        assert_eq!((screen.width(), screen.height()), (g.width, g.height));
        let mut rows = read_text(
            screen.pixels(),
            screen.width(),
            screen.height(),
            12.0,
            96,
            "",
        );
        rows.truncate(usize::from(g.rows));
        assert!(u32::from(g.cols) * cell.width <= screen.width());
        rows
    }

    /// The emulator's rows, for comparison with [`Client::screen`].
    fn emulator(&self) -> Vec<String> {
        let rows = usize::from(self.term.geometry().rows);
        let mut lines: Vec<String> = self
            .term
            .text()
            .split('\n')
            .map(|l| l.trim_end().to_owned())
            .collect();
        lines.resize(rows, String::new());
        lines
    }

    fn clipboard_in(&mut self, text: &str) {
        let data = base64::engine::general_purpose::STANDARD.encode(text);
        self.send("clipboard", &["3", "text/plain"]);
        self.send("blob", &["3", &data]);
        self.send("end", &["3"]);
    }
}

fn opcodes(bytes: &[u8]) -> Vec<String> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(bytes);
    let mut out = Vec::new();
    while let Some(i) = decoder.poll_instruction().unwrap() {
        out.push(i.opcode().to_owned());
    }
    out
}

#[test]
fn output_appears_on_the_clients_screen() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.output(b"$ echo zt-$((6*7))\r\nzt-42\r\n$ ");
    let screen = c.screen();
    assert_eq!(screen[0], "$ echo zt-$((6*7))");
    assert_eq!(screen[1], "zt-42");
    assert_eq!(screen, c.emulator());
}

#[test]
fn an_echoed_character_costs_a_copy_a_cursor_move_and_a_sync() {
    let mut c = Client::new(TerminalSettings::default(), 1024, 768);
    c.output(b"$ abcdefghijklmnopqrstuvwxyz ");
    let echo = c.output(b"q");
    assert_eq!(
        opcodes(&echo),
        ["copy", "move", "sync"],
        "{}",
        String::from_utf8_lossy(&echo)
    );
    assert!(
        echo.len() <= 100,
        "{} bytes: {}",
        echo.len(),
        String::from_utf8_lossy(&echo)
    );
    assert_eq!(c.screen()[0], "$ abcdefghijklmnopqrstuvwxyz q");
}

#[test]
fn a_new_glyph_is_a_small_four_bit_indexed_png() {
    let mut c = Client::new(TerminalSettings::default(), 1024, 768);
    c.output(b"$ ");
    let echo = c.output(b"Q");
    let text = String::from_utf8_lossy(&echo).into_owned();
    let blob = text
        .split(';')
        .find_map(|i| i.split_once("4.blob,").map(|(_, rest)| rest.to_owned()))
        .expect("the glyph is uploaded");
    let data = blob.split_once(',').unwrap().1;
    let data = data.split_once('.').unwrap().1;
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    // IHDR: bit depth and colour type (3: indexed).
    assert_eq!((png[24], png[25]), (4, 3), "{text}");
    assert!(echo.len() < 450, "{} bytes: {text}", echo.len());
    assert_eq!(c.screen()[0], "$ Q");
}

#[test]
fn fresh_text_is_drawn_as_strips_and_its_words_are_reused() {
    const BANNER: &str = "The programs included with the Debian GNU/Linux system are free \
        software;\r\nthe exact distribution terms for each program are described in the\r\n\
        individual files in /usr/share/doc/*/copyright.\r\n";
    let mut c = Client::new(TerminalSettings::default(), 1024, 768);
    let banner = c.output(BANNER.as_bytes());
    let ops = opcodes(&banner);
    // One strip a line (a few `copy`s), not a `copy` a glyph.
    assert!(ops.iter().filter(|o| *o == "copy").count() < 10, "{ops:?}");
    assert!(ops.iter().filter(|o| *o == "img").count() <= 4, "{ops:?}");
    // Glyph by glyph, 170 glyphs at a 52-byte `copy` each and 40 uploads come to over 11 KB.
    assert!(banner.len() < 7_000, "{} bytes", banner.len());
    assert_eq!(c.screen(), c.emulator());
    // A word from a strip, printed again, is one `copy` from where the strip put it.
    let again = c.output(b"distribution\r\n");
    assert_eq!(
        opcodes(&again),
        ["copy", "move", "sync"],
        "{}",
        String::from_utf8_lossy(&again)
    );
    assert_eq!(c.screen(), c.emulator());
}

#[test]
fn scrolling_is_one_copy_and_the_screen_stays_right() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    let rows = c.term.geometry().rows;
    for i in 0..rows {
        c.output(
            format!(
                "line {i} {} abcdefghijklmnopqrstuvwxyz\r\n",
                u32::from(i) * 7919
            )
            .as_bytes(),
        );
    }
    let frame = c.output(b"line 999 7911081 abcdefghijklmnopqrstuvwxyz\r\n");
    let ops = opcodes(&frame);
    assert!(ops.iter().filter(|o| *o == "copy").count() < 12, "{ops:?}");
    assert!(!ops.iter().any(|o| o == "img"), "{ops:?}");
    // guacd 1.6 sent 357 KB for 200 such lines (1785 bytes a line); the target is half.
    assert!(
        frame.len() < 890,
        "{} bytes: {}",
        frame.len(),
        String::from_utf8_lossy(&frame)
    );
    assert_eq!(c.screen(), c.emulator());
    assert!(c.term.stats().scrolls > 0);
}

#[test]
fn frames_are_paced_and_a_flood_coalesces_in_bounded_memory() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.term.handle_target(b"a");
    assert!(
        c.term.poll_client(c.now).is_none(),
        "a frame within 40 ms of the last"
    );
    assert_eq!(c.term.poll_timeout(), Some(c.now + FRAME_INTERVAL));
    c.frame();
    let mut chunk = Vec::new();
    let mut frames = 0;
    let mut bytes = 0;
    for i in 1..=200_000u32 {
        chunk.extend_from_slice(format!("{i}\r\n").as_bytes());
        if chunk.len() > 64 * 1024 {
            c.term.handle_target(&chunk);
            chunk.clear();
            let out = c.frame();
            frames += 1;
            bytes += out.len();
        }
    }
    c.term.handle_target(&chunk);
    c.frame();
    assert!(frames < 40, "{frames}");
    assert!(bytes < 1_000_000, "{bytes}");
    let screen = c.screen();
    let rows = screen.len();
    assert_eq!(screen[rows - 2], "200000");
    assert_eq!(screen, c.emulator());
}

#[test]
fn leaving_the_alternate_screen_restores_what_was_there() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.output(b"before\r\n$ ");
    let before = c.screen();
    c.output(b"\x1b[?1049h\x1b[H\x1b[2J\x1b[1;31mFULL SCREEN\x1b[m\x1b[10;5Hmiddle");
    assert_eq!(c.screen()[0], "FULL SCREEN");
    assert_eq!(c.screen()[9], "    middle");
    c.output(b"\x1b[?1049l");
    assert_eq!(c.screen(), before);
}

#[test]
fn colours_reach_the_pixels() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    // The cursor ends in the sixth cell.
    c.output(b"\x1b[41m   \x1b[48;2;1;2;3m \x1b[m ");
    let screen = c.display.screen();
    let cell = c.term.cell_size();
    assert_eq!(
        screen.pixel(cell.width / 2, 2),
        Some([0x99, 0x3E, 0x3E, 255])
    );
    assert_eq!(screen.pixel(3 * cell.width + 1, 2), Some([1, 2, 3, 255]));
    assert_eq!(screen.pixel(4 * cell.width + 1, 2), Some([0, 0, 0, 255]));
    assert_eq!(
        screen.pixel(5 * cell.width + 1, 2),
        Some([96, 96, 96, 255]),
        "the translucent cursor"
    );
}

#[test]
fn a_full_atlas_starts_again_without_breaking_the_screen() {
    let mut c = Client::new(TerminalSettings::default(), 1024, 768);
    let mut out = Vec::new();
    for colour in 0..=255u32 {
        out.extend_from_slice(format!("\x1b[38;5;{colour}m").as_bytes());
        for ch in b'!'..=b'~' {
            out.push(ch);
        }
        out.extend_from_slice(b"\r\n");
    }
    c.output(&out);
    c.output(b"\x1b[m\x1b[2J\x1b[Hlast");
    assert!(c.term.stats().glyphs > 64 * 32, "{:?}", c.term.stats());
    assert_eq!(c.screen()[0], "last");
    assert_eq!(c.screen(), c.emulator());
}

#[test]
fn keys_become_bytes_and_read_only_drops_them() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    for keysym in ["101", "99", "104", "111", "65293"] {
        c.send("key", &[keysym, "1"]);
        c.send("key", &[keysym, "0"]);
    }
    assert_eq!(c.term.poll_target().unwrap(), b"echo\r");
    let mut c = Client::new(
        TerminalSettings {
            read_only: true,
            ..TerminalSettings::default()
        },
        640,
        480,
    );
    c.send("key", &["101", "1"]);
    c.send("mouse", &["0", "0", "2"]);
    assert_eq!(c.term.poll_target(), None);
}

#[test]
fn the_target_is_answered_where_it_is() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.output(b"\x1b[5;7H\x1b[6n\x1b[c");
    assert_eq!(c.term.poll_target().unwrap(), b"\x1b[5;7R\x1b[?1;2c");
}

#[test]
fn a_selection_is_copied_unless_copy_is_disabled() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.output(b"hello world\r\n");
    let cell = c.term.cell_size();
    let y = (cell.height / 2).to_string();
    let x_end = (cell.width * 4 + 2).to_string();
    c.send("mouse", &["1", &y, "1"]);
    c.send("mouse", &[&x_end, &y, "1"]);
    c.send("mouse", &[&x_end, &y, "0"]);
    let out = c.frame();
    let text = String::from_utf8_lossy(&out);
    let hello = base64::engine::general_purpose::STANDARD.encode("hello");
    assert!(
        text.contains("9.clipboard") && text.contains(&hello),
        "{text}"
    );
    assert_eq!(c.term.poll_event(), Some(Event::Copied { bytes: 5 }));

    let mut c = Client::new(
        TerminalSettings {
            disable_copy: true,
            ..TerminalSettings::default()
        },
        640,
        480,
    );
    c.output(b"hello world\r\n");
    c.send("mouse", &["1", &y, "1"]);
    c.send("mouse", &[&x_end, &y, "0"]);
    let out = c.frame();
    assert!(!String::from_utf8_lossy(&out).contains("clipboard"));
    assert_eq!(c.term.poll_event(), Some(Event::CopyRefused));
}

#[test]
fn a_paste_is_bracketed_when_asked_and_refused_when_disabled() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.output(b"\x1b[?2004h");
    c.clipboard_in("ls\n\x1b[201~rm -rf /\n");
    c.send("mouse", &["5", "5", "2"]);
    c.send("mouse", &["5", "5", "0"]);
    assert_eq!(
        c.term.poll_target().unwrap(),
        b"\x1b[200~ls\rrm -rf /\r\x1b[201~"
    );

    let mut c = Client::new(
        TerminalSettings {
            disable_paste: true,
            ..TerminalSettings::default()
        },
        640,
        480,
    );
    c.clipboard_in("secret");
    c.send("key", &["65507", "1"]);
    c.send("key", &["65505", "1"]);
    c.send("key", &["86", "1"]);
    assert_eq!(c.term.poll_target(), None);
    assert_eq!(c.term.poll_event(), Some(Event::PasteRefused));
}

#[test]
fn size_resizes_within_limits_and_says_so() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    c.output(b"text");
    c.send("size", &["1280", "720"]);
    let Some(Event::Resize { cols, rows, .. }) = c.term.poll_event() else {
        panic!("no resize");
    };
    assert_eq!(
        (cols, rows),
        (
            1280 / c.term.cell_size().width as u16,
            720 / c.term.cell_size().height as u16
        )
    );
    c.frame();
    assert_eq!(c.screen()[0], "text");
    c.send("size", &["4000000000", "4000000000"]);
    c.send("size", &["0", "0"]);
    c.output(b"x");
    let g = c.term.geometry();
    assert!(g.cols >= 1 && g.rows >= 1);
    assert_eq!(c.screen(), c.emulator());
}

#[test]
fn the_wheel_scrolls_history() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    let rows = usize::from(c.term.geometry().rows);
    for i in 0..rows + 10 {
        c.term.handle_target(format!("row {i}\r\n").as_bytes());
    }
    c.frame();
    let bottom = c.screen();
    c.send("mouse", &["5", "5", "8"]);
    c.send("mouse", &["5", "5", "0"]);
    c.frame();
    let up = c.screen();
    assert_eq!(up[3], bottom[0]);
    c.send("key", &["97", "1"]);
    c.frame();
    assert_eq!(c.screen(), bottom);
}

#[test]
fn hostile_output_costs_bounded_memory_and_leaves_a_working_terminal() {
    let mut c = Client::new(TerminalSettings::default(), 640, 480);
    let mut flood = Vec::new();
    flood.extend_from_slice(b"e");
    flood.extend(std::iter::repeat_n("\u{301}", 100_000).flat_map(|s| s.as_bytes().to_vec()));
    c.output(&flood);
    c.output(b"\x1b]0;");
    for _ in 0..100 {
        c.term.handle_target(&[b'A'; 100_000]);
    }
    c.output(b"\x07\x1b[99999999;99999999H\x1b[9999999999999999999999999@\x1b[8;9999;9999t");
    c.output(&b"\x1b[".repeat(100_000));
    c.output(b"\x1b[m\x1b[2J\x1b[Hstill here");
    assert_eq!(c.screen()[0], "still here");
    for _ in 0..200 {
        c.term.handle_target(b"\x1b[6n");
    }
    assert!(c.term.poll_target().unwrap().len() <= 4096);
}

#[test]
fn the_fuzz_body_runs_on_its_seed_shapes() {
    let mut data = Vec::new();
    for i in 0..=255u8 {
        data.extend_from_slice(&[i, 40]);
        data.extend_from_slice(&[i.wrapping_mul(31); 160]);
    }
    crate::fuzzing::terminal(&data, epoch());
    crate::fuzzing::terminal(
        b"\x05\xff\xff\xff\xff\x00\x20hello\x07\x30",
        epoch() + Duration::from_secs(1),
    );
}
